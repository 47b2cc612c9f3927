"""The roll-up engine: the one compute behind every face of the roll-up.

The faces are :mod:`hierclf.functional` (``rollup``, ``log_rollup``, ``conditional`` on numpy arrays and
tensors), the modules of :mod:`hierclf.nn.rollup_modules` and :meth:`hierclf.nn.head.LeafHead.rollup`.

* :mod:`~hierclf.rollup_engine.request_plans`: which columns each output sums (leaves, a cut, a cut with
  residual classes), cached per taxonomy; the one input check of every face; numpy only.
* :mod:`~hierclf.rollup_engine.cpu_kernels`: the fused numba kernels, numpy in and out.
* :mod:`~hierclf.rollup_engine.numpy_ops`: the roll-up on numpy arrays (kernels, or numpy without numba),
  bit-identical to the torch path; never imports torch.
* :mod:`~hierclf.rollup_engine.torch_ops`: the roll-up on tensors: the differentiable compute written once
  (TorchScript-compatible), the dispatchers, the row-blocked torch path.

Only ``torch_ops`` imports torch, and no module here imports :mod:`hierclf.nn`.
"""

"""The fused CPU kernel (numba) against the torch range-sum path and the brute force: bit-identical."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hierclf import _rollup_kernel
from hierclf.functional import _plan, _tensors, rollup
from hierclf.synthetic import random_taxonomy

pytestmark = pytest.mark.skipif(not _rollup_kernel.AVAILABLE, reason="numba is not installed")


def _torch_path(x: torch.Tensor, monkeypatch: pytest.MonkeyPatch, **kw: object) -> torch.Tensor:
    monkeypatch.setenv("HIERCLF_NO_NUMBA", "1")
    try:
        return rollup(x, **kw)  # type: ignore[arg-type]
    finally:
        monkeypatch.delenv("HIERCLF_NO_NUMBA")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kernel_is_bit_identical_to_torch_path(dtype: torch.dtype, seed: int,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    tax = random_taxonomy(300, max_depth=6, seed=seed)
    x = torch.rand(517, len(tax.leaves), dtype=dtype, generator=torch.Generator().manual_seed(seed))
    x /= x.sum(1, keepdim=True)
    x[:, 0] = 1e-30  # tiny values keep their relative precision in both paths
    assert _rollup_kernel.usable(x)
    fused = rollup(x, tax)
    reference = _torch_path(x, monkeypatch, taxonomy=tax)
    assert fused.dtype == dtype
    assert torch.equal(fused, reference)


def test_kernel_with_cut_columns_in_any_order(monkeypatch: pytest.MonkeyPatch) -> None:
    tax = random_taxonomy(120, max_depth=5, seed=3)
    cut = list(tax.children(tax.root))
    for child in tax.children(cut[0]):  # refine one branch so the cut is not a single level
        cut.append(child)
    cut.remove(cut[0])
    shuffled = list(reversed(cut))
    x = torch.rand(64, len(shuffled), dtype=torch.float64)
    fused = rollup(x, tax, columns=shuffled)
    reference = _torch_path(x, monkeypatch, taxonomy=tax, columns=shuffled)
    assert torch.equal(fused, reference)
    # brute force: each node is the sum of the cut columns under it
    plan = _plan(tax, None, shuffled)
    for k, node in enumerate(plan.nodes):
        under = {node, *tax.descendants(node)}
        cols = [i for i, c in enumerate(shuffled) if c in under]
        np.testing.assert_allclose(fused[:, k].numpy(), x[:, cols].sum(1).numpy(), rtol=1e-12, atol=1e-15)


def test_empty_batch_and_disable_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    tax = random_taxonomy(10, seed=0)
    assert rollup(torch.zeros(0, 10), tax).shape == (0, len(tax.nodes))
    monkeypatch.setenv("HIERCLF_NO_NUMBA", "1")
    assert not _rollup_kernel.usable(torch.zeros(2, 10))


def test_kernel_not_used_for_half_precision_or_autograd() -> None:
    assert not _rollup_kernel.usable(torch.zeros(2, 3, dtype=torch.float16))
    tax = random_taxonomy(10, seed=0)
    x = torch.rand(4, 10, dtype=torch.float64, requires_grad=True)
    rollup(x, tax).sum().backward()  # the differentiable torch path
    assert x.grad is not None


def test_plan_tensors_are_int64() -> None:
    tax = random_taxonomy(10, seed=0)
    perm, start, end = _tensors(_plan(tax, None, None), torch.device("cpu"))
    assert start.dtype == torch.int64 and end.dtype == torch.int64 and perm is None


def test_out_argument_writes_in_place_and_checks_its_shape() -> None:
    from hierclf.functional import RollUpError

    tax = random_taxonomy(40, seed=1)
    x = torch.rand(16, 40)
    out = torch.empty(16, len(tax.nodes))
    assert rollup(x, tax, out=out) is out
    assert torch.equal(out, rollup(x, tax))
    single = torch.empty(16, 1)
    assert rollup(x, tax, tax.root, out=single) is single
    with pytest.raises(RollUpError, match="out must be a contiguous"):
        rollup(x, tax, out=torch.empty(16, 3))
    with pytest.raises(RollUpError, match="out= is for inference"):
        rollup(x.requires_grad_(), tax, out=out)

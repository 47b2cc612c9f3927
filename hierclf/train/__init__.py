"""Training (torch): the configuration, the seeds and the resumable loop, one concept per module.

:func:`hierclf.train.loop.fit` runs these steps, in this order (each module's docstring says more):

1. :mod:`~hierclf.train.config` reads and checks the settings (``TrainConfig``, ``load_train_config``).
2. :mod:`~hierclf.train.distributed` picks the device and joins the ``torchrun`` process group, if any.
3. :mod:`~hierclf.train.loop` returns a finished run at once (``DONE``), or prepares the run folder
   (``config.resolved.yaml``).
4. :mod:`~hierclf.train.run` builds the :class:`~hierclf.train.run.TrainingRun` once: seeds
   (:mod:`~hierclf.train.seeding`), taxonomy, image sources, the head's classes, the model
   (:mod:`~hierclf.train.model`), the preprocessing and datasets (:mod:`~hierclf.train.inputs`), the loss,
   the parameter groups of the regime (:mod:`~hierclf.train.regimes`), the optimiser, schedule and AMP
   (:mod:`~hierclf.train.optim`) and the epoch batches (:mod:`~hierclf.train.batches`).
5. :func:`hierclf.train.loop.start` resumes from ``checkpoint.pt`` (:mod:`~hierclf.train.checkpoint`) or
   starts fresh.
6. Per epoch: :class:`~hierclf.train.epoch.EpochStep` trains one pass (unfreezing, modes, DDP wrapping,
   loss); :func:`hierclf.train.loop.validate` computes the validation record
   (:mod:`~hierclf.train.validation`); :func:`hierclf.train.loop.select_and_checkpoint` keeps the best
   epoch (``best.pt``), counts patience and writes ``checkpoint.pt``; :mod:`~hierclf.train.run_logs` then
   rewrites ``history.jsonl`` and sends TensorBoard scalars (``log: tensorboard``).
7. :mod:`~hierclf.train.outputs` writes the best epoch's predictions, ``history.json`` and ``DONE``, and
   builds the :class:`~hierclf.train.outputs.FitResult`.

:class:`~hierclf.train.seeding.SeedStreams` owns every generator seed of a run; :mod:`~hierclf.train.errors`
holds the errors a run raises; :mod:`~hierclf.train.preprocessing` resolves the input side and
normalisation once (from the backbone's pretrained config unless the config says otherwise) and
:mod:`~hierclf.train.subsample` keeps a fraction of each training class by whole groups. The public names
(``fit``, ``FitResult``, ``EpochBatchSampler``, ``lr_factor``, ``HierarchicalClassifier``, ``TrainConfig``)
are importable from :mod:`hierclf.train.loop`.
"""

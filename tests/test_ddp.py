"""DDP: ``torchrun --nproc_per_node=2 -m hierclf train`` on the CPU (gloo) equals one process.

What "equal" means here. Both runs draw the same global batches (``EpochBatchSampler``: the order is a
function of seed and epoch; each of the 2 ranks takes half of every batch of 20). DDP averages the two ranks'
gradients of their mean losses, which is the gradient of the mean loss over the global batch, so the
parameters follow the same trajectory up to floating-point summation order. Two things would break that and
are switched off in this test: BatchNorm in training mode (each rank would normalise with the statistics of
its own half batch; ``freeze_batchnorm: true`` keeps BatchNorm on its running statistics; on GPUs
``sync_batchnorm`` is the alternative) and random augmentation (``augment: false``; in DDP each rank draws its
own augmentations). We then require final weights and predictions to agree within 1e-5.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from hierclf.nn.backbones import create_backbone
from hierclf.train.loop import fit
from hierclf.train.seeding import set_determinism

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not in this torch build",
)


def _config(path: Path, out: Path, data_root: Path) -> Path:
    cfg = {
        "taxonomy": str(REPO / "taxonomy" / "dermamnist.yaml"),
        "data": {
            "source": "synthetic",
            "root": str(data_root),
            "size": 28,
            "augment": False,
            "synthetic": {"n_train": 60, "n_val": 14, "n_test": 14, "seed": 1},
        },
        "backbone": "small_cnn",
        "freeze_batchnorm": True,
        "optimizer": "sgd",
        "lr": 0.05,
        "epochs": 2,
        "batch_size": 20,
        "warmup_epochs": 0,
        "sampler": "balanced",
        "seed": 11,
        "device": "cpu",
        "out_dir": str(out),
    }
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return path


def test_two_processes_equal_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    single = fit(_config(tmp_path / "single.yaml", tmp_path / "single", data), progress=False)

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("WORLD_SIZE", None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "hierclf",
        "train",
        "--config",
        str(_config(tmp_path / "ddp.yaml", tmp_path / "ddp", data)),
        "--no-progress",
        "--json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    ddp_out = tmp_path / "ddp"
    assert (ddp_out / "DONE").is_file()
    # one set of outputs (rank 0 only), one JSON result printed
    result = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert result["epochs_run"] == 2 and result["best_epoch"] == single.best_epoch

    a = torch.load(single.checkpoint, map_location="cpu", weights_only=True)
    b = torch.load(ddp_out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert len(b["rng"]) == 2  # RNG states of both ranks, for an exact resume
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=1e-5, msg=key)
    # the backbone trained (moved away from its seeded initialisation), so the comparison is not vacuous
    set_determinism(11)
    initial, _ = create_backbone("small_cnn", in_size=28)
    moved = [
        k
        for k, v in initial.state_dict().items()
        if v.is_floating_point() and (b["model"][f"backbone.{k}"] - v).abs().max() > 1e-3
    ]
    assert moved
    for split in ("val", "test"):
        with np.load(single.predictions[split]) as x, np.load(ddp_out / "predictions" / f"{split}.npz") as y:
            assert (x["ids"] == y["ids"]).all() and (x["labels"] == y["labels"]).all()
            np.testing.assert_allclose(y["probs"], x["probs"], rtol=0, atol=1e-5)
    history = json.loads((ddp_out / "history.json").read_text())
    np.testing.assert_allclose(
        [h["train_loss"] for h in history], [h["train_loss"] for h in single.history], atol=1e-5
    )

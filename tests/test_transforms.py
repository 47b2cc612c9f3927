"""hierclf.transforms: one preprocessing shared by training and evaluation, and the dermoscopy policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from hierclf import HierclfError
from hierclf.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    augmentation,
    check_matching_preprocessing,
    eval_transform,
    preprocess,
    preprocessing_of,
    train_transform,
)
from hierclf.transforms import _flatten as flatten


def _images(n: int = 16, size: int = 28, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def test_eval_is_the_tail_of_train() -> None:
    train, evaluation = train_transform(28), eval_transform(28)
    # both end in a preprocess() block, built by the same function with the same parameters
    tail_train, tail_eval = train.transforms[-1], evaluation.transforms[-1]
    assert [type(t) for t in tail_train.transforms] == [type(t) for t in tail_eval.transforms]
    norm_train, norm_eval = tail_train.transforms[-1], tail_eval.transforms[-1]
    assert isinstance(norm_train, v2.Normalize) and isinstance(norm_eval, v2.Normalize)
    assert list(norm_train.mean) == list(norm_eval.mean) == list(IMAGENET_MEAN)
    assert list(norm_train.std) == list(norm_eval.std) == list(IMAGENET_STD)
    assert preprocessing_of(train) == preprocessing_of(evaluation) == (IMAGENET_MEAN, IMAGENET_STD)
    check_matching_preprocessing(train, evaluation)


def test_without_augmentation_train_and_eval_agree_exactly() -> None:
    images = _images()
    a = torch.stack([train_transform(28, augment=False)(im) for im in images])
    b = torch.stack([eval_transform(28)(im) for im in images])
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a.mean(dim=(0, 2, 3)), b.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(a.std(dim=(0, 2, 3)), b.std(dim=(0, 2, 3)))
    # and the statistics are those of (x / 255 - mean) / std, computed by hand
    raw = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in images]).double() / 255
    expected = (raw - torch.tensor(IMAGENET_MEAN, dtype=torch.float64)[:, None, None]) / torch.tensor(
        IMAGENET_STD, dtype=torch.float64)[:, None, None]
    torch.testing.assert_close(b.double(), expected, rtol=0, atol=1e-6)


def test_augmented_batch_has_the_eval_distribution_on_average() -> None:
    """Mild jitter and geometric augmentation keep per-channel statistics near those of evaluation inputs
    (a pipeline that normalised only one side would be off by about 2 standard deviations)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    colours = rng.integers(40, 220, (64, 3))
    images = [Image.fromarray(np.broadcast_to(c.astype(np.uint8), (28, 28, 3)).copy()) for c in colours]
    tr = train_transform(28, rotation=0)  # no black corners: compare colour statistics only
    a = torch.stack([tr(im) for im in images]).mean(dim=(0, 2, 3))
    b = torch.stack([eval_transform(28)(im) for im in images]).mean(dim=(0, 2, 3))
    torch.testing.assert_close(a, b, rtol=0, atol=0.1)


def test_train_output_shape_from_pil_array_and_tensor() -> None:
    torch.manual_seed(0)
    array = np.random.default_rng(0).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    for image in (Image.fromarray(array), array, torch.from_numpy(array).permute(2, 0, 1)):
        x = train_transform(64)(image)
        assert x.shape == (3, 64, 64) and x.dtype == torch.float32
        y = eval_transform(64)(image)
        assert y.shape == (3, 64, 64) and y.dtype == torch.float32
    assert eval_transform()(array).shape == (3, 28, 28)  # no size: no resize


def test_policy_is_the_dermoscopy_one() -> None:
    ops = flatten(augmentation(28))
    kinds = [type(op) for op in ops]
    for wanted in (v2.RandomHorizontalFlip, v2.RandomVerticalFlip, v2.RandomRotation, v2.RandomResizedCrop,
                   v2.ColorJitter):
        assert wanted in kinds
    assert not any(isinstance(op, v2.GaussianBlur) for op in flatten(train_transform(28)))
    rotation = next(op for op in ops if isinstance(op, v2.RandomRotation))
    assert list(rotation.degrees) == [-180.0, 180.0]  # the full circle
    jitter = next(op for op in ops if isinstance(op, v2.ColorJitter))
    assert jitter.brightness[1] - 1 <= 0.3 and jitter.hue[1] <= 0.05  # mild
    with pytest.raises(HierclfError, match="keep it mild"):
        augmentation(28, brightness=0.8)
    with pytest.raises(HierclfError, match="scale"):
        augmentation(28, scale=(0.0, 1.0))


def test_full_rotation_and_flips_preserve_a_centred_disc() -> None:
    """The geometric part alone keeps a centred round lesion (rotation/flip invariant) where it was."""
    yy, xx = np.mgrid[:28, :28] + 0.5
    disc = ((yy - 14) ** 2 + (xx - 14) ** 2 < 64).astype(np.uint8) * 200
    image = Image.fromarray(np.stack([disc] * 3, axis=-1))
    geometric = augmentation(28, scale=(1.0, 1.0), brightness=0, contrast=0, saturation=0, hue=0)
    torch.manual_seed(0)
    for _ in range(10):
        out = np.array(geometric(image))  # the random part returns a PIL image
        assert out.shape == (28, 28, 3)
        assert float((out[..., 0][disc > 0] > 100).mean()) > 0.9


def test_seed_003_trap_is_caught() -> None:
    """Normalising the training inputs only (seed 003's worst run) is rejected with a clear message."""
    unnormalised_eval = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    with pytest.raises(HierclfError, match="training uses mean=.*evaluation uses no normalisation"):
        check_matching_preprocessing(train_transform(28), unnormalised_eval)
    with pytest.raises(HierclfError, match="differ"):
        check_matching_preprocessing(train_transform(28, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
                                     eval_transform(28))
    check_matching_preprocessing(train_transform(28, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
                                 eval_transform(28, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))


def test_bad_statistics() -> None:
    with pytest.raises(HierclfError, match="3 values"):
        preprocess(mean=(0.5,), std=(0.5,))
    with pytest.raises(HierclfError, match="positive"):
        preprocess(std=(0.2, 0.0, 0.2))

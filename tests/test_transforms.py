"""hierclf.data.transforms: one preprocessing shared by training and evaluation, and the dermoscopy policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from hierclf import HierclfError, Taxonomy
from hierclf.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentParams,
    BatchTransform,
    augmentation,
    check_matching_preprocessing,
    eval_transform,
    preprocess,
    preprocessing_of,
    to_uint8,
    train_transform,
)
from hierclf.data.transforms import _flatten as flatten


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
        IMAGENET_STD, dtype=torch.float64
    )[:, None, None]
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
    for wanted in (
        v2.RandomHorizontalFlip,
        v2.RandomVerticalFlip,
        v2.RandomRotation,
        v2.RandomResizedCrop,
        v2.ColorJitter,
    ):
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
        check_matching_preprocessing(
            train_transform(28, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)), eval_transform(28)
        )
    check_matching_preprocessing(
        train_transform(28, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        eval_transform(28, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    )


def test_bad_statistics() -> None:
    with pytest.raises(HierclfError, match="3 values"):
        preprocess(mean=(0.5,), std=(0.5,))
    with pytest.raises(HierclfError, match="positive"):
        preprocess(std=(0.2, 0.0, 0.2))


# --- the batched pipeline ---------------------------------------------------------------------------------


def _batch(n: int = 8, size: int = 28, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8))


def _identity_params(n: int, **changes: object) -> AugmentParams:
    base = {"hflip": torch.zeros(n, dtype=torch.bool), "vflip": torch.zeros(n, dtype=torch.bool)}
    base.update({k: torch.zeros(n, dtype=torch.float64) for k in ("angle", "centre_x", "centre_y", "hue")})
    base.update(
        {
            k: torch.ones(n, dtype=torch.float64)
            for k in ("crop_w", "crop_h", "brightness", "contrast", "saturation")
        }
    )
    base.update(changes)  # type: ignore[arg-type]
    return AugmentParams(**base)  # type: ignore[arg-type]


def test_batch_eval_equals_per_image_eval() -> None:
    x = _batch()
    images = [Image.fromarray(a) for a in x.permute(0, 2, 3, 1).numpy()]
    expected = torch.stack([eval_transform(28)(im) for im in images])
    torch.testing.assert_close(BatchTransform(28, augment=False)(x), expected, rtol=0, atol=1e-6)
    assert preprocessing_of(BatchTransform(28)) == preprocessing_of(eval_transform(28))
    check_matching_preprocessing(BatchTransform(28), eval_transform(28))
    with pytest.raises(HierclfError, match="differ"):
        check_matching_preprocessing(BatchTransform(28, mean=(0.5,) * 3, std=(0.5,) * 3), eval_transform(28))


def test_batch_geometry_against_exact_references() -> None:
    t = BatchTransform(28)
    x = _batch(4).float() / 255
    # identity parameters reproduce the input
    torch.testing.assert_close(t.geometry(x, _identity_params(4)), x, rtol=0, atol=1e-5)
    # flips are torch.flip
    flips = _identity_params(
        4, hflip=torch.tensor([True, False, True, False]), vflip=torch.tensor([False, True, True, False])
    )
    expected = torch.stack([x[0].flip(-1), x[1].flip(-2), x[2].flip(-1).flip(-2), x[3]])
    torch.testing.assert_close(t.geometry(x, flips), expected, rtol=0, atol=1e-5)
    # quarter turns are torch.rot90, one direction each
    plus = t.geometry(x, _identity_params(4, angle=torch.full((4,), 90.0, dtype=torch.float64)))
    minus = t.geometry(x, _identity_params(4, angle=torch.full((4,), -90.0, dtype=torch.float64)))
    turns = [x.rot90(1, dims=(-2, -1)), x.rot90(-1, dims=(-2, -1))]
    assert any(torch.allclose(plus, r, atol=1e-4) for r in turns)
    assert any(torch.allclose(minus, r, atol=1e-4) for r in turns)
    assert not torch.allclose(plus, minus, atol=1e-4)
    # a centred half-size crop is bilinear upsampling of the central 14x14 pixels (away from the outermost
    # output pixels, where F.interpolate clamps to the crop and the crop reads the neighbouring pixels)
    half = _identity_params(
        4,
        crop_w=torch.full((4,), 0.5, dtype=torch.float64),
        crop_h=torch.full((4,), 0.5, dtype=torch.float64),
    )
    reference = F.interpolate(x[..., 7:21, 7:21], size=(28, 28), mode="bilinear", align_corners=False)
    torch.testing.assert_close(
        t.geometry(x, half)[..., 1:-1, 1:-1], reference[..., 1:-1, 1:-1], rtol=0, atol=1e-5
    )


@pytest.mark.parametrize(
    ("name", "factor", "reference"),
    [
        ("brightness", 1.08, TF.adjust_brightness),
        ("contrast", 0.92, TF.adjust_contrast),
        ("saturation", 1.1, TF.adjust_saturation),
    ],
)
def test_batch_colour_matches_torchvision(name: str, factor: float, reference: object) -> None:
    t = BatchTransform(28, hue=0.0)
    x = _batch(3).float() / 255
    p = _identity_params(3, **{name: torch.full((3,), factor, dtype=torch.float64)})
    expected = torch.stack([reference(img, factor) for img in x])  # type: ignore[operator]
    torch.testing.assert_close(t.colour(x, p), expected, rtol=0, atol=1e-5)


def test_batch_hue_is_close_to_torchvision_hsv_shift() -> None:
    t = BatchTransform(28)
    x = _batch(3).float() / 255
    p = _identity_params(3, hue=torch.full((3,), 0.02, dtype=torch.float64))
    expected = torch.stack([TF.adjust_hue(img, 0.02) for img in x])
    shifted = t.colour(x, p)
    # the change it makes points the same way as torchvision's (YIQ rotation vs HSV shift)
    ours, theirs = (shifted - x).flatten(), (expected - x).flatten()
    assert float(torch.nn.functional.cosine_similarity(ours, theirs, dim=0)) > 0.6
    assert 0.5 < float(ours.norm() / theirs.norm()) < 2.0


def test_batch_augmentation_matches_per_sample_statistics() -> None:
    rng = np.random.default_rng(1)
    colours = rng.integers(40, 220, (256, 3)).astype(np.uint8)
    x = torch.from_numpy(np.broadcast_to(colours[:, :, None, None], (256, 3, 28, 28)).copy())
    batched = BatchTransform(28, rotation=0)(x, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    per_sample = torch.stack(
        [train_transform(28, rotation=0)(Image.fromarray(a)) for a in x.permute(0, 2, 3, 1).numpy()]
    )
    torch.testing.assert_close(batched.mean(dim=(0, 2, 3)), per_sample.mean(dim=(0, 2, 3)), rtol=0, atol=0.05)
    torch.testing.assert_close(batched.std(dim=(0, 2, 3)), per_sample.std(dim=(0, 2, 3)), rtol=0.1, atol=0.05)


def test_batch_is_reproducible_and_checks_shapes() -> None:
    t = BatchTransform(32)
    x = _batch(5)
    a = t(x, generator=torch.Generator().manual_seed(3))
    b = t(x, generator=torch.Generator().manual_seed(3))
    assert a.shape == (5, 3, 32, 32) and torch.equal(a, b)
    with pytest.raises(HierclfError, match="expects 32x32 images"):
        BatchTransform(32, augment=False)(x)
    with pytest.raises(HierclfError, match=r"\(batch, 3, H, W\)"):
        t(x[:, :1])
    with pytest.raises(HierclfError, match="keep it mild"):
        BatchTransform(28, saturation=0.9)


def test_uint8_dataset_path_equals_eval_path(tmp_path: Path, dermamnist: Taxonomy) -> None:
    from hierclf.data.datasets import TaxonomyImageDataset, load_dermamnist, make_synthetic_dermamnist

    make_synthetic_dermamnist(tmp_path, n_train=14, n_val=14, n_test=14)
    source = load_dermamnist(tmp_path, "val", taxonomy=dermamnist)
    mapping = {leaf: i for i, leaf in enumerate(dermamnist.leaves)}
    raw = TaxonomyImageDataset(source, mapping, transform=to_uint8(28))
    assert raw._arrays  # in-memory arrays reach the transform without a PIL round trip
    assert raw[0][0].dtype == torch.uint8 and raw[0][0].shape == (3, 28, 28)
    xb, yb = next(iter(DataLoader(raw, batch_size=14)))
    xe, ye = next(
        iter(DataLoader(TaxonomyImageDataset(source, mapping, transform=eval_transform(28)), batch_size=14))
    )
    torch.testing.assert_close(BatchTransform(28, augment=False)(xb), xe, rtol=0, atol=1e-6)
    assert torch.equal(yb, ye)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batch_transform_on_cuda() -> None:
    x = _batch(16)
    t = BatchTransform(28)
    p = t.sample(16, torch.Generator().manual_seed(0))
    cpu = t(x, params=p)
    gpu = t.to("cuda")(x.cuda(), params=p)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-4)


def test_to_uint8_array_fast_path_equals_pil_path() -> None:
    array = np.random.default_rng(5).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    fast = to_uint8(28)(array)
    slow = to_uint8(28)(Image.fromarray(array))
    assert fast.dtype == slow.dtype == torch.uint8 and torch.equal(fast, slow)
    assert torch.equal(to_uint8()(array), slow)
    # resizing always goes through PIL, as in eval_transform
    torch.testing.assert_close(
        BatchTransform(64, augment=False)(to_uint8(64)(array)[None]),
        eval_transform(64)(Image.fromarray(array))[None],
        rtol=0,
        atol=1e-6,
    )

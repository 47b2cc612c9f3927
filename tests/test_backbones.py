"""Backbones: each builds and gives its stated feature width; registry errors; pretrained weights from the
torch hub cache (never downloaded here: offline, or a download replaced by the test); determinism helpers."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from hierclf.errors import HierclfError, UnknownNameError
from hierclf.nn.backbones import (
    Backbone,
    backbone_parameters_by_block,
    create_backbone,
    list_backbones,
    pretrained_weights_path,
    register_backbone,
)
from hierclf.train.seeding import get_rng_state, seed_worker, set_determinism, set_rng_state

# name, smallest input size used here, feature width stated by torchvision's model definitions
CASES = [
    ("small_cnn", 28, 128),
    ("resnet18", 28, 512),
    ("resnet50", 28, 2048),
    ("efficientnet_b0", 32, 1280),
    ("convnext_tiny", 32, 768),
    ("vit_b_16", 16, 768),  # 16 px = one 16x16 patch: the smallest native ViT input (fast on a CPU)
]


@pytest.mark.parametrize(("name", "size", "width"), CASES)
def test_builds_with_stated_width(name: str, size: int, width: int) -> None:
    torch.manual_seed(0)
    net, n = create_backbone(name, in_size=size)
    assert isinstance(net, Backbone) and n == width == net.n_features
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, size, size))
    assert out.shape == (2, width) and torch.isfinite(out).all()
    # no classifier left: the output is the feature vector, not 1000 ImageNet logits
    assert width != 1000


@pytest.mark.parametrize(("name", "size", "width"), CASES)
def test_block_groups_partition_the_parameters(name: str, size: int, width: int) -> None:
    net, _ = create_backbone(name, in_size=size)
    groups = backbone_parameters_by_block(net)
    assert len(groups) >= 3 and all(groups)
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in net.parameters()}


def test_resnet_stem_for_small_images() -> None:
    small, _ = create_backbone("resnet18", in_size=28)
    assert small.body.conv1.kernel_size == (3, 3) and small.body.conv1.stride == (1, 1)
    assert isinstance(small.body.maxpool, nn.Identity)
    large, _ = create_backbone("resnet18", in_size=96)
    assert large.body.conv1.kernel_size == (7, 7) and large.body.conv1.stride == (2, 2)
    assert isinstance(large.body.maxpool, nn.MaxPool2d)
    # 28 px keeps a 4x4 map before the last stage with the small stem (1x1 with the ImageNet stem)
    with torch.no_grad():
        small.eval()
        x = small.body.layer3(
            small.body.layer2(
                small.body.layer1(
                    small.body.relu(small.body.bn1(small.body.conv1(torch.zeros(1, 3, 28, 28))))
                )
            )
        )
    assert x.shape[-2:] == (7, 7)


def test_vit_resizes_sizes_it_cannot_take() -> None:
    net, n = create_backbone("vit_b_16", in_size=28)  # 28 is not a multiple of 16: resized to 224
    assert n == 768 and net.input_size == 224 and net.body.image_size == 224
    native, _ = create_backbone("vit_b_16", in_size=32)
    assert native.input_size is None and native.body.image_size == 32


@pytest.mark.parametrize("name", ["small_cnn", "resnet18"])
def test_grey_images(name: str) -> None:
    net, n = create_backbone(name, in_size=28, in_channels=1)
    net.eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 1, 28, 28)).shape == (2, n)


def test_registry() -> None:
    assert list_backbones() == sorted(name for name, _, _ in CASES)
    net, _ = create_backbone("ResNet18", in_size=28)  # case-insensitive
    assert net.name == "resnet18"
    with pytest.raises(UnknownNameError) as err:
        create_backbone("resnet19")
    assert str(err.value) == (
        "unknown backbone 'resnet19' (known backbones: convnext_tiny, efficientnet_b0, "
        "resnet18, resnet50, small_cnn, vit_b_16); did you mean 'resnet18' or "
        "'resnet50'?"
    )
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("small_cnn")(lambda p, s, c: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(HierclfError, match="in_size must be at least 32"):
        create_backbone("convnext_tiny", in_size=28)
    with pytest.raises(HierclfError, match="no pretrained weights"):
        create_backbone("small_cnn", pretrained=True)


@pytest.fixture
def empty_hub(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_missing_weights_offline_name_the_file_and_folder(empty_hub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIERCLF_OFFLINE", "1")
    file = os.path.basename(torchvision.models.ResNet18_Weights.DEFAULT.url)  # e.g. resnet18-f37072fd.pth
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    with pytest.raises(HierclfError) as err:
        create_backbone("resnet18", pretrained=True, in_size=224)
    fetch = f"import torch; torch.hub.download_url_to_file('{url}', '{file}')"
    assert str(err.value) == (
        "pretrained weights for 'resnet18' not found and downloads are off (HIERCLF_OFFLINE=1): "
        f"expected the file '{file}' in {empty_hub} (the torch hub cache; TORCH_HOME moves it); "
        f'on a machine with network access run: python -c "{fetch}" and copy {file} into {empty_hub}, '
        "or use pretrained: false"
    )
    assert not empty_hub.exists() or not any(empty_hub.iterdir())  # nothing was downloaded


def test_weights_load_from_the_cache(empty_hub) -> None:
    """A file placed where torchvision would cache it is loaded (weights_only) into the body."""
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    path = pretrained_weights_path(torchvision.models.ResNet18_Weights.DEFAULT)
    assert path.parent == empty_hub
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    torch.manual_seed(2)  # a different random init, so equality below comes from the file
    net, _ = create_backbone("resnet18", pretrained=True, in_size=224)
    for key in ("conv1.weight", "layer4.1.bn2.running_var", "layer2.0.downsample.0.weight"):
        assert torch.equal(net.body.state_dict()[key], reference.state_dict()[key])
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(HierclfError, match=f"cannot read pretrained weights {path}: not a PyTorch file"):
        create_backbone("resnet18", pretrained=True, in_size=224)


# --- determinism ---------------------------------------------------------------------------------------


def _draws() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_set_determinism_repeats_every_generator() -> None:
    g1 = set_determinism(123)
    first, loader1 = _draws(), torch.randint(0, 10**6, (4,), generator=g1).tolist()
    g2 = set_determinism(123)
    assert _draws() == first and torch.randint(0, 10**6, (4,), generator=g2).tolist() == loader1
    set_determinism(124)
    assert _draws() != first


def test_rng_state_round_trip_through_a_checkpoint(tmp_path) -> None:
    set_determinism(5)
    _draws()
    torch.save(get_rng_state(), tmp_path / "rng.pt")
    expected = _draws()
    _draws()
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert _draws() == expected


def test_seed_worker_follows_torch_seed() -> None:
    torch.manual_seed(77)  # what a DataLoader worker gets as its torch seed
    seed_worker(0)
    a = (random.random(), float(np.random.rand()))
    torch.manual_seed(77)
    seed_worker(0)
    assert (random.random(), float(np.random.rand())) == a
    np.random.seed(77 % 2**32)
    random.seed(77)
    assert a == (random.random(), float(np.random.rand()))

"""Backbones from the ecosystem: timm models by name (built without weights), pretrained weights read through
the Hugging Face hub cache and the torch hub cache from files the tests write (never downloaded), the offline
errors, and your own factory with its contract and its errors."""

from __future__ import annotations

import sys
import textwrap
import urllib.error
from pathlib import Path

import pytest
import torch

pytest.importorskip("timm")
import timm  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from hierclf.errors import UnknownNameError  # noqa: E402
from hierclf.nn.backbones import (  # noqa: E402
    Backbone,
    BackboneError,
    backbone_parameters_by_block,
    create_backbone,
    pretrained_input,
    resolve_backbone_name,
)
from hierclf.nn.weights_cache import WeightsNotCachedError, hub_repo_folder  # noqa: E402

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty Hugging Face and torch hub caches in a temporary folder; downloads switched off."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return tmp_path


def _fill_hub_cache(cache: Path, repo: str, filename: str, state: dict[str, torch.Tensor]) -> Path:
    """Lay a file out as ``hf download`` does: refs/main -> snapshots/<commit>/<file>."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(COMMIT)
    snapshot = folder / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    path = snapshot / filename
    if filename.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


# --- timm models by name ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "size"), [("timm/resnet18", 32), ("timm/vit_tiny_patch16_224", 32), ("timm/convnext_tiny", 32)]
)
def test_timm_models_build_without_weights(name: str, size: int) -> None:
    torch.manual_seed(0)
    net, n = create_backbone(name, in_size=size)
    reference = timm.create_model(name.removeprefix("timm/"), pretrained=False, num_classes=0)
    assert isinstance(net, Backbone) and net.name == name
    assert n == net.n_features == reference.num_features  # read from the model, not a table
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, size, size))
    assert out.shape == (2, n) and torch.isfinite(out).all()
    groups = backbone_parameters_by_block(net)
    ids = [id(p) for g in groups for p in g]
    assert len(groups) >= 3 and all(groups)
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in net.parameters()}


def test_timm_blocks_follow_timms_own_grouping() -> None:
    net, _ = create_backbone("timm/vit_tiny_patch16_224", in_size=32)
    # timm's coarse groups of a ViT: the patch embedding, then each of the 12 transformer blocks in order
    assert net.block_paths[0] == ("patch_embed.proj",)
    assert [group[0].split(".")[:2] for group in net.block_paths[1:]] == [
        ["blocks", str(i)] for i in range(12)
    ]
    res, _ = create_backbone("timm/resnet18", in_size=32)
    assert [sorted({p.split(".")[0] for p in g}) for g in res.block_paths] == [
        ["bn1", "conv1"],
        ["layer1"],
        ["layer2"],
        ["layer3"],
        ["layer4"],
    ]


def test_timm_names_resolve_with_did_you_mean() -> None:
    assert resolve_backbone_name("TIMM/ResNet18.a1_in1k") == "timm/resnet18.a1_in1k"
    with pytest.raises(UnknownNameError) as err:
        resolve_backbone_name("timm/resnet19")
    assert str(err.value).startswith("unknown backbone 'timm/resnet19' (timm lists ")
    assert "did you mean 'timm/resnet18'" in str(err.value)
    with pytest.raises(
        UnknownNameError, match=r"unknown timm pretrained tag 'foo' of 'resnet18' \(its tags: a1_in1k"
    ):
        resolve_backbone_name("timm/resnet18.foo")
    # a timm model named without the prefix: the suggestion is the prefixed name
    with pytest.raises(UnknownNameError, match=r"did you mean 'timm/vit_small_patch14_dinov2'"):
        resolve_backbone_name("vit_small_patch14_dinov2")


def test_pretrained_input_comes_from_the_weights_config() -> None:
    dino = pretrained_input("timm/vit_small_patch14_dinov2.lvd142m", True)
    cfg = timm.models.get_pretrained_cfg("vit_small_patch14_dinov2.lvd142m")
    assert dino is not None and dino.size == cfg.input_size[-1] == 518
    assert dino.mean == tuple(cfg.mean) and dino.std == tuple(cfg.std)
    clip = pretrained_input("timm/vit_base_patch16_clip_224.openai", True)
    assert clip is not None and clip.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    import torchvision

    tv = pretrained_input("efficientnet_b0", True)
    ref = torchvision.models.EfficientNet_B0_Weights.DEFAULT.transforms()
    assert tv is not None and tv.size == ref.crop_size[0] and tv.mean == tuple(ref.mean)
    assert pretrained_input("timm/resnet18", False) is None and pretrained_input("small_cnn", True) is None


# --- pretrained weights through the caches ---------------------------------------------------------------


def test_timm_weights_load_from_the_hub_cache(caches: Path) -> None:
    torch.manual_seed(1)
    source = timm.create_model("resnet18", pretrained=False)  # with its 1000-class classifier, as on the hub
    path = _fill_hub_cache(caches / "hf", "timm/resnet18.a1_in1k", "model.safetensors", source.state_dict())
    torch.manual_seed(2)  # another random init: equality below comes from the file
    net, n = create_backbone("timm/resnet18.a1_in1k", pretrained=True, in_size=64)
    assert n == 512
    mine, theirs = net.body.state_dict(), source.state_dict()
    for key in ("conv1.weight", "layer4.1.bn2.running_var", "layer2.0.downsample.0.weight"):
        assert torch.equal(mine[key], theirs[key])
    assert "fc.weight" not in mine  # the classifier is dropped
    assert net.pretrained_input is not None and net.pretrained_input.size == 224
    assert path.is_file()


def test_timm_vit_position_embeddings_are_resampled_to_the_input_size(caches: Path) -> None:
    torch.manual_seed(3)
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    _fill_hub_cache(
        caches / "hf",
        "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k",
        "model.safetensors",
        source.state_dict(),
    )
    net, _ = create_backbone("timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k", pretrained=True, in_size=32)
    assert torch.equal(
        net.body.state_dict()["blocks.3.attn.qkv.weight"], source.state_dict()["blocks.3.attn.qkv.weight"]
    )
    assert net.body.pos_embed.shape[1] == 1 + (32 // 16) ** 2  # 2x2 patches and the class token
    with torch.no_grad():
        assert net.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 192)


def test_timm_weights_missing_offline_name_file_and_folder(caches: Path, monkeypatch) -> None:
    monkeypatch.delenv("HIERCLF_OFFLINE")  # set by conftest: here Hugging Face's own switch is the one named
    with pytest.raises(WeightsNotCachedError) as err:
        create_backbone("timm/resnet18.a1_in1k", pretrained=True, in_size=64)
    folder = hub_repo_folder("timm/resnet18.a1_in1k")
    assert folder == caches / "hf" / "models--timm--resnet18.a1_in1k"
    assert str(err.value) == (
        "pretrained weights for 'timm/resnet18.a1_in1k' not found and downloads are off (HF_HUB_OFFLINE=1): "
        "expected the file 'model.safetensors' of the hub repository 'timm/resnet18.a1_in1k' "
        f"in {folder} (the Hugging Face hub cache: refs/main and snapshots/<commit>/model.safetensors; "
        "HF_HUB_CACHE moves it); on a machine with network access run: "
        "hf download timm/resnet18.a1_in1k model.safetensors --cache-dir <dir> "
        f"and copy <dir>/models--timm--resnet18.a1_in1k into {caches / 'hf'}, or use pretrained: false"
    )
    assert "\n" not in str(err.value)


def test_timm_weights_of_another_network_are_refused(caches: Path) -> None:
    other = timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict()
    path = _fill_hub_cache(caches / "hf", "timm/resnet18.a1_in1k", "model.safetensors", other)
    with pytest.raises(BackboneError, match=f"pretrained weights {path} do not fit 'timm/resnet18.a1_in1k'"):
        create_backbone("timm/resnet18.a1_in1k", pretrained=True, in_size=64)


def test_pytorch_bin_is_the_fallback_when_the_hub_has_no_safetensors(caches: Path) -> None:
    source = timm.create_model("resnet18", pretrained=False)
    _fill_hub_cache(caches / "hf", "timm/resnet18.a1_in1k", "pytorch_model.bin", source.state_dict())
    net, _ = create_backbone("timm/resnet18.a1_in1k", pretrained=True, in_size=64)
    assert torch.equal(net.body.state_dict()["conv1.weight"], source.state_dict()["conv1.weight"])


def test_torchvision_weights_are_downloaded_into_the_torch_hub_cache(caches: Path, monkeypatch) -> None:
    """Online, a missing file is fetched with torch.hub's downloader into the cache (the download itself is
    replaced by a copy of a file the test wrote: tests never touch the network)."""
    import torchvision

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HIERCLF_OFFLINE")  # set for every test by conftest
    reference = torchvision.models.resnet18(weights=None)
    staged = caches / "staged.pth"
    torch.save(reference.state_dict(), staged)
    calls = []

    def fake_download(url: str, dst: str, progress: bool = True) -> None:
        calls.append((url, dst))
        Path(dst).write_bytes(staged.read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    net, _ = create_backbone("resnet18", pretrained=True, in_size=224)
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    assert calls == [(url, str(caches / "torch" / "hub" / "checkpoints" / Path(url).name))]
    assert torch.equal(
        net.body.state_dict()["layer3.0.conv1.weight"], reference.state_dict()["layer3.0.conv1.weight"]
    )
    create_backbone("resnet18", pretrained=True, in_size=224)
    assert len(calls) == 1  # cached now: not fetched again


def test_no_route_names_the_file_and_folder(caches: Path, monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HIERCLF_OFFLINE")  # set for every test by conftest

    def no_route(url: str, dst: str, progress: bool = True) -> None:
        raise urllib.error.URLError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_route)
    with pytest.raises(WeightsNotCachedError) as err:
        create_backbone("resnet18", pretrained=True, in_size=224)
    folder = caches / "torch" / "hub" / "checkpoints"
    assert "downloading https://download.pytorch.org/models/resnet18-" in str(err.value)
    assert "Network is unreachable" in str(err.value) and f"in {folder} (the torch hub cache" in str(
        err.value
    )


# --- your own factory ------------------------------------------------------------------------------------

FACTORY_MODULE = """
import torch
from torch import nn

class Tiny(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.stage = nn.Conv2d(8, width, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
    def forward(self, x):
        return self.pool(self.stage(torch.relu(self.stem(x)))).flatten(1)

def build(width=16):
    return Tiny(width), width

def wrong_width(width=16):
    return Tiny(width), width + 1

def not_a_pair():
    return Tiny(4)

def not_a_module():
    return "resnet", 4

def crashes(width=4):
    class Bad(nn.Module):
        def forward(self, x):
            raise RuntimeError("shapes do not line up")
    return Bad(), width

NOT_CALLABLE = 3
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "my_nets.py").write_text(textwrap.dedent(FACTORY_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_nets"
    sys.modules.pop("my_nets", None)


def test_factory_builds_the_users_module(user_module: str) -> None:
    net, n = create_backbone({"factory": f"{user_module}:build", "kwargs": {"width": 12}}, in_size=28)
    assert n == 12 and net.name == f"factory:{user_module}:build"
    assert net.block_paths == (("stem",), ("stage",))  # top-level children with parameters, in order
    with torch.no_grad():
        assert net(torch.zeros(3, 3, 28, 28)).shape == (3, 12)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("my_nets:wrong_width", "the module maps a (2, 3, 28, 28) batch to (2, 16); expected (2, 17)"),
        ("my_nets:not_a_pair", "returned a Tiny; expected (module, n_features)"),
        ("my_nets:not_a_module", "returned a str as the module; expected a torch.nn.Module"),
        (
            "my_nets:crashes",
            "the module fails on a (2, 3, 28, 28) batch (RuntimeError: shapes do not line up)",
        ),
        ("my_nets:NOT_CALLABLE", "'NOT_CALLABLE' is a int, not a function"),
        ("my_nets:biuld", "module 'my_nets' has no attribute 'biuld'; did you mean 'build'?"),
        ("no_such_package.nets:build", "cannot import module 'no_such_package.nets' (ModuleNotFoundError"),
        ("my_nets.build", "expected 'package.module:function'"),
    ],
)
def test_factory_contract_breaches_are_one_line(user_module: str, target: str, message: str) -> None:
    with pytest.raises(BackboneError) as err:
        create_backbone({"factory": target}, in_size=28)
    assert str(err.value).startswith(f"backbone.factory {target!r}: ")
    assert message in str(err.value) and "\n" not in str(err.value)
    assert err.value.field == ("backbone", "factory")


def test_factory_refuses_pretrained_and_bad_kwargs(user_module: str) -> None:
    with pytest.raises(BackboneError, match="loads its own weights") as err:
        create_backbone({"factory": "my_nets:build"}, pretrained=True, in_size=28)
    assert err.value.field == ("pretrained",)
    with pytest.raises(BackboneError, match=r"cannot be called with kwargs \['depth'\]"):
        create_backbone({"factory": "my_nets:build", "kwargs": {"depth": 3}}, in_size=28)


def test_factory_returning_a_timm_model_keeps_timms_groups() -> None:
    model = timm.create_model("resnet18", pretrained=False, num_classes=0)
    from hierclf.nn.backbone_factory import _block_paths, _declared_input

    assert len(_block_paths(model)) == 5
    declared = _declared_input(model)
    assert declared is not None and declared.size == 224

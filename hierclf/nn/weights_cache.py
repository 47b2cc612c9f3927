"""Pretrained weights through the libraries' own download-and-cache mechanisms, and one line when offline.

Two caches hold every pretrained file hierclf reads:

* the **torch hub cache** (``torch.hub.get_dir()/checkpoints``, moved by ``TORCH_HOME``): torchvision's
  weights, and timm's weights that live at a URL rather than on the Hugging Face hub. A missing file is
  downloaded with ``torch.hub.download_url_to_file`` (a temporary file renamed into place, so an interrupted
  download never leaves half a file under the final name);
* the **Hugging Face hub cache** (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``):
  timm's weights. A missing file is fetched with ``huggingface_hub.hf_hub_download``, which lays the cache out
  as ``models--<org>--<name>/refs/<revision>`` and ``snapshots/<commit>/<file>``.

Offline (``HIERCLF_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``, read when weights are asked for, not at import)
nothing is fetched; a missing file, or a download that finds no route, raises
:class:`WeightsNotCachedError`, one line naming the exact file, the cache folder to put it in, and the
command that fetches it on a machine with network access.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from hierclf.errors import HierclfError
from hierclf.nn.serialization import load_tensor_file

logger = logging.getLogger(__name__)

__all__ = [
    "OFFLINE_VARIABLES",
    "WeightsNotCachedError",
    "fetch_hub_file",
    "fetch_url_file",
    "hub_cache_dir",
    "hub_repo_folder",
    "is_offline",
    "read_weights",
    "torch_hub_checkpoints",
]

#: environment variables that forbid downloads (either one set to 1/true/yes/on)
OFFLINE_VARIABLES = ("HIERCLF_OFFLINE", "HF_HUB_OFFLINE")


class WeightsNotCachedError(HierclfError):
    """Pretrained weights are neither in their cache nor downloadable (offline, or no route)."""


def is_offline() -> bool:
    """True when ``HIERCLF_OFFLINE`` or ``HF_HUB_OFFLINE`` is set to 1 / true / yes / on."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARIABLES)


def _offline_reason() -> str:
    set_ = [
        v for v in OFFLINE_VARIABLES if os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
    ]
    return f"{set_[0]}={os.environ[set_[0]]}" if set_ else ""


def torch_hub_checkpoints() -> Path:
    """The torch hub cache's checkpoints, ``torch.hub.get_dir()/checkpoints`` (``TORCH_HOME`` moves it)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved as ``huggingface_hub`` resolves it, from the environment now."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    base = Path(os.environ["XDG_CACHE_HOME"]).expanduser() if os.environ.get("XDG_CACHE_HOME") else None
    return (base or Path.home() / ".cache") / "huggingface" / "hub"


def hub_repo_folder(repo_id: str) -> Path:
    """The cache folder of a hub model repository: ``<hub cache>/models--<org>--<name>``.

    Example:
        >>> hub_repo_folder("timm/resnet18.a1_in1k").name
        'models--timm--resnet18.a1_in1k'
    """
    return hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def fetch_url_file(url: str, *, what: str) -> Path:
    """The torch hub cache's copy of ``url``'s file, downloaded there first when missing and online.

    Raises:
        WeightsNotCachedError: the file is missing and hierclf is offline, or the download failed.
    """
    folder = torch_hub_checkpoints()
    path = folder / os.path.basename(url)
    if path.is_file():
        return path
    how = (
        f'on a machine with network access run: python -c "import torch; torch.hub.download_url_to_file('
        f"'{url}', '{path.name}')\" and copy {path.name} into {folder}, or use pretrained: false"
    )
    if is_offline():
        raise WeightsNotCachedError(
            f"pretrained weights for {what} not found and downloads are off ({_offline_reason()}): expected "
            f"the file {path.name!r} in {folder} (the torch hub cache; TORCH_HOME moves it); {how}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    logger.info("downloading pretrained weights for %s from %s into %s", what, url, folder)
    try:
        torch.hub.download_url_to_file(url, str(path), progress=False)
    except Exception as exc:  # noqa: BLE001 - no route, refused, timeout: the same problem for the user
        raise WeightsNotCachedError(
            f"pretrained weights for {what}: downloading {url} failed ({_first_line(exc)}); expected the "
            f"file {path.name!r} in {folder} (the torch hub cache; TORCH_HOME moves it); {how}"
        ) from None
    return path


def fetch_hub_file(repo_id: str, filenames: tuple[str, ...], *, revision: str | None, what: str) -> Path:
    """The hub cache's copy of the first of ``filenames`` that repository ``repo_id`` has (downloaded into
    the cache when missing and online; ``filenames`` in order of preference, e.g. ``model.safetensors`` then
    ``pytorch_model.bin``).

    Raises:
        WeightsNotCachedError: none is cached and hierclf is offline, or fetching failed.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    offline, failure = is_offline(), ""
    for filename in filenames:
        try:
            return Path(
                hf_hub_download(
                    repo_id, filename, revision=revision, cache_dir=hub_cache_dir(), local_files_only=offline
                )
            )
        except LocalEntryNotFoundError as exc:  # not cached and offline (or no route): try the next name
            failure = failure or _first_line(exc)
        except EntryNotFoundError:  # the repository has no such file: try the next name
            continue
        except Exception as exc:  # noqa: BLE001 - connection errors, unknown repository, HTTP errors
            failure = failure or _first_line(exc)
            break
    folder = hub_repo_folder(repo_id)
    why = f"downloads are off ({_offline_reason()})" if offline else f"fetching failed ({failure})"
    raise WeightsNotCachedError(
        f"pretrained weights for {what} not found and {why}: expected the file {filenames[0]!r} of the "
        f"hub repository {repo_id!r}{'@' + revision if revision else ''} in {folder} (the Hugging Face hub "
        f"cache: refs/main and snapshots/<commit>/{filenames[0]}; HF_HUB_CACHE moves it); on a machine with "
        f"network access run: hf download {repo_id} {filenames[0]} --cache-dir <dir> and copy "
        f"<dir>/{folder.name} into {folder.parent}, or use pretrained: false"
    )


def read_weights(path: Path) -> dict[str, Any]:
    """A state dict from a ``.safetensors`` file or a PyTorch file (``weights_only``), one line on failure.

    Raises:
        hierclf.nn.serialization.TensorFileError: the file cannot be read.
    """
    if path.suffix == ".safetensors":
        from hierclf.nn.serialization import TensorFileError

        try:
            from safetensors.torch import load_file

            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:  # noqa: BLE001 - a damaged file, whatever safetensors calls it
            raise TensorFileError(f"cannot read pretrained weights {path}: {_first_line(exc)}") from None
    state = load_tensor_file(path, what="pretrained weights")
    if isinstance(state, dict):
        for key in ("state_dict", "model"):  # checkpoints that wrap the weights
            if isinstance(state.get(key), dict):
                return dict(state[key])
    return dict(state)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__

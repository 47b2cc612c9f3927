"""Shared data of the inference tests: a tiny run trained on PNG files, and edited copies of its tree.

The images are the generated DermaMNIST-layout data (``make_synthetic_dermamnist``) written as PNG files and
listed in CSV files, so training reads image files exactly as ``hierclf predict`` does.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hierclf import Taxonomy
from hierclf.data.datasets import make_synthetic_dermamnist

REPO = Path(__file__).resolve().parents[1]
DERMAMNIST = REPO / "taxonomy" / "dermamnist.yaml"
PROTOCOL = REPO / "taxonomy" / "protocols" / "dermamnist.yaml"


@dataclass(frozen=True)
class Run:
    """A finished training run over PNG files."""

    root: Path
    out: Path
    taxonomy: Path
    config: Path
    csv: dict[str, Path]


def write_png_splits(
    root: Path, *, n: tuple[int, int, int] = (140, 70, 70), seed: int = 0
) -> dict[str, Path]:
    """PNG files of a generated dataset and one CSV (``path,label,id,group``) per split."""
    npz = make_synthetic_dermamnist(
        root / "synthetic.npz", size=28, n_train=n[0], n_val=n[1], n_test=n[2], seed=seed
    )
    data = np.load(npz)
    codes = Taxonomy.from_yaml(DERMAMNIST).codes("dermamnist")
    (root / "img").mkdir(parents=True, exist_ok=True)
    out = {}
    for split in ("train", "val", "test"):
        rows = ["path,label,id,group"]
        for i, (image, label) in enumerate(zip(data[f"{split}_images"], data[f"{split}_labels"][:, 0])):
            Image.fromarray(image).save(root / "img" / f"{split}_{i}.png")
            rows.append(f"img/{split}_{i}.png,{codes[int(label)]},{split}_{i},{split}_g{i // 2}")
        out[split] = root / f"{split}.csv"
        out[split].write_text("\n".join(rows) + "\n", encoding="utf-8")
    return out


def run_config(root: Path, csv: dict[str, Path], taxonomy: Path, out: str = "run", **extra: Any) -> Path:
    """A one-epoch ``small_cnn`` run over the CSV splits."""
    config = {
        "taxonomy": str(taxonomy),
        "data": {
            "source": "csv",
            "size": 28,
            "augment": False,
            "csv": {**{k: str(v) for k, v in csv.items()}, "id_column": "id", "group_column": "group"},
        },
        "backbone": "small_cnn",
        "epochs": 1,
        "batch_size": 35,
        "lr": 0.005,
        "out_dir": str(root / out),
        "seed": 0,
        "device": "cpu",
        "early_stopping": {"metric": "val_auc:malignant"},
        **extra,
    }
    path = root / f"{out}.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


# --- edited trees ------------------------------------------------------------------------------------------


def _node(tree: dict[str, Any], node_id: str) -> dict[str, Any]:
    stack = [tree["root"]]
    while stack:
        node = stack.pop()
        if node["id"] == node_id:
            return node
        stack.extend(node.get("children", []))
    raise KeyError(node_id)


def _drop_codes(node: dict[str, Any]) -> None:
    node.pop("codes", None)
    for child in node.get("children", []):
        _drop_codes(child)


def edited_tree(edit: str) -> dict[str, Any]:
    """The DermaMNIST tree with one edit: ``swap`` two sibling leaves, ``rename`` a leaf, ``add`` a leaf,
    ``remove`` a leaf, or ``move`` a leaf under another parent."""
    tree = copy.deepcopy(Taxonomy.from_yaml(DERMAMNIST).to_dict())
    dermal = _node(tree, "benign_dermal")
    if edit == "swap":
        dermal["children"].reverse()  # dermatofibroma <-> vascular_lesion
    elif edit == "rename":
        _node(tree, "vascular_lesion")["id"] = "vascular_anomaly"
    elif edit == "add":
        _node(tree, "benign")["children"].append({"id": "blue_nevus", "name": "Blue nevus"})
    elif edit == "remove":
        dermal["children"] = [c for c in dermal["children"] if c["id"] != "dermatofibroma"]
        _drop_codes(tree["root"])  # DermaMNIST's codes must stay contiguous; they play no part here
    elif edit == "move":
        vascular = _node(tree, "vascular_lesion")
        dermal["children"].remove(vascular)
        _node(tree, "benign")["children"].insert(0, vascular)
    else:
        raise ValueError(edit)
    return tree


def write_tree(path: Path, tree: dict[str, Any]) -> Path:
    path.write_text(Taxonomy.from_dict(tree).to_yaml(), encoding="utf-8")
    return path

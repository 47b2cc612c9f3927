"""Check a training configuration and everything it reads, without training: ``hierclf train --check``.

The same steps that start a run, in the same order, up to the point where the model would be built: the
settings (read and checked by :func:`~hierclf.train.config.load_train_config`), the taxonomy and the names
the settings give, the data of every split (files, columns, labels, groups), and the head's classes (a
partition that leaves one class is refused here). Every problem is the one-line error the run would raise,
found in seconds rather than after the first epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hierclf.taxonomy.tree import Taxonomy
from hierclf.train.config import TrainConfig
from hierclf.train.distributed import ProcessGroup
from hierclf.train.inputs import head_classes, load_sources

__all__ = ["InputSummary", "check_inputs"]


@dataclass(frozen=True)
class InputSummary:
    """What a run would train on: images per split and the head's classes."""

    taxonomy: str
    images: dict[str, int]
    classes: tuple[str, ...]

    def line(self) -> str:
        sizes = ", ".join(f"{split} {n}" for split, n in self.images.items())
        return f"inputs ok: taxonomy {self.taxonomy!r}; images {sizes}; {len(self.classes)} classes"


def check_inputs(config: TrainConfig) -> InputSummary:
    """Read the taxonomy, the data and the head's classes of ``config`` (a generated dataset is written
    as the run would write it); raise what the run would raise."""
    taxonomy = Taxonomy.from_yaml(config.taxonomy)
    config.check_against(taxonomy)
    sources: dict[str, Any] = load_sources(config, taxonomy, ProcessGroup())
    chosen = head_classes(config, taxonomy, np.asarray(sources["train"].labels))
    classes = chosen.classes if chosen.classes is not None else taxonomy.leaves
    return InputSummary(taxonomy.name, {split: len(src) for split, src in sources.items()}, tuple(classes))

"""A protocol's training settings as one configuration per backbone, for experiments over many runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hierclf.errors import HierclfError

__all__ = ["ExperimentSetup", "experiment_setup", "with_settings"]


class ExperimentSetup:
    """The taxonomy, the protocol and the seed-0 training configuration of an experiment.

    Attributes:
        taxonomy, protocol: loaded and resolved.
        config: the protocol's ``training:`` settings with the experiment's data, seed 0.
        synthetic: the data is generated (reports say so on every section).
    """

    def __init__(self, taxonomy: Any, protocol: Any, config: Any, synthetic: bool) -> None:
        self.taxonomy, self.protocol, self.config, self.synthetic = taxonomy, protocol, config, synthetic


def experiment_setup(
    protocol: str | Path,
    *,
    data: str = "dermamnist",
    data_root: str | Path | None = None,
    out_dir: str | Path,
    taxonomy: str | Path | None = None,
    device: str | None = None,
    workers: int | None = None,
    epochs: int | None = None,
) -> ExperimentSetup:
    """Read the protocol and its ``training:`` mapping as ``hierclf study`` does (:func:`hierclf.study.
    study_configs`), for one seed."""
    from hierclf.study import study_configs

    tax, proto, configs = study_configs(
        protocol,
        data=data,
        data_root=data_root,
        out_dir=out_dir,
        seeds=1,
        epochs=epochs,
        device=device,
        workers=workers,
        taxonomy=taxonomy,
    )
    return ExperimentSetup(tax, proto, configs[0], data == "synthetic")


def with_settings(config: Any, **settings: Any) -> Any:
    """A copy of a training configuration with some settings replaced (dotted keys for nested ones:
    ``{"data.train_fraction": 0.1}``), validated again."""
    from hierclf.train.config import TrainConfig

    data = config.model_dump()
    for key, value in settings.items():
        holder = data
        parts = key.split(".")
        for part in parts[:-1]:
            holder = holder[part]
        holder[parts[-1]] = value
    try:
        out = TrainConfig.model_validate(data)
    except ValueError as exc:
        raise HierclfError(f"settings {settings}: {' '.join(str(exc).split())}") from None
    out._source = config._source
    return out

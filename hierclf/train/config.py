"""The training configuration: a pydantic model read from YAML with every error positioned (file:line:col).

``TrainConfig.from_yaml("run.yaml")`` reads the file with :func:`hierclf.io.yaml_files.load_located` (safe
loader,
duplicate keys refused), validates it (unknown fields, types, ranges, unknown backbone with "did you mean"),
then checks it against the taxonomy (class nodes, the node of an ``val_auc:<node>`` metric). Relative paths
in the file are taken from the file's folder; the resolved configuration (absolute paths, every default
filled in) is written next to the outputs as ``config.resolved.yaml``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from hierclf.classes.esteva import INTERNAL_LABEL_MODES
from hierclf.errors import FileFormatError, Problem, UnknownNameError, did_you_mean
from hierclf.io.problems import problems_from_validation_error
from hierclf.io.yaml_files import LocatedYAML, PathKey, load_located, load_located_file
from hierclf.options import look_up_option, option_validator

__all__ = [
    "BackboneFactoryConfig",
    "ClassesConfig",
    "ConfigError",
    "ColumnOptions",
    "CsvOptions",
    "DataConfig",
    "EarlyStoppingConfig",
    "LossConfig",
    "SplitOptions",
    "SyntheticOptions",
    "TrainConfig",
    "load_train_config",
]

_PATH_FIELDS: tuple[PathKey, ...] = (
    ("taxonomy",),
    ("protocol",),
    ("out_dir",),
    ("data", "root"),
    ("data", "npz"),
    ("data", "csv", "train"),
    ("data", "csv", "val"),
    ("data", "csv", "test"),
    ("data", "csv", "image_root"),
    ("data", "labels"),
    ("data", "metadata"),
    ("data", "images"),
    ("data", "split", "file"),
)
METRICS = ("val_loss", "val_accuracy", "val_balanced_accuracy")
#: what ``log:`` may name besides the files every run writes (``history.jsonl``, ``history.json``)
LOGGERS = ("tensorboard",)


def _backbone_name(value: str) -> str:
    """A registered backbone or ``timm/<model>`` (``hierclf.nn.backbones.resolve_backbone_name``)."""
    from hierclf.nn.backbones import resolve_backbone_name

    try:
        return resolve_backbone_name(value)
    except UnknownNameError as exc:  # pydantic reports ValueErrors as positioned validation errors
        raise ValueError(str(exc)) from None


def _loss_names() -> tuple[str, ...]:
    """Names of the registered losses (``hierclf.nn.losses.LOSSES``)."""
    from hierclf.nn.losses import LOSSES

    return LOSSES.names()


def _data_source_names() -> tuple[str, ...]:
    """Names of the data sources (``hierclf.data.sources.DATA_SOURCES``)."""
    from hierclf.data.sources import DATA_SOURCES

    return DATA_SOURCES.names()


def _sampler_names() -> tuple[str, ...]:
    """Names of the registered samplers (``hierclf.data.sampling.SAMPLERS``)."""
    from hierclf.data.sampling import SAMPLERS

    return SAMPLERS.names()


# names that registries define: the config accepts exactly what the code can build
_BackboneName = Annotated[str, AfterValidator(_backbone_name)]
_LossName = Annotated[str, AfterValidator(option_validator("loss", _loss_names))]
_SamplerName = Annotated[str, AfterValidator(option_validator("sampler", _sampler_names))]
_DataSourceName = Annotated[str, AfterValidator(option_validator("data source", _data_source_names))]
_InternalLabels = Annotated[
    str, AfterValidator(option_validator("internal_labels mode", lambda: INTERNAL_LABEL_MODES))
]


def _no_nul(value: Path) -> Path:
    """A path with a NUL character cannot be opened (the operating system refuses it)."""
    if "\x00" in str(value):
        raise ValueError("a path cannot contain a NUL character")
    return value


#: a path in a training configuration
FilePath = Annotated[Path, AfterValidator(_no_nul)]

#: bounds of sizes and counts: far above any real run, low enough that a typo cannot exhaust the machine
MAX_IMAGES = 100_000_000
MAX_STEPS = 1_000_000
#: seeds feed numpy's and torch's generators through the formulas of hierclf.train.seeding
MAX_SEED = 2**31 - 1


class ConfigError(FileFormatError):
    """A training configuration is invalid; every problem is listed with its position."""

    def __init__(self, problems: Any) -> None:
        super().__init__(problems, what="training configuration")


class _Model(BaseModel):
    """Settings models refuse unknown fields and validate on assignment too."""

    # inf and nan are refused everywhere (`lr: .inf` would train to all-NaN predictions)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class SyntheticOptions(_Model):
    """A generated DermaMNIST-layout npz (``hierclf.data.datasets.make_synthetic_dermamnist``), written into
    ``data.root`` on first use."""

    n_train: int = Field(700, ge=7, le=MAX_IMAGES)
    n_val: int = Field(140, ge=7, le=MAX_IMAGES)
    n_test: int = Field(140, ge=7, le=MAX_IMAGES)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    noise: float = Field(12.0, ge=0, le=255)


class CsvOptions(_Model):
    """Users' own images: one CSV per split (``hierclf.data.datasets.CsvImageDataset``)."""

    train: FilePath
    val: FilePath
    test: FilePath
    image_root: FilePath | None = None
    path_column: str = "path"
    label_column: str = "label"
    group_column: str | None = None
    id_column: str | None = None


class ColumnOptions(_Model):
    """Column names of a published-layout source, overriding its preset's (all a ``generic`` source has).

    ``metadata`` maps a standard name (``sex``, ``age``, ``site``, ``dx_type``, ``fitzpatrick``, ...) to the
    column that holds it; those columns travel into the prediction files.
    """

    id: str | None = None
    label: str | None = None
    path: str | None = None
    patient: str | None = None
    lesion: str | None = None
    suffix: str | None = None
    metadata: dict[str, str] | None = None

    def overrides(self) -> dict[str, Any]:
        """The columns that are set (``hierclf.data.sources.source_spec``'s ``columns``)."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class SplitOptions(_Model):
    """How hierclf splits a published-layout source: grouped (patient, else lesion), stratified by label,
    made once and written to ``file``, which this run and every later one reads (``docs/data.md``)."""

    #: the split file; default ``<out_dir>/split.csv`` (a study shares one: ``OUT/split.csv``)
    file: FilePath | None = None
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.2, ge=0, lt=1)
    #: the split's own seed, independent of the training seed (a study's seeds share one split)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    by: Literal["auto", "patient", "lesion", "image"] = "auto"

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> SplitOptions:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"val_fraction ({self.val_fraction}) + test_fraction ({self.test_fraction}) must be below 1"
            )
        return self


class DataConfig(_Model):
    """Where the images come from and how large they are.

    ``source``: ``dermamnist`` (the official, image-level split), ``synthetic``, ``csv`` (one CSV per split)
    or a published layout split by hierclf: ``ham10000``, ``isic2019``, ``isic2020``, ``generic``
    (``labels`` + ``images``, or the download folder ``root``; ``docs/data.md``).
    """

    source: _DataSourceName = "dermamnist"
    root: FilePath = Path("data")
    npz: FilePath | None = None
    size: int = Field(28, ge=8, le=4096)
    download: bool = False
    augment: bool = True
    pipeline: Literal["auto", "per_sample", "batched"] = "auto"
    synthetic: SyntheticOptions = Field(default_factory=SyntheticOptions)  # type: ignore[arg-type]
    csv: CsvOptions | None = None
    #: published layouts: the CSV of ids and labels (default: found in ``root`` by its usual name)
    labels: FilePath | None = None
    #: a second CSV joined on the id (ISIC 2019's metadata; default: found in ``root``)
    metadata: FilePath | None = None
    #: the image folder, searched recursively (default: ``root``)
    images: FilePath | None = None
    columns: ColumnOptions | None = None
    #: the taxonomy's ``source_aliases`` scopes the labels see first (default: the preset's)
    alias_scopes: list[str] | None = None
    split: SplitOptions = Field(default_factory=SplitOptions)  # type: ignore[arg-type]
    #: the side the model sees; None (``auto``): the pretrained weights' resolution with ``pretrained: true``,
    #: else ``size``
    input_size: int | None = Field(None, ge=8, le=4096)
    #: per-channel normalisation; None (``auto``): the backbone's pretrained statistics, else ImageNet's
    mean: list[float] | None = None
    std: list[float] | None = None
    #: keep this fraction of each training class, whole groups (patients / lesions) at a time (label
    #: efficiency; ``hierclf.train.subsample``); 1 keeps everything
    train_fraction: float = Field(1.0, gt=0, le=1)
    subsample_seed: int = Field(0, ge=0, le=MAX_SEED)
    #: train on CSV lists whose splits share groups (patients / lesions) anyway; refused by default
    #: (``hierclf train --allow-leakage``): a warning then, and every evaluation of the predictions says
    #: LEAKAGE
    allow_leakage: bool = False

    @field_validator("input_size", "mean", "std", mode="before")
    @classmethod
    def _auto(cls, value: Any) -> Any:
        """``auto`` is None: follow the backbone."""
        return None if isinstance(value, str) and value.strip().lower() == "auto" else value

    @field_validator("mean", "std")
    @classmethod
    def _rgb(cls, value: list[float] | None, info: Any) -> list[float] | None:
        """Three values (R, G, B); std values positive."""
        if value is None:
            return value
        if len(value) != 3:
            raise ValueError(f"{info.field_name} needs 3 values (R, G, B) or auto, got {len(value)}")
        if info.field_name == "std" and min(value) <= 0:
            raise ValueError(f"std values must be positive, got {value}")
        return value


class ClassesConfig(_Model):
    """The head's classes: the taxonomy leaves, Esteva's partition, or an explicit cut of the tree."""

    kind: Literal["leaves", "partition", "cut"] = "leaves"
    max_class_size: int = Field(1000, ge=1, le=MAX_IMAGES)
    inclusive: bool = False
    internal_labels: _InternalLabels = "residual"
    nodes: list[str] | None = None


class LossConfig(_Model):
    """Arguments of ``hierclf.nn.losses.build_loss`` (unset options keep that function's defaults)."""

    name: _LossName = "ce"
    #: ``weighted_ce`` class weights: a scheme (``inverse``, ``effective``, ``none``) or one weight per class
    weights: str | list[float] | None = None
    beta: float | None = Field(None, gt=0, lt=1)
    gamma: float | None = Field(None, ge=0, le=100)
    #: ``focal`` per-class weights: a scheme or one weight per class (Lin et al.'s scalar alpha is for
    #: binary detection; in a softmax over classes only per-class weights change the optimum)
    alpha: str | list[float] | None = None
    gamma_pos: float | None = Field(None, ge=0, le=100)
    gamma_neg: float | None = Field(None, ge=0, le=100)
    clip: float | None = Field(None, ge=0, lt=1)

    @model_validator(mode="before")
    @classmethod
    def _name_only(cls, value: Any) -> Any:
        """``loss: focal`` is short for ``loss: {name: focal}``."""
        return {"name": value} if isinstance(value, str) else value

    @field_validator("weights", "alpha", mode="before")
    @classmethod
    def _per_class(cls, value: Any, info: Any) -> Any:
        """A class-weight scheme name (looked up with "did you mean") or a list of non-negative weights."""
        from hierclf.classes.weights import WEIGHT_SCHEMES

        if isinstance(value, str):
            try:
                return look_up_option(value, WEIGHT_SCHEMES, kind="class weight scheme")
            except UnknownNameError as exc:
                raise ValueError(str(exc)) from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ValueError(
                f"expected a scheme name ({', '.join(WEIGHT_SCHEMES)}) or a list with one weight per "
                f"class, got the single number {value!r}"
            )
        if isinstance(value, list) and not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
            for v in value
        ):
            raise ValueError(f"{info.field_name} must list finite non-negative numbers, one per class")
        return value

    @model_validator(mode="after")
    def _options_of_this_loss(self) -> LossConfig:
        """Refuse options that the named loss does not take."""
        # build_loss would refuse these at the start of training (its table: hierclf.nn.losses.LOSSES); say so
        # where the file sets them
        from hierclf.nn.losses import LOSSES

        takes = [k for k in LOSSES.get(self.name).params if k in type(self).model_fields]
        given = [k for k, v in self.params().items() if k not in takes]
        if given:
            raise ValueError(
                f"loss {self.name!r} does not take {', '.join(given)} (it takes: "
                f"{', '.join(takes) or 'no options besides label_smoothing'})"
            )
        return self

    def params(self) -> dict[str, Any]:
        """The options that are set, as keyword arguments of ``build_loss``."""
        return {k: v for k, v in self.model_dump().items() if k != "name" and v is not None}


class EarlyStoppingConfig(_Model):
    """Model selection and early stopping on a validation metric.

    ``metric``: ``val_loss`` (cross-entropy of the head's probabilities, lower is better), ``val_accuracy``,
    ``val_balanced_accuracy`` (mean per-class recall over the head's classes), ``val_auc:<node>`` (ROC AUC
    of the rolled-up probability of a taxonomy node against the rest, e.g. ``val_auc:malignant``) or
    ``task_auc:<task>`` (ROC AUC of a task of the ``protocol``: P(positive) / (P(positive) + P(negative))
    on the samples under either side).
    ``patience``: stop after this many epochs without improvement; None trains all epochs (the best epoch
    is still the one kept).
    """

    metric: str = "val_loss"
    patience: int | None = Field(None, ge=1, le=MAX_STEPS)

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        """A class metric, ``val_auc:<node>`` or ``task_auc:<task>`` (names: ``check_against``)."""
        prefix, _, name = value.partition(":")
        if value in METRICS or (prefix in ("val_auc", "task_auc") and name):
            return value
        hint = did_you_mean(value, [*METRICS, "val_auc:<node>", "task_auc:<task>"])
        suffix = f"; did you mean {hint[0]!r}?" if hint else ""
        raise ValueError(
            f"unknown metric {value!r} (expected one of {', '.join(METRICS)}, val_auc:<node> or "
            f"task_auc:<task>){suffix}"
        )

    @property
    def mode(self) -> Literal["min", "max"]:
        """``min`` for ``val_loss``, ``max`` for every other metric."""
        return "min" if self.metric == "val_loss" else "max"


class BackboneFactoryConfig(_Model):
    """Your own backbone: ``factory`` names ``package.module:function``, called as ``function(**kwargs)``
    and returning ``(module, n_features)`` (the contract: ``hierclf.nn.backbone_factory``)."""

    factory: str
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("factory")
    @classmethod
    def _importable(cls, value: str) -> str:
        """The module imports and has the function (the contract itself is checked when it is built)."""
        from hierclf.nn.backbone_factory import import_factory
        from hierclf.nn.backbones import BackboneError

        try:
            import_factory(value)
        except BackboneError as exc:
            raise ValueError(str(exc).removeprefix(f"backbone.factory {value!r}: ")) from None
        return value


def _backbone_kind(value: Any) -> str:
    """Which form ``backbone:`` takes: a mapping is a factory, anything else a name."""
    return "factory" if isinstance(value, (dict, BackboneFactoryConfig)) else "name"


_Backbone = Annotated[
    Annotated[_BackboneName, Tag("name")] | Annotated[BackboneFactoryConfig, Tag("factory")],
    Discriminator(_backbone_kind),
]
#: the union's tags, which pydantic puts into error locations (``backbone.factory.factory``); left out
_BACKBONE_TAGS = ("name", "factory")


class TrainConfig(_Model):
    """Everything a training run needs; see ``docs/training.md`` for each field.

    Example:
        >>> cfg = TrainConfig(taxonomy="taxonomy/dermamnist.yaml", backbone="small_cnn", lr=3e-4)
        >>> cfg.regime, cfg.optimizer, cfg.early_stopping.metric
        ('full', 'adamw', 'val_loss')
    """

    taxonomy: FilePath
    data: DataConfig = Field(default_factory=DataConfig)  # type: ignore[arg-type]
    classes: ClassesConfig = Field(default_factory=ClassesConfig)  # type: ignore[arg-type]
    backbone: _Backbone = "small_cnn"
    pretrained: bool = False
    regime: Literal["linear_probe", "full", "gradual_unfreeze"] = "full"
    unfreeze_every: int = Field(1, ge=1, le=MAX_STEPS)
    lr_decay: float = Field(0.1, gt=0, le=1)
    freeze_batchnorm: bool = False
    sync_batchnorm: bool = True
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0, lt=1)
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(1e-4, ge=0, le=10)
    epochs: int = Field(10, ge=1, le=MAX_STEPS)
    batch_size: int = Field(64, ge=1, le=MAX_IMAGES)
    eval_batch_size: int | None = Field(None, ge=1, le=MAX_IMAGES)
    warmup_epochs: float = Field(1.0, ge=0, le=MAX_STEPS)
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    loss: LossConfig = Field(default_factory=LossConfig)  # type: ignore[arg-type]
    sampler: _SamplerName = "uniform"
    sampler_beta: float = Field(0.999, gt=0, lt=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    amp: Literal["auto"] | bool = "auto"
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)  # type: ignore[arg-type]
    protocol: FilePath | None = None
    seed: int = Field(0, ge=0, le=MAX_SEED)
    deterministic: bool = False
    device: str = "auto"
    workers: int = Field(0, ge=0, le=256)
    out_dir: FilePath = Path("runs/train")
    max_steps_per_epoch: int | None = Field(None, ge=1, le=MAX_STEPS)
    #: scalars written besides history.jsonl: ``tensorboard`` (needs the tensorboard package)
    log: list[str] = Field(default_factory=list)
    #: the YAML document the config was read from (positions for errors found when the run is built)
    _source: LocatedYAML | None = PrivateAttr(default=None)

    @field_validator("pretrained")
    @classmethod
    def _factory_loads_its_own_weights(cls, value: bool, info: Any) -> bool:
        """``pretrained: true`` needs weights hierclf knows; a factory loads its own."""
        if value and isinstance(info.data.get("backbone"), BackboneFactoryConfig):
            raise ValueError(
                "a factory backbone loads its own weights: pass them through backbone.kwargs and set "
                "pretrained: false"
            )
        return value

    @field_validator("log", mode="before")
    @classmethod
    def _loggers(cls, value: Any) -> Any:
        """``log: tensorboard`` or a list; ``none`` or null for none; each name known and installed."""
        if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
            return []
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list):
            return names  # pydantic says what was expected
        out = []
        for name in names:
            try:
                canonical = look_up_option(name, LOGGERS, kind="logger")
            except UnknownNameError as exc:
                raise ValueError(str(exc)) from None
            import importlib.util

            if importlib.util.find_spec(canonical) is None:
                raise ValueError(f"{canonical} needs the {canonical} package (pip install {canonical})")
            out.append(canonical)
        return out

    @field_validator("label_smoothing")
    @classmethod
    def _smoothing_needs_cross_entropy(cls, value: float, info: Any) -> float:
        """Label smoothing only with the losses that take it."""
        from hierclf.nn.losses import LOSSES

        loss = info.data.get("loss")
        if value and loss is not None and "label_smoothing" not in LOSSES.get(loss.name).params:
            raise ValueError(f"label_smoothing applies to the ce and weighted_ce losses, not {loss.name!r}")
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        """``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:<index>``."""
        base = value.split(":", 1)[0]
        index = value.split(":", 1)[1] if ":" in value else "0"
        if base not in ("auto", "cpu", "cuda", "mps") or not index.isdigit():
            raise ValueError(f"unknown device {value!r} (expected auto, cpu, cuda or cuda:<index>)")
        return value

    # -- reading and writing ---------------------------------------------------------------------------

    @classmethod
    def from_yaml(
        cls, path: str | Path, overrides: dict[str, Any] | None = None, check_taxonomy: bool = True
    ) -> TrainConfig:
        """Read and validate a YAML file; see :func:`load_train_config`."""
        return load_train_config(path, overrides, check_taxonomy)

    def to_yaml(self) -> str:
        """The configuration as YAML (every field, paths as strings)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def resolved(self, base: Path) -> TrainConfig:
        """A copy with relative paths taken from ``base`` (made absolute)."""
        data = self.model_dump()
        for key in _PATH_FIELDS:
            holder: Any = data
            for part in key[:-1]:
                holder = holder.get(part) if isinstance(holder, dict) else None
            if isinstance(holder, dict) and holder.get(key[-1]) is not None:
                value = Path(holder[key[-1]]).expanduser()
                holder[key[-1]] = value if value.is_absolute() else (base / value).resolve()
        out = type(self).model_validate(data)
        out._source = self._source
        return out

    def check_against(self, taxonomy: Any, doc: LocatedYAML | None = None) -> None:
        """Check the names the config gives against the taxonomy; raise :class:`ConfigError` listing each
        problem (positioned in ``doc``, the file the config came from, when given)."""
        found = [*_class_problems(self, taxonomy), *_metric_problems(self, taxonomy), *_data_problems(self)]
        if not found:
            return
        problems = [
            doc.problem(path, message, code="config") if doc is not None else Problem(message, code="config")
            for path, message in found
        ]
        raise ConfigError(sorted(problems, key=lambda p: (p.line or 0, p.column or 0)))


#: a problem found in a config: where (the path of keys) and what
_Found = tuple[PathKey, str]


def _class_problems(config: TrainConfig, taxonomy: Any) -> list[_Found]:
    """``classes.nodes``: required for a cut and known to the taxonomy; refused for the other kinds."""
    classes = config.classes
    if classes.kind != "cut":
        if classes.nodes:
            return [
                (
                    ("classes", "nodes"),
                    f"classes.nodes is only used with kind 'cut' (kind is {classes.kind!r})",
                )
            ]
        return []
    if not classes.nodes:
        return [(("classes", "kind"), "classes.kind 'cut' needs classes.nodes: the nodes of the cut")]
    found: list[_Found] = []
    for i, name in enumerate(classes.nodes):
        try:
            taxonomy.resolve(name)
        except UnknownNameError as exc:
            found.append((("classes", "nodes", i), f"classes.nodes: {exc}"))
    return found


def _metric_problems(config: TrainConfig, taxonomy: Any) -> list[_Found]:
    """The node of ``val_auc:<node>`` and the protocol task of ``task_auc:<task>`` must exist."""
    metric = config.early_stopping.metric
    where: PathKey = ("early_stopping", "metric")
    kind, _, name = metric.partition(":")
    try:
        if kind == "val_auc":
            taxonomy.resolve(name)
        elif kind == "task_auc":
            if config.protocol is None:
                needs = "needs a protocol (the protocol: field) that defines the task"
                return [(where, f"early_stopping.metric {metric!r} {needs}")]
            from hierclf.evaluation.protocol_format import load_protocol

            load_protocol(config.protocol, taxonomy).task(name)
    except UnknownNameError as exc:
        return [(where, f"early_stopping.metric: {exc}")]
    return []


def _data_problems(config: TrainConfig) -> list[_Found]:
    """``data.source: csv`` needs ``data.csv``; the published-layout settings belong to those sources."""
    from hierclf.data.sources import PRESETS

    data = config.data
    if data.source == "csv" and data.csv is None:
        return [(("data", "source"), "data.source 'csv' needs data.csv with train, val and test CSV files")]
    if data.source in PRESETS:
        return (
            [(("data", "csv"), f"data.csv is for data.source 'csv', not {data.source!r}")] if data.csv else []
        )
    given = [k for k in ("labels", "metadata", "images", "columns", "alias_scopes") if getattr(data, k)]
    return [
        ((("data", k)), f"data.{k} is for the sources {', '.join(PRESETS.names())}, not {data.source!r}")
        for k in given
    ]


def load_train_config(
    path: str | Path, overrides: dict[str, Any] | None = None, check_taxonomy: bool = True
) -> TrainConfig:
    """Read a training config YAML; relative paths are taken from the file's folder.

    Args:
        path: the YAML file.
        overrides: dotted keys (``"seed"``, ``"data.root"``) replacing values of the file (command-line
            options); relative override paths are taken from the current directory.
        check_taxonomy: also load the taxonomy and check the node names the config uses.

    Raises:
        ConfigError: every problem, each as ``file:line:col: error: message``.
    """
    doc = load_located_file(path)
    if doc.problems:
        raise ConfigError(doc.problems)
    data = doc.data if doc.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError([doc.problem((), "expected a mapping of training settings at the top")])
    config = validate_config(data, doc)
    base = Path(path).resolve().parent
    config = config.resolved(base)
    if overrides:
        merged = config.model_dump()
        for key, value in overrides.items():
            holder = merged
            parts = key.split(".")
            for part in parts[:-1]:
                holder = holder.setdefault(part, {})
            holder[parts[-1]] = value
        config = validate_config(merged, None).resolved(Path.cwd())
    if check_taxonomy:
        from hierclf.taxonomy.tree import Taxonomy

        taxonomy = Taxonomy.from_yaml(config.taxonomy)
        config.check_against(taxonomy, doc)
    config._source = doc
    return config


def validate_config(data: dict[str, Any], doc: LocatedYAML | None) -> TrainConfig:
    """``TrainConfig.model_validate`` with pydantic's errors turned into positioned problems."""
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        errors = _without_union_tags(exc)
        raise ConfigError(problems_from_validation_error(errors, TrainConfig, doc, code="config")) from None


def _without_union_tags(exc: ValidationError) -> list[dict[str, Any]]:
    """The errors with the ``backbone`` union's tag left out of their locations, so they point at the
    place in the file (``backbone.factory``, not ``backbone.factory.factory``)."""
    errors = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        if len(loc) > 1 and loc[0] == "backbone" and loc[1] in _BACKBONE_TAGS:
            loc = loc[:1] + loc[2:]
        errors.append({**err, "loc": loc})
    return errors


def config_from_text(text: str, file: str = "<string>") -> TrainConfig:
    """Validate config YAML given as text (no path resolution, no taxonomy check); for tests and tools."""
    doc = load_located(text, file)
    if doc.problems:
        raise ConfigError(doc.problems)
    if not isinstance(doc.data, dict):
        raise ConfigError([doc.problem((), "expected a mapping of training settings at the top")])
    return validate_config(doc.data, doc)

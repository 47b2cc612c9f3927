"""The evaluation protocol: a pre-registered, machine-checked description of how a model will be judged.

A protocol is written once, before any run (seed 001's rule 5), as a YAML file next to the taxonomy::

    name: dermamnist_screening
    error_profile: Miss at most 5 % of melanomas; report the specificity we pay for it.
    target_sensitivity: 0.95
    primary_metric: {metric: specificity_at_target_sensitivity, task: melanoma_vs_nevus}
    group_column: lesion_id
    tasks:
      - {name: melanoma_vs_nevus, positive: [malignant_melanocytic], negative: [benign_melanocytic]}
    partitions:
      - {name: three_way, nodes: [benign, melanoma, keratinocyte_carcinoma]}
    cancer_node: malignant

:func:`load_protocol` validates the file with pydantic (unknown fields are errors, every problem carries
``file:line:column``) and then against the taxonomy: task nodes must exist ("did you mean ..."), the
positive and negative sides of a task must not share a leaf, each partition must be a cut of the tree, and a
pre-registered ``cancer_sensitivity`` needs a declared ``cancer_node`` that its partition can express.
Node names are resolved to ids (aliases allowed). ``docs/protocol-format.md`` documents every field.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, model_validator

from hierclf.errors import FileFormatError, Problem, TaxonomyError, UnknownNameError
from hierclf.io.problems import ValidationIssue, dotted, problems_from_validation_error
from hierclf.io.yaml_files import LocatedYAML, PathKey, load_located, load_located_file
from hierclf.taxonomy.tree import Taxonomy

__all__ = [
    "BINARY_METRICS",
    "PARTITION_METRICS",
    "BootstrapSpec",
    "IntervalSpec",
    "OPERATING_RULES",
    "OperatingPointSpec",
    "SubgroupOptions",
    "PartitionSpec",
    "PrimaryMetric",
    "Protocol",
    "ProtocolError",
    "TaskSpec",
    "cancer_classes",
    "load_protocol",
    "protocol_from_dict",
    "protocol_from_text",
]

#: Task and partition names: snake_case, used in file names of figures.
NAME_PATTERN = r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$"

#: Metrics a binary task can pre-register (all measured on test; thresholds chosen on validation).
BINARY_METRICS = (
    "specificity_at_target_sensitivity",
    "sensitivity_at_target_sensitivity",
    "auc",
    "partial_auc",
    "ppv",
    "npv",
)
#: Metrics a partition (cut) can pre-register.
PARTITION_METRICS = ("balanced_accuracy", "macro_auc", "cancer_sensitivity")

Name = Annotated[StrictStr, Field(pattern=NAME_PATTERN)]
NodeName = Annotated[StrictStr, Field(min_length=1)]
Unit = Annotated[float, Field(gt=0.0, lt=1.0)]


class ProtocolError(FileFormatError):
    """A protocol file is invalid or does not fit the taxonomy."""

    def __init__(self, problems: Any) -> None:
        super().__init__(problems, what="protocol")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BootstrapSpec(_Model):
    """How confidence intervals are computed: a percentile bootstrap that resamples groups."""

    # Upper bounds keep a one-line protocol from asking for days of work or an unbounded allocation:
    # past 100,000 replicates the Monte Carlo error of a 95 % percentile is far below the interval's width.
    replicates: StrictInt = Field(
        1000, ge=1, le=100_000, description="Bootstrap replicates (default 1000, at most 100,000)."
    )
    ci_level: Unit = Field(0.95, description="Confidence level of the intervals, 0 < x < 1 (default 0.95).")
    seed: StrictInt = Field(
        0, ge=0, le=2**63 - 1, description="Seed of the bootstrap's random draws (default 0)."
    )


class IntervalSpec(_Model):
    """Which interval a proportion gets (sensitivity, specificity, PPV, NPV, recall, accuracy)."""

    proportions: Literal["auto", "bootstrap", "clopper_pearson", "wilson"] = Field(
        "auto",
        description="`auto` (default): the percentile bootstrap, unless its interval has zero width or the "
        "successes or failures number fewer than `min_events`: then `exact`; `bootstrap`, "
        "`clopper_pearson` or `wilson`: always that one. Binomial intervals use the clustered effective "
        "counts (Korn & Graubard) when images come in groups.",
    )
    exact: Literal["clopper_pearson", "wilson"] = Field(
        "clopper_pearson", description="The binomial interval `auto` falls back to (default clopper_pearson)."
    )
    min_events: StrictInt = Field(
        10,
        ge=0,
        le=1_000_000,
        description="`auto` uses the binomial interval below this many successes or failures.",
    )


class ShiftSpec(_Model):
    """A pre-registered distribution shift (``hierclf shift``): train on some levels of a metadata column,
    test in distribution and on the other levels (seed 004's out-of-distribution generalisation)."""

    column: StrictStr = Field(min_length=1, description="The metadata column that shifts, e.g. `dataset`.")
    train_levels: list[StrictStr] = Field(
        min_length=1, description="The levels trained on (in distribution)."
    )
    test_levels: list[StrictStr] | None = Field(
        None, min_length=1, description="The out-of-distribution levels (default: every other level)."
    )

    @model_validator(mode="after")
    def _disjoint(self) -> ShiftSpec:
        both = sorted(set(self.train_levels) & set(self.test_levels or ()))
        if both:
            raise ValueError(f"levels {both} are both trained on and tested out of distribution")
        return self


class SubgroupOptions(_Model):
    """How one subgroup column is broken down: numeric bands, and the level every other is compared with."""

    bands: list[float] | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="Increasing band edges for a numeric column (e.g. age `[30, 45, 60]` gives `< 30`, "
        "`[30, 45)`, `[45, 60)`, `>= 60`); values that are not numbers fall in `(missing)`.",
    )
    reference: StrictStr | None = Field(
        None,
        description="The level every other level is compared with (default: each level against the rest).",
    )

    @model_validator(mode="after")
    def _increasing(self) -> SubgroupOptions:
        if self.bands is not None:
            edges = np.asarray(self.bands, dtype=np.float64)
            if not np.isfinite(edges).all() or (np.diff(edges) <= 0).any():
                raise ValueError(f"bands must be finite and strictly increasing, got {self.bands}")
        return self


class PrimaryMetric(_Model):
    """The pre-registered headline number: one metric on one task (or one partition)."""

    metric: Literal[BINARY_METRICS + PARTITION_METRICS] = Field(  # type: ignore[valid-type]
        description="For a task: "
        + ", ".join(BINARY_METRICS)
        + "; for a partition: "
        + ", ".join(PARTITION_METRICS)
        + "."
    )
    task: Name | None = Field(None, description="The task it is measured on (a name from `tasks`).")
    partition: Name | None = Field(
        None, description="The partition it is measured on (a name from `partitions`)."
    )

    @model_validator(mode="after")
    def _one_target(self) -> PrimaryMetric:
        if (self.task is None) == (self.partition is None):
            raise ValueError("give exactly one of 'task' or 'partition'")
        if self.task is not None and self.metric not in BINARY_METRICS:
            raise ValueError(
                f"metric {self.metric!r} is a partition metric; a task takes one of "
                + ", ".join(BINARY_METRICS)
            )
        if self.partition is not None and self.metric not in PARTITION_METRICS:
            raise ValueError(
                f"metric {self.metric!r} is a task metric; a partition takes one of "
                + ", ".join(PARTITION_METRICS)
            )
        return self

    @property
    def target(self) -> str:
        return self.task if self.task is not None else self.partition  # type: ignore[return-value]


#: The rules a task's operating point can be chosen by (always on validation).
OPERATING_RULES = ("target_sensitivity", "target_specificity", "minimum_cost")


class OperatingPointSpec(_Model):
    """How a task's threshold is chosen on validation: at a target sensitivity (the protocol's
    ``target_sensitivity`` unless ``target`` is given), at a target specificity, or at the minimum expected
    cost per case under stated costs of a false negative and a false positive and a stated prevalence."""

    rule: Literal[OPERATING_RULES] = Field(  # type: ignore[valid-type]
        "target_sensitivity", description="One of " + ", ".join(f"`{r}`" for r in OPERATING_RULES) + "."
    )
    target: Unit | None = Field(
        None,
        description="The sensitivity (`target_sensitivity`; default the protocol's) or specificity "
        "(`target_specificity`, required) the threshold must reach on validation.",
    )
    cost_false_negative: float | None = Field(
        None, gt=0, description="`minimum_cost`: the cost of missing a positive (any unit)."
    )
    cost_false_positive: float | None = Field(
        None, gt=0, description="`minimum_cost`: the cost of calling a negative positive (same unit)."
    )
    prevalence: Unit | None = Field(
        None, description="`minimum_cost`: the prevalence the expected cost is computed at."
    )

    @model_validator(mode="after")
    def _options_fit_rule(self) -> OperatingPointSpec:
        costs = (self.cost_false_negative, self.cost_false_positive, self.prevalence)
        if self.rule == "minimum_cost":
            if None in costs:
                raise ValueError(
                    "rule minimum_cost needs cost_false_negative, cost_false_positive and prevalence"
                )
            if self.target is not None:
                raise ValueError("rule minimum_cost takes no target")
        elif any(c is not None for c in costs):
            raise ValueError(f"costs and prevalence belong to rule minimum_cost, not {self.rule}")
        if self.rule == "target_specificity" and self.target is None:
            raise ValueError("rule target_specificity needs a target (e.g. 0.9)")
        return self

    def describe(self) -> str:
        """The rule in the report's words, e.g. ``sensitivity >= 0.95 on validation``."""
        if self.rule == "minimum_cost":
            return (
                "minimum expected cost on validation (cost of a false negative "
                f"{self.cost_false_negative:g}, of a false positive {self.cost_false_positive:g}, at "
                f"prevalence {self.prevalence:g})"
            )
        what = "sensitivity" if self.rule == "target_sensitivity" else "specificity"
        return f"{what} >= {self.target:g} on validation"


class TaskSpec(_Model):
    """A binary clinical question: samples under ``positive`` nodes against those under ``negative`` nodes."""

    name: Name = Field(description="snake_case name, e.g. `melanoma_vs_nevus`.")
    description: StrictStr = Field("", description="Free text.")
    positive: list[NodeName] = Field(min_length=1, description="Nodes (ids or aliases), positive class.")
    negative: list[NodeName] = Field(min_length=1, description="Nodes (ids or aliases), negative class.")
    operating_point: OperatingPointSpec | None = Field(
        None,
        description="How the threshold is chosen on validation (default: the protocol's target "
        "sensitivity), e.g. `{rule: target_specificity, target: 0.9}` or `{rule: minimum_cost, "
        "cost_false_negative: 20, cost_false_positive: 1, prevalence: 0.02}`.",
    )
    prevalences: list[Unit] = Field(
        default_factory=list,
        description="Prevalences (of the clinic, not the test mix) at which PPV, NPV and the number "
        "needed to biopsy are reported by Bayes' rule, e.g. `[0.02, 0.1]`.",
    )


class PartitionSpec(_Model):
    """A cut of the tree (every leaf under exactly one node) for multi-class summaries."""

    name: Name = Field(description="snake_case name, e.g. `three_way`.")
    nodes: list[NodeName] = Field(min_length=2, description="The classes of the cut (ids or aliases).")


class Protocol(_Model):
    """A validated evaluation protocol; after :func:`load_protocol`, every node name is a taxonomy id.

    Example:
        >>> from hierclf import Taxonomy
        >>> tax = Taxonomy.from_yaml("taxonomy/dermamnist.yaml")
        >>> p = protocol_from_dict({"name": "demo", "target_sensitivity": 0.95, "group_column": None,
        ...     "primary_metric": {"metric": "auc", "task": "mel_vs_nv"},
        ...     "tasks": [{"name": "mel_vs_nv", "positive": ["mel"], "negative": ["nv"]}]}, tax)
        >>> p.tasks[0].positive, p.min_seeds, p.bootstrap.replicates
        (['melanoma'], 5, 1000)
    """

    name: Name = Field(description="snake_case name of the protocol.")
    description: StrictStr = Field("", description="Free text.")
    error_profile: StrictStr = Field(
        "", description="The clinical error profile in words (which error is worse, and by how much)."
    )
    target_sensitivity: Unit = Field(
        description="Sensitivity the operating point must reach, 0 < x < 1, "
        "e.g. 0.95. Thresholds are chosen on validation to reach it."
    )
    primary_metric: PrimaryMetric
    min_seeds: StrictInt = Field(
        5, ge=1, le=1000, description="Fewer seeds than this is a loud warning (default 5, at most 1000)."
    )
    bootstrap: BootstrapSpec = Field(
        BootstrapSpec(replicates=1000, ci_level=0.95, seed=0),
        description="Confidence intervals (defaults apply).",
    )
    group_column: StrictStr | None = Field(
        description="Column of patients or lesions that the bootstrap "
        "resamples (e.g. `lesion_id`); `null` = rows, with a warning."
    )
    min_group_size: StrictInt = Field(
        30, ge=1, le=10**9, description="Subgroups smaller than this are flagged."
    )
    calibration_bins: StrictInt = Field(
        15, ge=2, le=1000, description="Equal-width bins of calibration metrics (2 to 1000)."
    )
    calibration_nodes: list[NodeName] = Field(
        default_factory=list,
        description="Nodes whose rolled-up probability gets an ECE and a reliability diagram.",
    )
    tasks: list[TaskSpec] = Field(min_length=1)
    partitions: list[PartitionSpec] = Field(default_factory=list)
    cancer_node: NodeName | None = Field(
        None,
        description="The node whose recall is each partition's `cancer_sensitivity` (e.g. `malignant`); "
        "`null` (default): the metric is not computed, and pre-registering it is refused.",
    )
    subgroups: list[StrictStr] = Field(
        default_factory=list,
        description="Metadata columns to break metrics down by (e.g. sex, localization, fitzpatrick).",
    )
    subgroup_options: dict[StrictStr, SubgroupOptions] = Field(
        default_factory=dict,
        description="Per subgroup column: numeric `bands` and a `reference` level "
        "(e.g. `{age: {bands: [30, 45, 60]}, sex: {reference: female}}`).",
    )
    intervals: IntervalSpec = Field(
        IntervalSpec(proportions="auto", exact="clopper_pearson", min_events=10),
        description="Which interval proportions get (defaults apply).",
    )
    shift: ShiftSpec | None = Field(
        None,
        description="A pre-registered distribution shift for `hierclf shift`: `{column, train_levels, "
        "test_levels}` (the command's options may only repeat it).",
    )
    allow_seed_mismatch: bool = Field(
        False,
        description="Allow seeds whose test files hold different samples, or that repeat the same "
        "predictions (refused by default; allowed, the report says so loudly and gives a per-seed table).",
    )
    allow_test_thresholds: bool = Field(
        False,
        description="Allow thresholds chosen on test when no "
        "validation predictions are given (optimistic; labelled so).",
    )
    temperature_scaling: bool = Field(
        False,
        description="Fit a temperature to each task's validation scores and report the test calibration of "
        "the scaled scores beside the raw model's (never instead).",
    )
    decision_thresholds: list[Unit] | None = Field(
        None,
        description="Threshold probabilities of each task's decision curve (default 0.01, 0.02, ..., 0.99).",
    )
    training: dict[str, Any] | None = Field(
        None,
        description="Free mapping for `hierclf study` (passed to "
        "the training configuration); not interpreted by evaluation.",
    )

    def operating_point(self, task: TaskSpec) -> OperatingPointSpec:
        """The task's operating-point rule with its target filled in (the protocol's target sensitivity
        by default)."""
        spec = task.operating_point or OperatingPointSpec.model_validate({})
        if spec.rule == "target_sensitivity" and spec.target is None:
            spec = spec.model_copy(update={"target": self.target_sensitivity})
        return spec

    def decision_grid(self) -> list[float]:
        """The decision curves' threshold probabilities."""
        if self.decision_thresholds is not None:
            return sorted(set(self.decision_thresholds))
        return [round(k / 100, 2) for k in range(1, 100)]

    def task(self, name: str) -> TaskSpec:
        """The task called ``name`` (UnknownNameError with suggestions otherwise)."""
        for t in self.tasks:
            if t.name == name:
                return t
        raise UnknownNameError("task", name, [t.name for t in self.tasks], f"in protocol {self.name!r}")


# --- loading -------------------------------------------------------------------------------------------


def load_protocol(path: str | Path, taxonomy: Taxonomy) -> Protocol:
    """Read, validate and resolve a protocol YAML file against ``taxonomy``.

    Raises :class:`ProtocolError` listing every problem with ``file:line:column``.
    """
    return _from_document(load_located_file(path), taxonomy)


def protocol_from_text(text: str, taxonomy: Taxonomy, file: str = "<protocol>") -> Protocol:
    """Like :func:`load_protocol`, from YAML text."""
    return _from_document(load_located(text, file), taxonomy)


def protocol_from_dict(data: dict[str, Any], taxonomy: Taxonomy) -> Protocol:
    """Like :func:`load_protocol`, from an already parsed mapping (no line numbers in errors)."""
    return _from_document(LocatedYAML(data=data, file="<protocol>"), taxonomy)


def _from_document(doc: LocatedYAML, taxonomy: Taxonomy) -> Protocol:
    if doc.problems:
        raise ProtocolError(doc.problems)
    if not isinstance(doc.data, dict):
        raise ProtocolError(
            [
                doc.problem(
                    (),
                    "expected a mapping with 'name', 'target_sensitivity', "
                    "'primary_metric', 'group_column' and 'tasks' at the top",
                    code="schema",
                )
            ]
        )
    try:
        proto = Protocol.model_validate(doc.data)
    except ValidationError as exc:
        problems = problems_from_validation_error(exc, Protocol, doc, code="schema", explain=_explain)
        raise ProtocolError(problems) from None
    problems = _check_against_taxonomy(proto, taxonomy, doc)
    if problems:
        raise ProtocolError(sorted(problems, key=lambda p: (p.line or 0, p.column or 0)))
    return _resolved(proto, taxonomy)


def _explain(err: ValidationIssue) -> str | None:
    """The protocol format's own words for a task, partition or protocol name that is not snake_case."""
    if err.kind == "string_pattern_mismatch" and err.field_name == "name":
        return f"invalid name {err.value!r}: expected snake_case (lowercase letters, digits, single '_')"
    return None


def _resolve(
    taxonomy: Taxonomy, name: str, doc: LocatedYAML, path: PathKey, problems: list[Problem]
) -> str | None:
    try:
        return taxonomy.resolve(name)
    except UnknownNameError as exc:
        problems.append(doc.problem(path, f"{dotted(path)}: {exc}", code="unknown-node", node=name))
        return None


def _check_against_taxonomy(proto: Protocol, taxonomy: Taxonomy, doc: LocatedYAML) -> list[Problem]:
    """Every problem of a schema-valid protocol against the tree: names, tasks, cuts, nodes, the primary."""
    problems: list[Problem] = []
    _check_names(proto, doc, problems)
    for i, task in enumerate(proto.tasks):
        _check_task(taxonomy, doc, i, task, problems)
    for i, part in enumerate(proto.partitions):
        _check_partition(taxonomy, doc, i, part, problems)
    for j, name in enumerate(proto.calibration_nodes):
        _resolve(taxonomy, name, doc, ("calibration_nodes", j), problems)
    cancer = None
    if proto.cancer_node is not None:
        cancer = _resolve(taxonomy, proto.cancer_node, doc, ("cancer_node",), problems)
    _check_primary(proto, taxonomy, doc, cancer, problems)
    _check_subgroup_options(proto, doc, problems)
    return problems


def _check_subgroup_options(proto: Protocol, doc: LocatedYAML, problems: list[Problem]) -> None:
    """Every column with options is one of the protocol's ``subgroups``."""
    for column in proto.subgroup_options:
        if column not in proto.subgroups:
            err = UnknownNameError(
                "subgroup column",
                column,
                list(proto.subgroups),
                f"in subgroup_options (the protocol's subgroups: {', '.join(proto.subgroups) or 'none'})",
            )
            problems.append(doc.problem(("subgroup_options", column), str(err), code="unknown-subgroup"))


def _check_names(proto: Protocol, doc: LocatedYAML, problems: list[Problem]) -> None:
    """Task and partition names are unique."""
    named: tuple[tuple[str, Sequence[TaskSpec | PartitionSpec]], ...] = (
        ("task", proto.tasks),
        ("partition", proto.partitions),
    )
    for kind, items in named:
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            if item.name in seen:
                msg = f"{kind} name {item.name!r} is used twice ({kind}s[{seen[item.name]}] and {kind}s[{i}])"
                problems.append(doc.problem((f"{kind}s", i, "name"), msg, code="duplicate"))
            seen.setdefault(item.name, i)


def _check_task(
    taxonomy: Taxonomy, doc: LocatedYAML, i: int, task: TaskSpec, problems: list[Problem]
) -> None:
    """The task's nodes exist and its two sides share no leaf."""
    sides: dict[str, set[str]] = {}
    for side in ("positive", "negative"):
        leaves: set[str] = set()
        for j, name in enumerate(getattr(task, side)):
            node = _resolve(taxonomy, name, doc, ("tasks", i, side, j), problems)
            if node is not None:
                leaves.update(taxonomy.leaves_under(node))
        sides[side] = leaves
    shared = sides["positive"] & sides["negative"]
    if shared:
        shown = sorted(shared, key=taxonomy.index.position.__getitem__)
        msg = (
            f"task {task.name!r}: positive and negative nodes overlap: leaves "
            f"{', '.join(map(repr, shown))} lie under both sides"
        )
        problems.append(doc.problem(("tasks", i), msg, code="task-overlap"))


def _check_partition(
    taxonomy: Taxonomy, doc: LocatedYAML, i: int, part: PartitionSpec, problems: list[Problem]
) -> None:
    """The partition's nodes exist and form a cut of the tree."""
    ids = [
        _resolve(taxonomy, n, doc, ("partitions", i, "nodes", j), problems) for j, n in enumerate(part.nodes)
    ]
    if any(n is None for n in ids):
        return
    try:
        taxonomy.cut(ids)  # type: ignore[arg-type]
    except TaxonomyError as exc:
        for p in exc.problems:
            msg = f"partition {part.name!r}: {p.message}"
            problems.append(doc.problem(("partitions", i, "nodes"), msg, code=p.code, node=p.node))


def _check_primary(
    proto: Protocol, taxonomy: Taxonomy, doc: LocatedYAML, cancer: str | None, problems: list[Problem]
) -> None:
    """The primary metric names a task or partition of this protocol, and one it can be computed on."""
    pm = proto.primary_metric
    known = [t.name for t in proto.tasks] if pm.task is not None else [p.name for p in proto.partitions]
    if pm.target not in known:
        kind = "task" if pm.task is not None else "partition"
        err = UnknownNameError(
            kind,
            pm.target,
            known,
            f"in primary_metric (the protocol's {kind}s: {', '.join(known) or 'none'})",
        )
        problems.append(doc.problem(("primary_metric", kind), str(err), code="unknown-task"))
        return
    if pm.metric != "cancer_sensitivity":
        return
    if proto.cancer_node is None:
        msg = (
            "primary_metric: cancer_sensitivity is the recall of the protocol's cancer_node, and none is "
            "declared; add `cancer_node: <node>` (e.g. malignant)"
        )
        problems.append(doc.problem(("primary_metric", "metric"), msg, code="no-cancer-node"))
        return
    part = next(p for p in proto.partitions if p.name == pm.target)
    try:
        cut = list(taxonomy.cut([taxonomy.resolve(n) for n in part.nodes]))
    except (TaxonomyError, UnknownNameError):
        return  # reported where the partition is written
    if cancer is not None and cancer_classes(taxonomy, cut, cancer) is None:
        msg = (
            f"primary_metric: cancer_sensitivity is undefined on partition {part.name!r}: cancer_node "
            f"{cancer!r} lies inside one of its classes"
        )
        problems.append(doc.problem(("primary_metric", "partition"), msg, code="cancer-node-inside-class"))


def cancer_classes(taxonomy: Taxonomy, cut: Sequence[str], node: str) -> np.ndarray | None:
    """Which classes of ``cut`` make up ``node``: ``(C,)`` bool, or ``None`` when the classes at or under
    ``node`` do not cover its leaves (``node`` lies inside a class, so its recall is undefined there).

    Example:
        >>> tax = Taxonomy.from_yaml("taxonomy/dermamnist.yaml")
        >>> cancer_classes(tax, ["benign", "melanoma", "keratinocyte_carcinoma"], "malignant").tolist()
        [False, True, True]
        >>> cancer_classes(tax, ["benign", "malignant"], "melanoma") is None
        True
    """
    idx = taxonomy.index
    inside = idx.is_under(idx.rows(cut), idx.position[node])
    covered = sorted(leaf for i in np.flatnonzero(inside).tolist() for leaf in taxonomy.leaves_under(cut[i]))
    if not inside.any() or sorted(taxonomy.leaves_under(node)) != covered:
        return None
    return np.asarray(inside, dtype=bool)


def _resolved(proto: Protocol, taxonomy: Taxonomy) -> Protocol:
    tasks = [
        t.model_copy(update={"positive": _ids(taxonomy, t.positive), "negative": _ids(taxonomy, t.negative)})
        for t in proto.tasks
    ]
    parts = [p.model_copy(update={"nodes": list(taxonomy.cut(p.nodes))}) for p in proto.partitions]
    return proto.model_copy(
        update={
            "tasks": tasks,
            "partitions": parts,
            "calibration_nodes": _ids(taxonomy, proto.calibration_nodes),
            "cancer_node": None if proto.cancer_node is None else taxonomy.resolve(proto.cancer_node),
        }
    )


def _ids(taxonomy: Taxonomy, names: list[str]) -> list[str]:
    return list(dict.fromkeys(taxonomy.resolve(n) for n in names))

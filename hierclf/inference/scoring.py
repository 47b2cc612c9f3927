"""From images to everything ``hierclf predict`` writes and ``hierclf export`` ships, as one module.

:class:`ScoringGraph` wraps a :class:`~hierclf.inference.models.TrainedModel` or
:class:`~hierclf.inference.models.ModelEnsemble`; ``forward(images)`` returns four tensors:

* ``probs`` ``(batch, n_columns)`` float32: the model's probabilities over its columns;
* ``nodes`` ``(batch, n_nodes)`` float32: ``P(node)`` of the named nodes (the roll-up of ``probs``);
* ``scores`` ``(batch, n_tasks)`` float64: with the **mean** rule (one model, or the seed ensemble) each
  task's score ``P(pos) / (P(pos) + P(neg))`` of ``probs``; with the **or** rule the margin
  ``max_k (score_k - threshold_k)`` over the members (each member's own score and own threshold);
* ``decisions`` ``(batch, n_tasks)`` bool: ``score >= threshold`` (mean rule), ``margin >= 0`` (or rule:
  some member flags the case at its own validation threshold; seed 003's "if either model flags a lesion,
  send it for biopsy").

The prediction command and the exported artefacts run this very module, so their numbers agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from hierclf.errors import HierclfError
from hierclf.inference.models import ModelEnsemble, TrainedModel
from hierclf.inference.thresholds import TaskThreshold, ThresholdError
from hierclf.nn.rollup_modules import RollUp
from hierclf.rollup_engine.request_plans import conditional_columns
from hierclf.taxonomy.tree import Taxonomy

__all__ = ["RULES", "Readout", "ScoringGraph", "scoring_graph"]

#: decision rules of an ensemble: the mean of the probabilities, or any member flagging the case
RULES = ("mean", "or")


class Readout(nn.Module):
    """From ``(batch, n_columns)`` probabilities to the named nodes, task scores and decisions.

    ``forward(probs)`` returns ``(nodes, scores, decisions)``: ``(batch, len(nodes))`` ``P(node)`` (the
    roll-up, :class:`~hierclf.nn.rollup_modules.RollUp`); ``(batch, n_tasks)`` float64 scores
    ``P(pos) / (P(pos) + P(neg))``, 0.5 where both are 0, each side summed over the columns
    :func:`~hierclf.rollup_engine.request_plans.conditional_columns` gives (those of
    :func:`hierclf.functional.conditional`) in float64; and ``(batch, n_tasks)`` bool ``score >= threshold``.

    Raises:
        UnknownNameError, RollUpError: an unknown node or task node, one below the columns, sides that
            overlap.
    """

    positive_side: Tensor
    negative_side: Tensor
    threshold: Tensor

    def __init__(
        self,
        taxonomy: Taxonomy,
        columns: Sequence[str],
        nodes: Sequence[str] = (),
        tasks: Sequence[TaskThreshold] = (),
    ) -> None:
        super().__init__()
        self.columns = tuple(columns)
        self.rollup = RollUp(taxonomy, list(nodes), columns=self.columns) if nodes else None
        self.nodes: tuple[str, ...] = self.rollup.nodes if self.rollup is not None else ()
        self.tasks = tuple(t.resolved(taxonomy) for t in tasks)
        positive = np.zeros((len(self.columns), len(self.tasks)))
        negative = np.zeros_like(positive)
        for k, task in enumerate(self.tasks):
            _, pos, neg = conditional_columns(taxonomy, task.positive, task.negative, list(self.columns))
            positive[pos, k], negative[neg, k] = 1.0, 1.0
        # (n_columns, 0) matrices would break the torch.export archive: no buffers without tasks
        has = bool(self.tasks)
        self.register_buffer("positive_side", torch.from_numpy(positive) if has else None, persistent=False)
        self.register_buffer("negative_side", torch.from_numpy(negative) if has else None, persistent=False)
        thresholds = torch.tensor([t.threshold for t in self.tasks], dtype=torch.float64)
        self.register_buffer("threshold", thresholds, persistent=False)

    def forward(self, probs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        nodes = self.rollup(probs) if self.rollup is not None else probs[:, :0]
        p = probs.double()
        if not self.tasks:
            return nodes, p[:, :0], p[:, :0] > 0
        positive, negative = p @ self.positive_side, p @ self.negative_side
        total = positive + negative
        defined = total > 0
        scores = torch.where(defined, positive / torch.where(defined, total, torch.ones_like(total)), 0.5)
        return nodes, scores, scores >= self.threshold

    def extra_repr(self) -> str:
        return f"nodes={list(self.nodes)}, tasks={[t.task for t in self.tasks]}"


def _member_tasks(model: ModelEnsemble, names: Sequence[str]) -> list[list[TaskThreshold]]:
    """Each member's own operating points of the tasks ``names`` (the or rule)."""
    out = []
    for member in model.members:
        assert isinstance(member, TrainedModel)
        missing = [n for n in names if n not in member.thresholds]
        if missing:
            raise ThresholdError(
                f"the or rule needs every model's own thresholds: {member.source} stores none for "
                f"{', '.join(missing)}"
            )
        out.append([member.thresholds[n] for n in names])
    return out


class ScoringGraph(nn.Module):
    """A model with its readout (module docstring): ``forward(images) -> (probs, nodes, scores, decisions)``.

    Args:
        model: one model or an ensemble.
        nodes: nodes whose probability to output.
        tasks: operating points; with the or rule only their names count (each member's own are used).
        rule: ``"mean"`` or ``"or"`` (an ensemble only).

    Raises:
        HierclfError: an unknown rule, or the or rule for a single model.
        ThresholdError: the or rule with a member that stores no threshold for a task.
    """

    def __init__(
        self,
        model: TrainedModel | ModelEnsemble,
        *,
        nodes: Sequence[str] = (),
        tasks: Sequence[TaskThreshold] = (),
        rule: str = "mean",
    ) -> None:
        super().__init__()
        if rule not in RULES:
            from hierclf.errors import UnknownNameError

            raise UnknownNameError("decision rule", rule, RULES)
        if rule == "or" and not isinstance(model, ModelEnsemble):
            raise HierclfError("the or rule combines several models; give more than one checkpoint")
        if rule == "or" and not tasks:
            raise ThresholdError("the or rule decides tasks: ask for thresholds (--thresholds)")
        self.model = model
        self.rule = rule
        self.columns = tuple(model.columns)
        self.size = int(model.size)
        tax = model.taxonomy
        self.readout = Readout(tax, self.columns, nodes, tasks if rule == "mean" else ())
        self.nodes = self.readout.nodes
        self.tasks: tuple[str, ...] = tuple(t.task for t in tasks)
        self.members = nn.ModuleList()
        if rule == "or":
            assert isinstance(model, ModelEnsemble)
            self.members.extend(
                Readout(tax, self.columns, (), own) for own in _member_tasks(model, self.tasks)
            )

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if self.rule == "mean":
            probs = self.model(images)
            nodes, scores, decisions = self.readout(probs)
            return probs, nodes, scores, decisions
        assert isinstance(self.model, ModelEnsemble)
        each = self.model.member_probabilities(images)
        probs = torch.stack(each).mean(0)
        nodes, _, _ = self.readout(probs)
        margins = [r(p)[1] - r.threshold for r, p in zip(self.members, each)]
        margin = torch.stack(margins).amax(0)
        return probs, nodes, margin, margin >= 0

    def request(self) -> dict[str, Any]:
        """What rebuilds this graph around the same checkpoints elsewhere (picklable plain data: the nodes,
        the operating points, the rule, each member's thresholds under the or rule); see
        :meth:`from_request`."""
        members: list[dict[str, TaskThreshold]] = []
        if self.rule == "or":
            assert isinstance(self.model, ModelEnsemble)
            members = [{t: m.thresholds[t] for t in self.tasks} for m in self.model.models]
        tasks = list(self.readout.tasks) if self.rule == "mean" else list(members[0].values())
        return {"nodes": list(self.nodes), "tasks": tasks, "rule": self.rule, "member_thresholds": members}

    @classmethod
    def from_request(cls, model: TrainedModel | ModelEnsemble, request: dict[str, Any]) -> ScoringGraph:
        """The graph :meth:`request` describes, around ``model`` (loaded from the same checkpoints)."""
        if request["member_thresholds"]:
            assert isinstance(model, ModelEnsemble)
            for member, own in zip(model.models, request["member_thresholds"]):
                member.thresholds = dict(own)
        return cls(model, nodes=request["nodes"], tasks=request["tasks"], rule=request["rule"])

    @property
    def score_kind(self) -> str:
        """``"score"`` (mean rule) or ``"margin"`` (or rule): what the third output holds."""
        return "score" if self.rule == "mean" else "margin"


def _with_report_thresholds(
    model: TrainedModel | ModelEnsemble, report: str, seed: int | None, rule: str
) -> dict[str, TaskThreshold]:
    """The operating points ``report`` gives: the model's own (seed ``seed``), or under the or rule each
    member's, member ``k`` taking the report's seed ``k`` (a study's seeds, in order)."""
    from hierclf.inference.thresholds import thresholds_from_report

    if rule == "or":
        assert isinstance(model, ModelEnsemble)
        for k, member in enumerate(model.members):
            assert isinstance(member, TrainedModel)
            member.thresholds = thresholds_from_report(report, seed=k)
        first = model.members[0]
        assert isinstance(first, TrainedModel)
        return first.thresholds
    return thresholds_from_report(report, seed=seed)


def _stored(model: TrainedModel | ModelEnsemble, rule: str) -> dict[str, TaskThreshold]:
    """The thresholds stored with the model (under the or rule, the first member's task list)."""
    from hierclf.inference.thresholds import stored_thresholds

    if isinstance(model, ModelEnsemble):
        if rule == "mean":
            raise ThresholdError(
                "an ensemble's mean has thresholds of its own, not its members': give --thresholds-from the "
                "report of the ensemble's evaluation (hierclf.evaluation.ensembles.evaluate_seed_mean), or "
                "--rule or to decide with each member's stored threshold"
            )
        members = [m for m in model.members if isinstance(m, TrainedModel)]
        for member in members:
            stored_thresholds(member.thresholds, member.source)
        return members[0].thresholds
    return stored_thresholds(model.thresholds, model.source)


def scoring_graph(
    model: TrainedModel | ModelEnsemble,
    *,
    nodes: Sequence[str] = (),
    stored: bool = False,
    report: str | None = None,
    seed: int | None = None,
    tasks: Sequence[str] | None = None,
    rule: str = "mean",
) -> ScoringGraph:
    """The :class:`ScoringGraph` of a request as the CLI makes it: nodes, and decisions at the stored
    thresholds (``stored``) or at those of an evaluation report (``report``, ``seed``), for ``tasks`` (all
    when None).

    Raises:
        ThresholdError: no thresholds stored, an ensemble's mean without a report of its own, both sources.
        UnknownNameError: an unknown task or node.
    """
    from hierclf.inference.thresholds import select_thresholds

    if stored and report is not None:
        raise ThresholdError("give --thresholds (stored) or --thresholds-from REPORT, not both")
    if not stored and report is None:
        if tasks:
            raise ThresholdError("--task needs thresholds: add --thresholds or --thresholds-from REPORT")
        return ScoringGraph(model, nodes=nodes, rule=rule)
    found = _stored(model, rule) if stored else _with_report_thresholds(model, str(report), seed, rule)
    chosen = select_thresholds(found, tasks, report or model.source)
    return ScoringGraph(model, nodes=nodes, tasks=chosen, rule=rule)

"""What an evaluation finds about its own inputs: errors that stop it, warnings that open the report, notes.

* :class:`EvaluationError`: the inputs cannot be evaluated under the protocol (missing labels, an empty task
  side, NaN probabilities, ids not in the metadata, ...); one line naming the file and what was expected.
* :class:`Findings`: the warnings (loud: at the top of ``report.md``, and logged as they arise) and the notes
  (quiet remarks at the end: samples left out, metrics not computed and why) collected by every step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from hierclf.errors import HierclfError

logger = logging.getLogger(__name__)

__all__ = ["EvaluationError", "Findings"]


class EvaluationError(HierclfError, ValueError):
    """Inputs that cannot be evaluated under the protocol (missing labels, empty task sides, NaN, ...)."""


@dataclass
class Findings:
    """The warnings and notes of one evaluation, in the order they arose.

    Example:
        >>> found = Findings()
        >>> found.note("mistake severity needs leaf columns")
        >>> found.warnings, found.notes
        ([], ['mistake severity needs leaf columns'])
    """

    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)

    def warn(self, message: str, *, alert: str | None = None) -> None:
        """A loud warning: at the top of the report, and logged. ``alert`` (e.g. ``LEAKAGE``): a word the
        primary-metric line, every figure and the CLI summary carry besides."""
        self.warnings.append(message)
        if alert is not None and alert not in self.alerts:
            self.alerts.append(alert)
        logger.warning("%s", message)

    def note(self, message: str) -> None:
        """A remark for the report's notes (not logged)."""
        self.notes.append(message)

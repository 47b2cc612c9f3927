"""How the report writes a number: ``value [low, high] ± std FLAGS`` (:func:`format_estimate`).

One module below the report and its companions (the checklist, the model card, the comparison report, the
CLI summaries), so that each writes an estimate the same way without importing the others.
"""

from __future__ import annotations

import math
from typing import Any

from hierclf.evaluation.catalog import ZERO_WIDTH_FLAG
from hierclf.evaluation.records import Estimate

__all__ = ["format_estimate"]


def _num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def format_estimate(est: Estimate | None, digits: int = 3) -> str:
    """``value [low, high]`` (pooled CI), ``± std`` over seeds when there are several, and the number's
    flags (``SMALL``, ``ZERO-WIDTH``). An interval that is not of width zero is never printed as one: its
    ends get more digits until they differ.

    Example:
        >>> format_estimate(Estimate(0.9, 0.01, [0.89, 0.91], (0.85, 0.94)))
        '0.900 [0.850, 0.940] ± 0.010'
        >>> format_estimate(Estimate(1.0, math.nan, [1.0], (1.0, 1.0), flags=["ZERO-WIDTH"]))
        '1.000 [1.000, 1.000] ZERO-WIDTH'
        >>> format_estimate(Estimate(0.9996, math.nan, [0.9996], (0.99951, 0.99968)))
        '1.000 [0.9995, 0.9997]'
    """
    if est is None:
        return "n/a"
    text = _num(est.value, digits)
    flags = list(est.flags)
    if math.isfinite(est.ci[0]) and math.isfinite(est.ci[1]):
        shown = digits
        while ZERO_WIDTH_FLAG not in flags and shown < 8 and _num(est.ci[0], shown) == _num(est.ci[1], shown):
            shown += 1
        if _num(est.ci[0], shown) == _num(est.ci[1], shown) and ZERO_WIDTH_FLAG not in flags:
            flags.append(ZERO_WIDTH_FLAG)  # narrower than 1e-8: printed as zero width, so flagged as such
        text += f" [{_num(est.ci[0], shown)}, {_num(est.ci[1], shown)}]"
    if len(est.per_seed) > 1:
        text += f" ± {_num(est.std, digits)}"
    if flags:
        text += " " + " ".join(flags)
    return text


def _fmt_dict(d: dict[str, Any], *, flags: bool = True) -> str:
    """Format an estimate that went through JSON cleaning (``None`` for NaN)."""

    def f(v: Any) -> float:
        return math.nan if v is None else float(v)

    e = Estimate(
        f(d["value"]),
        f(d["std"]),
        [f(v) for v in d["per_seed"]],
        (f(d["ci"][0]), f(d["ci"][1])),
        flags=list(d.get("flags") or []) if flags else [],
    )
    return format_estimate(e)

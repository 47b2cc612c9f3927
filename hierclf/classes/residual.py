"""Residual classes: the images labelled exactly at an internal node that Esteva's partition splits.

A residual class is named ``"<node>:residual"`` (:data:`RESIDUAL_SUFFIX`; node ids cannot contain ``:``).
In tree pre-order it sits right before the classes of the node's children, so the classes under any node,
its residual class included, are still one contiguous range of columns (``docs/training-classes.md``).
"""

from __future__ import annotations

__all__ = ["RESIDUAL_SUFFIX", "residual_class", "residual_node"]

#: suffix of the name of a residual class: the images labelled exactly at a split internal node
RESIDUAL_SUFFIX = ":residual"


def residual_class(node: str) -> str:
    """The name of the residual class of internal node ``node``.

    >>> residual_class("melanocytic")
    'melanocytic:residual'
    """
    return f"{node}{RESIDUAL_SUFFIX}"


def residual_node(name: str) -> str | None:
    """The node whose residual class ``name`` is, or None when ``name`` is not a residual class name.

    >>> residual_node("melanocytic:residual"), residual_node("melanoma")
    ('melanocytic', None)
    """
    return name[: -len(RESIDUAL_SUFFIX)] if name.endswith(RESIDUAL_SUFFIX) else None

"""Reporting the multiply-accumulates of graph computations that the paper's FLOP counts leave out.

:func:`mgic_geo.complexity.profile` listens while it runs a model and reports these apart from the
MACs of the learned maps: ``"knn"`` (distance products of kNN searches) and ``"graph operators"``
(the neighbour sums of diffGCN's gradient and Laplacian when they run as batched products).
"""
from __future__ import annotations

from typing import Callable

observers: list[Callable[[str, int], None]] = []


def report(kind: str, macs: int) -> None:
    for observe in observers:
        observe(kind, macs)


def listening() -> bool:
    """Whether a MAC count listens (:func:`mgic_geo.complexity.profile`): layers then run their
    reference formulation, whose dense operations the counter knows how to count."""
    return bool(observers)

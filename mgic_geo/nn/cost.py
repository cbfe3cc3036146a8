"""Counting the multiply-accumulates of graph computations that the paper's FLOP counts leave out.

``"knn"`` (the distance products of kNN searches) and ``"graph operators"`` (the neighbour sums of
diffGCN's gradient and Laplacian) run inside layers, as batched products or gathers a FLOP counter
cannot tell from the learned maps. A count is opened explicitly and scoped to a ``with`` block::

    with cost.counting() as graph_macs:      # what mgic_geo.complexity.profile does
        model(pos, batch)
    graph_macs["knn"], graph_macs["graph operators"]

Inside the block the layers add what they compute to it (:func:`report`) and run the reference
formulation whose dense products the FLOP counter sees (:func:`counting_now`); outside it,
:func:`report` does nothing. The count belongs to the current thread and asyncio task (a
:class:`~contextvars.ContextVar`), so counts in other threads never mix, and counts nest (the inner
one sees only its own block).
"""
from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

_count: ContextVar[Counter | None] = ContextVar("mgic_geo_graph_macs", default=None)


@contextmanager
def counting() -> Iterator[Counter]:
    """Open a count of graph MACs for the ``with`` block; yields the :class:`~collections.Counter`
    (kind -> MACs) the layers add to."""
    token = _count.set(Counter())
    try:
        yield _count.get()
    finally:
        _count.reset(token)


def report(kind: str, macs: int) -> None:
    """Add ``macs`` multiply-accumulates of ``kind`` to the open count, if one is open."""
    count = _count.get()
    if count is not None:
        count[kind] += macs


def counting_now() -> bool:
    """Whether a count is open: layers then run their reference formulation, whose dense
    operations the FLOP counter knows how to count."""
    return _count.get() is not None

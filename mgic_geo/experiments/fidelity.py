"""Paper fidelity: every table row's params and MACs under each reading of the paper
(``mgic-geo experiment fidelity``).

The paper leaves open details that move its figures: how many levels a width gets, what its FLOP
counts include, where the transitions sit, on which width groups are counted. Each such choice is a
:class:`Reading`, named by the paper text or the authors' released code it follows. This module
measures every row of Tables 2-8 under every reading that applies to it (parameters, and MACs of
one forward pass at the paper's input size, split by stage and role with
:func:`~mgic_geo.experiments.decompose.decompose_model`), so that a gap to the paper can be traced
to a part of the network rather than guessed at. :mod:`~mgic_geo.experiments.fidelity_report`
writes the result up (``docs/fidelity.md``).

No reading is tuned to the paper's figures: each one is either a rule of :mod:`mgic_geo.core.plan`,
a way of counting the paper states, or a builder option that follows the authors' code.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Callable

from tqdm import tqdm

from mgic_geo.experiments.decompose import decompose_model
from mgic_geo.experiments.image_tables import TABLES as IMAGE_TABLES
from mgic_geo.experiments.image_tables import UNITS
from mgic_geo.experiments.table6 import PAPER as TABLE6
from mgic_geo.models.registry import model_builder

TOLERANCE = 0.10  # a row is "within" when params and MACs are both within 10 % of the paper's
TRANSFER_ROLES = frozenset({"restriction", "prolongation", "correction norm"})
LEVEL_RULE_READINGS = ("Algorithm 1", "Sec. 4.1", "authors' code")  # the three level rules, in this order


@dataclass(frozen=True)
class PaperRow:
    """One row of a paper table: the network that reproduces it and the paper's figures."""

    table: str
    label: str
    model: str
    kwargs: dict
    params: float  # paper, millions
    macs: float  # paper "FLOPs", in ``unit``
    unit: str  # "M" or "G"
    size: tuple[int, int] | None = None  # image input size; None: one point cloud of 1,024 points
    classes: int = 10

    @property
    def has_mgic(self) -> bool:
        return getattr(model_builder(self.model), "default_mgic", None) is not None

    @property
    def name(self) -> str:
        return f"T{self.table} {self.label}"


@dataclass(frozen=True)
class Reading:
    """A way to read the paper: a level rule (``None`` keeps the network's), whether the MGIC
    transfers and correction norms are counted, whether graph operators are counted, and a change
    of the builder's keyword arguments (``None``: none). ``applies`` says which rows it is for."""

    name: str
    source: str
    level_rule: str | None = "paper"
    count_transfers: bool = True
    count_graph_operators: bool = False
    change_kwargs: Callable[[PaperRow], dict] | None = None
    applies: Callable[[PaperRow], bool] = field(default=lambda row: row.has_mgic)


def _outer_width(row: PaperRow) -> dict:
    mgic = dict(row.kwargs.get("mgic") or {})
    return {**row.kwargs, "mgic": {**mgic, "group_size": mgic["group_size"] // 4, "coarsest": mgic["coarsest"] // 4}}


def _mobilenet(**options) -> Callable[[PaperRow], dict]:
    return lambda row: {**row.kwargs, **options}


def _is_mgic_mobilenet(row: PaperRow) -> bool:
    return row.has_mgic and "mobilenetv3" in row.model


def _is_point_cloud(row: PaperRow) -> bool:
    return row.size is None


READINGS = (
    Reading("Algorithm 1", "paper, Algorithm 1: n_levels = floor(log2(c / s_c)) coarsenings (the package default)",
            "paper", applies=lambda row: True),
    Reading("Sec. 4.1", "paper, Sec. 4.1: halve the width until it is at most s_c", "at_most"),
    Reading("authors' code", "authors' released code: coarsen at least once, stop below 2 s_c", "official"),
    Reading("Algorithm 1, Eq. (8) count", "paper, Sec. 4.4 Eq. (8): only the level blocks' convolutions are counted "
            "(the transfers R_j, P_j and the norms N_j are not)", "paper", count_transfers=False),
    Reading("authors' code, Eq. (8) count", "authors' level rule, counted as Eq. (8) counts", "official",
            count_transfers=False),
    Reading("s_g, s_c on the outer width", "paper, Algorithm 1: c_in is the block's input width, so s_g and s_c count "
            "the bottleneck's outer channels (4x the bottleneck's)", "paper", change_kwargs=_outer_width,
            applies=lambda row: row.model == "mgic_resnet50"),
    Reading("groups on the input width", "paper, Algorithm 1: c_in is the block's input width (not the expanded "
            "width of its inverted residual)", "paper", change_kwargs=_mobilenet(group_width="input"),
            applies=_is_mgic_mobilenet),
    Reading("dense transitions", "authors' released MobileNet code: a dense strided 1x1 convolution changes the "
            "width, then an MGIC block", "paper", change_kwargs=_mobilenet(transition="dense"),
            applies=_is_mgic_mobilenet),
    Reading("authors' code, dense transitions", "authors' released code: its level rule and its transitions",
            "official", change_kwargs=_mobilenet(transition="dense"), applies=_is_mgic_mobilenet),
    Reading("graph operators counted", "the paper does not say whether diffGCN's gradient and Laplacian neighbour "
            "sums are in its FLOPs; here they are", "paper", count_graph_operators=True,
            applies=lambda row: _is_point_cloud(row) and "diffgcn" in row.model),
)


def paper_rows(tables: tuple[str, ...] | None = None) -> list[PaperRow]:
    """The paper's rows of Tables 2-8 for the networks this package builds (``tables``: only those)."""
    rows = []
    for table, (_, size, classes, unit, entries) in IMAGE_TABLES.items():
        for label, model, kwargs, params, flops, _ in entries:
            rows.append(PaperRow(table, label, model, kwargs, params, flops, unit, size, classes))
    for model, label, params, flops, _ in TABLE6:
        if params is not None:  # a network of ours, not in the paper
            rows.append(PaperRow("6", label, model, {}, params, flops, "M"))
    rows.sort(key=lambda row: int(row.table))
    if tables is not None:
        unknown = sorted(set(tables) - {row.table for row in rows})
        if unknown:
            raise ValueError(f"--tables: no table {', '.join(unknown)}; the tables are 2, 3, 4, 5, 6, 7 and 8")
        rows = [row for row in rows if row.table in tables]
    return rows


@dataclass
class Measurement:
    """One row under one reading: totals and the stage/role split (:func:`decompose_model` rows)."""

    params: int
    macs: int
    parts: list[dict]


class Fidelity:
    """Measure rows under readings, building each distinct network once."""

    def __init__(self):
        self._cache: dict[str, list[dict]] = {}

    def _parts(self, row: PaperRow, kwargs: dict, level_rule: str | None) -> list[dict]:
        key = json.dumps([row.model, kwargs, row.size, row.classes, level_rule], sort_keys=True, default=str)
        if key not in self._cache:
            self._cache[key] = decompose_model(row.model, size=row.size or (32, 32), classes=row.classes,
                                               kwargs=kwargs, level_rule=level_rule)
        return self._cache[key]

    def measure(self, row: PaperRow, reading: Reading) -> Measurement | None:
        """``row`` under ``reading``; ``None`` when the reading does not apply to the row."""
        if not reading.applies(row):
            return None
        kwargs = reading.change_kwargs(row) if reading.change_kwargs else dict(row.kwargs)
        *parts, total = self._parts(row, kwargs, reading.level_rule if row.has_mgic else None)
        counted = [p for p in parts if reading.count_transfers or p["role"] not in TRANSFER_ROLES]
        macs = sum(p["macs"] for p in counted)
        if reading.count_graph_operators:
            macs += total["graph_operator_macs"]
        return Measurement(total["params"], macs, parts)  # every reading counts every weight


def gaps(row: PaperRow, measured: Measurement) -> tuple[float, float]:
    """Relative gaps ``(params, MACs)`` of ``measured`` to the paper's figures (0.1 = 10 % above)."""
    return (measured.params / 1e6 / row.params - 1, measured.macs / UNITS[row.unit] / row.macs - 1)


def within(row: PaperRow, measured: Measurement | None) -> bool:
    return measured is not None and all(abs(gap) <= TOLERANCE for gap in gaps(row, measured))


def measure_all(rows: list[PaperRow], fidelity: Fidelity | None = None, *,
                progress: bool = False) -> dict[tuple[str, str], Measurement | None]:
    """``{(row.name, reading.name): Measurement or None}`` for every row and reading (``progress``:
    a progress bar on stderr, one step per row)."""
    fidelity = fidelity or Fidelity()
    measured = {}
    for row in tqdm(rows, desc="fidelity", unit="row", file=sys.stderr, disable=not progress):
        for reading in READINGS:
            measured[(row.name, reading.name)] = fidelity.measure(row, reading)
    return measured

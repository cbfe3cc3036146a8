"""Exact k-nearest-neighbour graphs in plain torch, with bounded memory.

PyG 2.8's ``knn_graph`` needs ``pyg-lib`` (not on PyPI) and ``torch-cluster`` compiles from source
for minutes, so the package ships its own exact kNN and dispatches to those libraries only when
they are importable (``backend="auto"``).

Method (``backend="torch"``): clouds are contiguous runs of equal ``batch`` values (PyG's
convention, ``batch`` sorted). Clouds of equal size are stacked and searched together, by one of
two searches (:func:`_knn_stacked`):

* The cell grid (:func:`_knn_grid`), for points of 1 to 3 dimensions on the CPU in eager mode
  (float32/float64, finite, clouds of at least ``GRID_MIN_POINTS`` and ``16 k`` points: measured
  break-even with the dense search). Every cloud gets a grid of cubic cells of side
  ``GRID_CELL_FACTOR`` times the median ``k``-th neighbour distance of ``GRID_SAMPLES`` of its
  points (one in 64 of larger clouds; estimated on every ``s``-th point with rank ``k / s``; the
  side only changes the speed), at most ``GRID_CELLS_PER_POINT`` cells per point. Points are
  sorted by cell (x, then y, then z), so a column of cells along z is a contiguous run of sorted
  points, and the queries of a cell share one candidate list: the 9 runs of its ``3 x 3 x 3``
  block of cells. Distances are computed directly (``sum((q - p)^2)`` in the input's dtype,
  no ``|p|^2 - 2 q.p``) and reduced with one ``topk`` per query, rows of lists of similar length
  padded with ``+inf`` and chunked together (``GRID_CHUNK_ELEMENTS`` distances a chunk). The
  result is exact when the ``k``-th distance found is at most the distance from the query to the
  nearest face of the block (less the rounding of cell boundaries; a face on the grid's edge does
  not count: no point lies beyond it), since every point outside the block is at least that far.
  The queries the check fails (a small share) are searched again, each in a block
  grown face by face to the ``k``-th distance first found (an upper bound of the true one), and
  the few left (or with fewer than ``k`` candidates) against their whole cloud.
  The grid's shapes depend on the data (list lengths, chunks, the queries searched again): it
  reads values on the host, which on the CPU synchronises with nothing. Under ``torch.compile``
  or tracing, and on other devices (CUDA), the dense search runs instead, whose shapes depend on
  shapes only: the ``cloud_size`` path then makes no host synchronisation and no graph break.
* The dense search (:func:`_knn_dense`), for everything else (features, small clouds, CUDA,
  compilation): every cloud is first centred on its mean (distances do not change, rounding does:
  less cancellation below). Within a cloud the candidates of a chunk of query points are ranked by
  ``|p|^2 - 2 q.p`` (the squared distance less the query's own norm, which does not change the
  order), computed with one batched matrix product into a preallocated buffer, and reduced with
  one ``topk`` (the k smallest, nearest first). Chunks (several small clouds, one cloud, or a
  block of query rows of a large cloud) hold at most ``MAX_DISTANCE_ELEMENTS`` scores: 4 MiB in
  float32, small enough to stay in cache between the product and ``topk`` (measured faster than
  64 MiB chunks for a batch of 1024-point clouds), and a single 200,000-point cloud never needs
  an ``N^2`` buffer. On CPU, rows of ``n < 64 k <= 1.5 n`` candidates are padded with ``+inf`` to
  ``64 k`` columns, where torch's CPU ``topk`` switches from nth_element to a much cheaper heap
  (see :func:`_chunk_shape`).

Where the time goes (``torch.profiler`` while it was built; the figures that matter are the
benchmark's below): the dense search is bound by ``topk`` over its 1024-candidate rows, whose cost
per row barely depends on what is done around it (a two-stage selection over block minima, or
compacting the candidates within the certified radius first, both measured slower). The grid wins
by giving ``topk`` far fewer candidates per query; its other steps (candidate lists, distances, the
bookkeeping of the two searches, the sort by cell) cost less together than ``topk``. Cells of 1.1 or
1.25 times the estimate, and half cells with ``5 x 5 x 5`` blocks, measured slower. Much of what is
not ``topk`` runs on one thread, and the grid's many small parallel regions make it slow when
another process competes for the cores, where torch-cluster's single thread is not.

Measured by ``mgic-geo bench knn`` (B = 32, N = 1024, k = 10, float32, 2 threads on the 2-core
development machine; ``docs/benchmarks.md`` has the table of the latest report): torch-cluster's
time over ours was 0.60x with the dense search alone, and 1.03x and 0.79x with the grid in the two
reports of issue 14 (1.06x to 1.29x in the runs while it was built on a quiet machine, 0.81x while
another job used the cores). k = 20: 1.20x to 1.29x; D = 64 runs the dense search as before.

Exactness and ties: distances are computed in the input's dtype. In float64 (and in float32 for
points whose distances are exact, e.g. small integer coordinates) the neighbours are those of brute
force, nearest first; points at exactly equal distance (ties) may come in any order, and which of
several points tied at the k-th distance are kept is unspecified (as in torch-cluster), but every
point strictly nearer than the k-th distance is kept and no point twice. In float32, rounding may
swap neighbours whose distances differ by less than it: for the grid, rounding of ``(q - p)^2``
relative to the distance itself (about 1e-7); for the dense search, rounding of
``|p|^2 - 2 q.p`` relative to the squared radius of the centred cloud (about 1e-7 of it). The
sorted neighbour distances then agree with brute force to rounding.

A cloud with ``n <= k`` points (``n - 1 < k`` without loops) gives each point all the other points
of its cloud (and itself with ``loop=True``): fewer than ``k`` edges, never an error or an index
from another cloud.
"""
from __future__ import annotations

import importlib.util

import torch
from torch import Tensor

from mgic_geo.nn import cost
from mgic_geo.validation import check_int

MAX_DISTANCE_ELEMENTS = 2**20
# On CUDA each chunk costs kernel launches and a GPU has no cache to stay in: bigger chunks (256 MiB
# of float32 scores). Measured on an H200, B = 32 x 1024 points, k = 10: 6.6 ms in 4 MiB chunks
# against 1.4 ms for one cdist + topk over all 128 MiB.
MAX_DISTANCE_ELEMENTS_CUDA = 2**26
BACKENDS = ("auto", "torch", "torch_cluster", "pyg_lib")
# The cell grid (see the module docstring): clouds of at least GRID_MIN_POINTS points (and 16 k'),
# cells GRID_CELL_FACTOR times the median k'-th neighbour distance of GRID_SAMPLES points, at most
# GRID_CELLS_PER_POINT cells per point, chunks of at most GRID_CHUNK_ELEMENTS candidate distances.
GRID_MIN_POINTS = 256
GRID_CELL_FACTOR = 1.2
GRID_SAMPLES = 16
GRID_ESTIMATE_POINTS = 256
GRID_CELLS_PER_POINT = 16
GRID_CHUNK_ELEMENTS = 2**18
GRID_MAX_GROWTH = 3


def _available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _check(x: Tensor, k: int, batch: Tensor | None, flow: str, backend: str, cloud_size: int | None) -> None:
    if not isinstance(x, Tensor) or x.dim() != 2 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"`x` must be a floating-point [N, D] tensor, got {shape}")
    check_int("k", k)
    if cloud_size is not None:
        check_int("cloud_size", cloud_size)
        if x.shape[0] % cloud_size:
            raise ValueError(f"`cloud_size`={cloud_size} must divide the number of points {x.shape[0]}")
    if batch is not None:
        if not isinstance(batch, Tensor) or batch.dim() != 1 or batch.numel() != x.shape[0] or batch.is_floating_point():
            shape = tuple(batch.shape) if isinstance(batch, Tensor) else type(batch).__name__
            raise ValueError(f"`batch` must be an integer vector with one entry per point ({x.shape[0]}), got {shape}")
        if cloud_size is None and batch.numel() > 1 and bool((batch[1:] < batch[:-1]).any()):
            raise ValueError("`batch` must be sorted (points of a cloud contiguous), as PyG's DataLoader makes it")
    if flow not in ("source_to_target", "target_to_source"):
        raise ValueError(f"`flow` must be 'source_to_target' or 'target_to_source', got {flow!r}")
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {BACKENDS}, got {backend!r}")


def _chunk_shape(clouds: int, size: int, keep: int, device: torch.device | str) -> tuple[int, int, int]:
    """``(clouds_per_chunk, rows, width)`` of the score buffer of :func:`_knn_stacked`: chunks of
    several whole clouds, or of ``rows`` query rows of one cloud, holding at most
    ``MAX_DISTANCE_ELEMENTS`` scores (``MAX_DISTANCE_ELEMENTS_CUDA`` off the CPU), in rows of ``width >= size`` columns (columns past ``size`` hold
    ``+inf`` and are not counted: at most 1.5x more)."""
    width = size
    if torch.device(device).type == "cpu" and size < 64 * keep <= size * 3 // 2:
        # CPU topk (torch 2.14) ranks a row with a heap (partial sort) when 64 k <= n and with
        # nth_element otherwise. The heap is much cheaper per element, so rows with
        # n < 64 k <= 1.5 n are padded with +inf up to 64 k columns: at n = 1024, k = 20 (1280
        # columns) topk over 32 x 1024 rows took 223 ms instead of 377 ms (one thread); the
        # results are the same, only the time differs if a later torch changes its rule.
        width = 64 * keep
    budget = MAX_DISTANCE_ELEMENTS if torch.device(device).type == "cpu" else MAX_DISTANCE_ELEMENTS_CUDA
    clouds_per_chunk = max(1, budget // (size * size))
    rows = size if clouds_per_chunk > 1 else max(1, budget // size)
    return max(1, min(clouds, clouds_per_chunk)), rows, width


def _knn_stacked(points: Tensor, k: int, loop: bool) -> Tensor:
    """Neighbour indices ``[B, n, k']`` (``k' = min(k, n)`` or ``min(k, n - 1)``) within each of
    ``B`` equal clouds ``points`` ``[B, n, D]``, nearest first: the cell grid for low-dimensional
    points on the CPU in eager mode (:func:`_grid_applies`), else the dense search."""
    clouds, size, dims = points.shape
    keep = min(k, size if loop else size - 1)
    if keep <= 0:
        return points.new_empty((clouds, size, 0), dtype=torch.long)
    # The distance products of the dense search, whichever method runs: the accounting of
    # :mod:`mgic_geo.complexity` (the paper's FLOP tables) does not depend on the machine.
    cost.report("knn", clouds * size * size * (dims + 1))
    if _grid_applies(points, keep):
        return _knn_grid(points, keep, loop)
    return _knn_dense(points, keep, loop)


def _knn_dense(points: Tensor, keep: int, loop: bool) -> Tensor:
    """The dense search: every query against every point of its cloud, chunked ``bmm`` + ``topk``."""
    clouds, size, _ = points.shape
    # Distances do not change under a translation; centring every cloud on its mean keeps the
    # cancellation in |p|^2 - 2 q.p small for clouds far from the origin.
    points = points - points.mean(dim=1, keepdim=True)
    # A query's own norm does not change the order of its candidates, so rank by
    # |p|^2 - 2 q.p = [q, 1] . [-2p, |p|^2]: one batched matrix product, no extra passes.
    candidates = torch.cat([points * -2, points.square().sum(-1, keepdim=True)], dim=-1).transpose(1, 2).contiguous()
    queries_all = torch.cat([points, points.new_ones(clouds, size, 1)], dim=-1)
    clouds_per_chunk, rows, width = _chunk_shape(clouds, size, keep, points.device)
    # Results go straight into preallocated buffers: thousands of small per-chunk tensors kept
    # alive between large temporary ones fragment the CPU heap until it runs out of memory.
    neighbours = torch.empty((clouds, size, keep), dtype=torch.long, device=points.device)
    nearest_scores = points.new_empty((clouds, size, keep))
    scores = points.new_full((clouds_per_chunk, rows, width), float("inf"))  # columns >= size stay +inf
    for first in range(0, clouds, clouds_per_chunk):
        last = min(clouds, first + clouds_per_chunk)
        for start in range(0, size, rows):
            stop = min(size, start + rows)
            queries = queries_all[first:last, start:stop]
            if torch.compiler.is_compiling():
                # Dynamo graph-breaks on out= into a strided view (the padded buffer): the same
                # ranking out of place, which the compiler fuses anyway.
                chunk = torch.bmm(queries, candidates[first:last])
                if width > size:
                    chunk = torch.cat([chunk, chunk.new_full((*chunk.shape[:2], width - size), float("inf"))], -1)
            else:
                chunk = scores[: last - first, : stop - start]
                torch.bmm(queries, candidates[first:last], out=chunk[..., :size])
            if not loop:
                local = torch.arange(stop - start, device=points.device)
                chunk[:, local, local + start] = float("inf")
            if torch.compiler.is_compiling():
                neighbours[first:last, start:stop] = torch.topk(chunk, keep, dim=-1, largest=False, sorted=True).indices
            else:
                torch.topk(chunk, keep, dim=-1, largest=False, sorted=True,
                           out=(nearest_scores[first:last, start:stop], neighbours[first:last, start:stop]))
    return neighbours


# ----------------------------------------------------------------------------------------------
# The cell grid (CPU, D <= 3, eager): see the module docstring.


def _grid_applies(points: Tensor, keep: int) -> bool:
    """Whether :func:`_knn_grid` searches ``points`` ``[B, n, D]``: CPU, float32/float64, ``D <= 3``,
    ``n >= GRID_MIN_POINTS``, finite coordinates, and neither compiling nor tracing (the grid's
    shapes depend on the data; on the CPU reading them synchronises with nothing), nor counting MACs."""
    if (points.device.type != "cpu" or points.dtype not in (torch.float32, torch.float64)
            or not _grid_shape(points.shape[1], points.shape[-1], keep)):
        return False
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    if cost.listening():  # a MAC count (mgic_geo.complexity) counts the dense search's products
        return False
    return bool(torch.isfinite(points).all())


def _grid_shape(size: int, dims: int, keep: int) -> bool:
    """Whether clouds of ``size`` points of ``dims`` dimensions, ``keep`` neighbours each, suit the grid."""
    return 1 <= dims <= 3 and size >= max(GRID_MIN_POINTS, 16 * keep)


def _grid_buffer_elements(size: int) -> int:
    """The most distance-sized elements the grid holds at once for clouds of ``size`` points: the
    squared differences along the 3 axes of one chunk (``3 x GRID_CHUNK_ELEMENTS``, or of one row
    of up to ``size`` candidates), or the distances of the estimate of the cell side."""
    return max(3 * max(GRID_CHUNK_ELEMENTS, size), GRID_SAMPLES * size)


class _Grid:
    """The cells of ``B`` clouds of ``n`` points, points sorted by cell (see :func:`_knn_grid`)."""

    def __init__(self, points: Tensor, keep: int, loop: bool) -> None:
        clouds, size, _ = points.shape
        self.size, self.keep, self.loop = size, keep, loop
        coordinates = points.double()  # cells and margins in float64: exact for float32 points
        low = coordinates.amin(1)
        extent = coordinates.amax(1) - low
        span = extent.amax(1)
        side = torch.maximum(_grid_cell_side(points, keep, loop), span * 2.0**-20)
        side = torch.where(span > 0, side, torch.ones_like(side))
        cap = GRID_CELLS_PER_POINT * size + 64
        for attempt in range(9):  # at most cap cells per cloud: coarser cells for clustered clouds
            cells_per_axis = (extent / side[:, None]).floor().long() + 1
            cells = cells_per_axis.prod(1)
            over = cells > cap
            if not bool(over.any()):
                break
            grow = (cells.double() / cap).pow(1 / 3) * 1.01 if attempt < 8 else span / side + 1
            side = torch.where(over, side * grow, side)
        base = torch.cumsum(cells, 0) - cells  # first cell id of every cloud
        cell = ((coordinates - low[:, None]) / side[:, None, None]).floor_().long().clamp_(min=0)
        cell = torch.minimum(cell, cells_per_axis[:, None] - 1)
        x, y, z = cell.unbind(-1)
        cell_id = ((x * cells_per_axis[:, 1, None] + y) * cells_per_axis[:, 2, None] + z + base[:, None]).flatten()
        # Points sorted by cell id (clouds stay contiguous and in order: sorted position p is in
        # cloud p // n); a cell is a contiguous run [starts, ends) of sorted positions, and so is a
        # column of cells along z.
        self.order = torch.argsort(cell_id, stable=True)
        counts = torch.bincount(cell_id, minlength=int(cells.sum()))
        self.ends = torch.cumsum(counts, 0)
        self.starts = self.ends - counts
        self.cell_id = cell_id.index_select(0, self.order)
        self.cell = cell.flatten(0, 1).index_select(0, self.order)
        self.points = points.flatten(0, 1).index_select(0, self.order)
        self.axes = self.points.t().contiguous()  # coordinates by axis
        self.low, self.side, self.cells_per_axis, self.base = low, side, cells_per_axis, base
        # Rounding of cell boundaries (float64) relative to the coordinates' magnitude.
        magnitude = torch.maximum(low.abs(), (low + extent).abs()).amax(1)
        self.tolerance = 16 * torch.finfo(torch.float64).eps * (magnitude + side)

    def padded_axes(self, width: int) -> Tensor:
        """The coordinates by axis ``[3, N + width]``: ``width`` points at +inf past the end (the
        padding of candidate lists)."""
        if self.axes.shape[1] < self.points.shape[0] + width:
            padding = self.axes.new_full((3, max(width, 2 * (self.axes.shape[1] - self.points.shape[0]))), float("inf"))
            self.axes = torch.cat([self.axes[:, :self.points.shape[0]], padding], 1)
        return self.axes


def _grid_cell_side(points: Tensor, keep: int, loop: bool) -> Tensor:
    """Per cloud, ``GRID_CELL_FACTOR`` times the median distance from ``GRID_SAMPLES`` points (one in
    64 of larger clouds) to their ``k'``-th nearest other point: an estimate (any cell side gives
    exact results), taken on every ``stride``-th point with rank ``k' / stride`` (``stride``
    divides ``k'``; thinning a cloud thins the neighbours of a point alike, in any dimension), so
    that it costs little."""
    clouds, size, _ = points.shape
    device = points.device
    samples = min(size, max(GRID_SAMPLES, size // 64))
    pick = torch.linspace(0, size - 1, samples, device=device).long()
    rank = max(1, min(keep - 1 if loop else keep, size - 1))
    stride = max(d for d in range(1, max(1, min(rank, size // GRID_ESTIMATE_POINTS)) + 1) if rank % d == 0)
    points = points - points.mean(1, keepdim=True)  # little cancellation below
    others = points[:, ::stride]
    rank = max(1, min(rank // stride, others.shape[1] - 1))
    queries = points.index_select(1, pick)
    norms = others.square().sum(-1)[:, None, :]
    query_norms = queries.square().sum(-1)[:, :, None]
    itself = (pick % stride == 0).nonzero().flatten()  # samples that are among `others`
    step = max(1, GRID_CHUNK_ELEMENTS // (samples * others.shape[1]))
    kth = []
    for first in range(0, clouds, step):
        last = min(clouds, first + step)
        distances = torch.baddbmm(norms[first:last], queries[first:last], others[first:last].transpose(1, 2), alpha=-2)
        distances.add_(query_norms[first:last])[:, itself, pick.index_select(0, itself) // stride] = float("inf")
        kth.append(distances.view(-1, others.shape[1]).topk(rank, dim=-1, largest=False, sorted=False).values.amax(-1))
    kth = torch.cat(kth).view(clouds, samples).double().clamp_(min=0).sqrt_()
    return kth.median(dim=1).values * GRID_CELL_FACTOR


def _knn_grid(points: Tensor, keep: int, loop: bool) -> Tensor:
    """:func:`_knn_stacked` by cells (see the module docstring): the ``3 x 3 x 3`` block of cells
    around each query, then a block grown to the ``k'``-th distance found for the queries it does
    not certify, then the whole cloud for the (rare) rest."""
    clouds, size, dims = points.shape
    if dims < 3:
        points = torch.cat([points, points.new_zeros(clouds, size, 3 - dims)], -1)
    grid = _Grid(points, keep, loop)
    total = clouds * size
    everything = torch.arange(total, device=points.device)
    rows, found, kth, certified, gap_below, gap_above = _grid_search(grid, everything)
    failed = (~certified).nonzero().flatten()  # places in `rows`
    if failed.numel():
        place = torch.empty_like(rows).scatter_(0, rows, everything)  # sorted position -> place in `rows`
        again = rows.index_select(0, failed)
        # The k'-th distance found bounds the true one: grow each face of the block that is nearer
        # than it by whole cells (none where the block already reaches the grid's edge).
        reach = kth.index_select(0, failed).double().sqrt_().mul_(1 + 1e-6)[:, None]
        side = grid.side.index_select(0, again // size)[:, None]
        tolerance = grid.tolerance.index_select(0, again // size)[:, None]
        grow_below = (reach + tolerance - gap_below.index_select(0, failed)).div_(side).ceil_().clamp_(min=0)
        grow_above = (reach + tolerance - gap_above.index_select(0, failed)).div_(side).ceil_().clamp_(min=0)
        # Too few candidates (reach +inf) or a block too large: the whole cloud instead.
        small = (grow_below.nan_to_num(GRID_MAX_GROWTH + 1).amax(1) <= GRID_MAX_GROWTH) & (
            grow_above.nan_to_num(GRID_MAX_GROWTH + 1).amax(1) <= GRID_MAX_GROWTH)
        rest = [again[~small]]
        if bool(small.any()):
            below = grow_below[small].long().add_(1)
            above = grow_above[small].long().add_(1)
            again, found_again, _, certified_again, _, _ = _grid_search(grid, again[small], below, above)
            found[place.index_select(0, again)] = found_again
            rest.append(again[~certified_again])
        rest = torch.cat(rest)
        if rest.numel():
            found[place.index_select(0, rest)] = _grid_brute_force(grid, rest)
    # Sorted positions back to the caller's order and to indices within the cloud.
    source = grid.order.take(found).sub_((rows // size * size)[:, None])
    destination = grid.order.index_select(0, rows)
    return source.index_select(0, torch.empty_like(rows).scatter_(0, destination, everything)).view(clouds, size, keep)


def _exclusive_cumsum(values: Tensor) -> Tensor:
    return torch.cumsum(values, 0) - values


def _repeat(values: Tensor, counts: Tensor, out: Tensor) -> Tensor:
    """``torch.repeat_interleave(values, counts)`` into the first ``counts.sum()`` entries of ``out``
    (which has at least one more), by one cumulative sum of the jumps between consecutive values:
    several times faster on the CPU."""
    jumps = values.clone()
    jumps[1:] -= values[:-1]
    offsets = _exclusive_cumsum(counts)
    total = int(offsets[-1] + counts[-1]) if counts.numel() else 0
    out = out[:total + 1].zero_().index_add_(0, offsets, jumps)[:total]
    return out.cumsum_(0)


def _ranges(starts: Tensor, lengths: Tensor, out: Tensor, steps: Tensor) -> Tensor:
    """The ranges ``[start, start + length)`` end to end, into ``out`` (``steps``: ``arange``, as long)."""
    listed = _repeat(starts - _exclusive_cumsum(lengths), lengths, out)
    return listed.add_(steps[:listed.numel()])


def _grid_search(grid: _Grid, queries: Tensor, below: Tensor | None = None, above: Tensor | None = None):
    """The ``k'`` nearest of the candidates in a block of cells around each query's cell, for the
    sorted positions ``queries``: ``below``/``above`` ``[M, 3]`` cells on either side along each axis
    (each query its own candidate list), or one cell each way (``None``, ``queries`` increasing: the
    queries of a cell share its list).

    Returns the queries in the order searched, their neighbours (sorted positions), their ``k'``-th
    squared distances, whether each result is certified exact, and the distances from each query to
    the block's lower and upper faces ``[M, 3]`` (+inf where the block reaches the grid's edge)."""
    size, keep, device = grid.size, grid.keep, queries.device
    inf = float("inf")
    count = queries.numel()
    if below is None:
        _, per_group = torch.unique_consecutive(grid.cell_id.index_select(0, queries), return_counts=True)
        group_start = _exclusive_cumsum(per_group)  # into `queries`
        below = above = torch.ones(per_group.numel(), 3, dtype=torch.long, device=device)
    else:
        per_group = torch.ones_like(queries)
        group_start = torch.arange(count, device=device)
    first = queries.index_select(0, group_start)
    cell = grid.cell.index_select(0, first)
    cloud = first // size
    cells_per_axis = grid.cells_per_axis.index_select(0, cloud)
    # The block's columns of cells along z: contiguous runs of sorted positions.
    span = below + above + 1
    low = cell - below
    width_x, width_y = int(span[:, 0].max()), int(span[:, 1].max())
    step_x, step_y = torch.arange(width_x, device=device), torch.arange(width_y, device=device)
    x, y = low[:, 0, None] + step_x, low[:, 1, None] + step_y
    inside_x = (step_x < span[:, 0, None]) & (x >= 0) & (x < cells_per_axis[:, 0, None])
    inside_y = (step_y < span[:, 1, None]) & (y >= 0) & (y < cells_per_axis[:, 1, None])
    x = torch.minimum(x.clamp_(min=0), cells_per_axis[:, 0, None] - 1).mul_(cells_per_axis[:, 1, None])
    y = torch.minimum(y.clamp_(min=0), cells_per_axis[:, 1, None] - 1)
    column = (x[:, :, None] + y[:, None, :]).mul_(cells_per_axis[:, 2, None, None])
    column = column.add_(grid.base.index_select(0, cloud)[:, None, None]).flatten(1)
    run_start = grid.starts.take(column + low[:, 2, None].clamp(min=0))
    run_length = grid.ends.take(column.add_(torch.minimum(cell[:, 2] + above[:, 2], cells_per_axis[:, 2] - 1)[:, None]))
    run_length = run_length.sub_(run_start).mul_((inside_x[:, :, None] & inside_y[:, None, :]).flatten(1))
    # Where each query sits in its list: its own cell is in column (below_x, below_y).
    own_column = (below[:, 0] * width_y + below[:, 1])[:, None]
    own = ((torch.cumsum(run_length, 1) - run_length).gather(1, own_column) - run_start.gather(1, own_column))[:, 0]
    # The faces of the block (float64, less the rounding of cell boundaries): every point outside
    # is at least as far as the nearest face; none lies beyond the grid's edge.
    origin = grid.low.index_select(0, cloud)
    side = grid.side.index_select(0, cloud)[:, None]
    face_below = torch.where(low <= 0, -inf, origin + low * side)
    face_above = torch.where(cell + above >= cells_per_axis - 1, inf, origin + (cell + above + 1) * side)
    # Groups (and their queries) by number of candidates: chunks of similar rows pad little.
    candidates = run_length.sum(1)
    by_size = torch.argsort(candidates, stable=True)
    candidates = candidates.index_select(0, by_size)
    run_start, run_length = run_start.index_select(0, by_size), run_length.index_select(0, by_size)
    per_group = per_group.index_select(0, by_size)
    steps = torch.arange(count + 1, device=device)
    row_group = _repeat(steps[:per_group.numel()], per_group, torch.empty_like(steps))
    rows = _ranges(group_start.index_select(0, by_size), per_group, torch.empty_like(steps), steps)
    rows = queries.index_select(0, rows)
    group = by_size.index_select(0, row_group)  # in the original group order
    query_axes = grid.points.index_select(0, rows).t()
    where = query_axes.t().double()
    gap_below = where - face_below.index_select(0, group)
    gap_above = face_above.index_select(0, group) - where
    radius = (torch.minimum(gap_below, gap_above).amin(1) - grid.tolerance.index_select(0, rows // size)).clamp_(min=0)
    # Squared distances carry a relative rounding error of a few units in the last place.
    limit = (radius.square_() * (1 - 64 * torch.finfo(query_axes.dtype).eps)).to(query_axes.dtype)
    if not grid.loop:
        own = own.index_select(0, group).add_(rows)[:, None]
    # Every list padded to the width of its chunk by a run of +inf points past the cloud's points.
    row_width = candidates.index_select(0, row_group).clamp_(min=keep)
    axes = grid.padded_axes(int(row_width[-1]) if count else 0)
    run_start = torch.cat([run_start, run_start.new_full((run_start.shape[0], 1), grid.points.shape[0])], 1)
    neighbours = torch.empty(count, keep, dtype=torch.long, device=device)
    nearest = torch.empty(count, keep, dtype=query_axes.dtype, device=device)
    # Chunks: rows [start, stop) padded to the widest (the last), at most GRID_CHUNK_ELEMENTS
    # distances; their buffers are allocated once.
    chunks = []
    start = 0
    while start < count:
        stop = min(count, start + max(1, GRID_CHUNK_ELEMENTS // int(row_width[start])))
        while stop - start > 1 and (stop - start) * int(row_width[stop - 1]) > GRID_CHUNK_ELEMENTS:
            stop = start + (stop - start) // 2
        chunks.append((start, stop, int(row_group[start]), int(row_group[stop - 1]) + 1, int(row_width[stop - 1])))
        start = stop
    listed_size = max(((last - first) * columns for _, _, first, last, columns in chunks), default=0)
    distance_size = max(((stop - start) * columns for start, stop, _, _, columns in chunks), default=0)
    listed_buffer = torch.empty(listed_size + 1, dtype=torch.long, device=device)
    block_buffer = axes.new_empty(3 * listed_size)
    difference_buffer = axes.new_empty(3 * distance_size)
    steps = torch.arange(listed_size, device=device)
    for start, stop, first_group, last_group, columns in chunks:
        groups, rows_here = last_group - first_group, stop - start
        lengths = torch.cat([run_length[first_group:last_group], columns - candidates[first_group:last_group, None]], 1)
        listed = _ranges(run_start[first_group:last_group].flatten(), lengths.flatten(), listed_buffer, steps)
        block = torch.index_select(axes, 1, listed, out=block_buffer[:3 * listed.numel()].view(3, -1))
        local = row_group[start:stop] - first_group
        difference = difference_buffer[:3 * rows_here * columns].view(3, rows_here, columns)
        for axis in range(3):  # along dim 0, index_select runs on all threads
            torch.index_select(block[axis].view(groups, columns), 0, local, out=difference[axis])
        difference.sub_(query_axes[:, start:stop, None]).square_()
        distance = difference[0].add_(difference[1]).add_(difference[2])
        if not grid.loop:
            distance.scatter_(1, own[start:stop], inf)
        torch.topk(distance, keep, dim=1, largest=False, sorted=True, out=(nearest[start:stop], neighbours[start:stop]))
        found = neighbours[start:stop]
        found.copy_(listed.index_select(0, found.add_(local[:, None].mul_(columns)).flatten()).view(rows_here, keep))
    kth = nearest[:, -1]
    return rows, neighbours, kth, (kth <= limit) & (kth < inf), gap_below, gap_above


def _grid_brute_force(grid: _Grid, rows: Tensor) -> Tensor:
    """The exact neighbours (sorted positions) of the sorted positions ``rows`` against their whole
    cloud, in chunks of at most ``GRID_CHUNK_ELEMENTS`` distances (or one row)."""
    size, keep = grid.size, grid.keep
    axes = grid.axes[:, :grid.points.shape[0]].reshape(3, -1, size)  # [3, B, n]
    result = torch.empty(rows.numel(), keep, dtype=torch.long, device=rows.device)
    step = max(1, GRID_CHUNK_ELEMENTS // size)
    for start in range(0, rows.numel(), step):
        chunk = rows[start:start + step]
        cloud = chunk // size
        q = grid.points.index_select(0, chunk)
        distance = axes[0].index_select(0, cloud).sub_(q[:, 0, None]).square_()
        for axis in (1, 2):
            difference = axes[axis].index_select(0, cloud).sub_(q[:, axis, None])
            distance.addcmul_(difference, difference)
        if not grid.loop:
            distance.scatter_(1, (chunk - cloud * size)[:, None], float("inf"))
        nearest = distance.topk(keep, dim=1, largest=False, sorted=True).indices
        result[start:start + step] = nearest + (cloud * size)[:, None]
    return result


def _edges(neighbours: Tensor, offsets: Tensor) -> tuple[Tensor, Tensor]:
    """Global (source, target) indices from per-cloud neighbour indices ``[B, n, k']``."""
    clouds, size, keep = neighbours.shape
    local_target = torch.arange(size, device=neighbours.device).view(1, size, 1).expand(clouds, size, keep)
    source = (neighbours + offsets.view(-1, 1, 1)).reshape(-1)
    target = (local_target + offsets.view(-1, 1, 1)).reshape(-1)
    return source, target


def _knn_torch(x: Tensor, k: int, batch: Tensor | None, loop: bool) -> Tensor:
    if batch is None or x.shape[0] == 0:
        neighbours = _knn_stacked(x.unsqueeze(0), k, loop)
        return torch.stack(_edges(neighbours, torch.zeros(1, dtype=torch.long, device=x.device)))
    counts = torch.unique_consecutive(batch, return_counts=True)[1]
    if bool((counts == counts[0]).all()):
        # Clouds of one size (a DataLoader batch of 1024-point clouds): one stacked search, and the
        # edges straight into edge_index (no gather of x, no concatenation).
        neighbours = _knn_stacked(x.reshape(counts.numel(), int(counts[0]), -1), k, loop)
        clouds, size, keep = neighbours.shape
        edge_index = torch.empty(2, clouds * size * keep, dtype=torch.long, device=x.device)
        offsets = torch.arange(clouds, device=x.device).view(-1, 1, 1) * size
        torch.add(neighbours, offsets, out=edge_index[0].view(clouds, size, keep))
        edge_index[1].view(clouds * size, keep).copy_(torch.arange(clouds * size, device=x.device)[:, None])
        return edge_index
    offsets = torch.cumsum(counts, 0) - counts
    sources, targets = [], []
    # Clouds of one size are searched together; each distinct size is one more search.
    for size in torch.unique(counts).tolist():
        same = (counts == size).nonzero().flatten()
        index = (offsets[same].view(-1, 1) + torch.arange(size, device=x.device)).flatten()
        neighbours = _knn_stacked(x[index].view(len(same), size, -1), k, loop)
        source, target = _edges(neighbours, offsets[same])
        sources.append(source)
        targets.append(target)
    source, target = torch.cat(sources), torch.cat(targets)
    order = torch.argsort(target, stable=True)  # group edges by target, as the other backends do
    return torch.stack([source[order], target[order]])


def _knn_fixed_size(x: Tensor, k: int, batch: Tensor | None, loop: bool, cloud_size: int) -> tuple[Tensor, Tensor]:
    clouds = x.shape[0] // cloud_size
    offsets = torch.arange(clouds, device=x.device) * cloud_size
    if batch is not None:
        expected = torch.arange(clouds, device=x.device).repeat_interleave(cloud_size)
        torch._assert_async((batch == expected).all(), "knn_graph: `batch` does not hold clouds of `cloud_size` points")
    return _edges(_knn_stacked(x.view(clouds, cloud_size, x.shape[1]), k, loop), offsets)


def regular_degree(k: int, cloud_size: int | None) -> int | None:
    """``k`` when :func:`knn_graph` with ``cloud_size`` gives every point exactly ``k`` neighbours,
    listed point by point (clouds larger than ``k``, no loops), else ``None``: the value layers take
    as their ``k`` argument."""
    return k if cloud_size is not None and cloud_size > k else None


def check_knn_layout(edge_index: Tensor, num_nodes: int, k: int) -> None:
    """Check that ``edge_index`` lists exactly ``k`` incoming edges per node, node by node (what
    :func:`knn_graph` returns when every cloud has more than ``k`` points), so that layers may
    reduce over neighbours as ``[N, k]`` blocks. The shape is checked at once, the order
    asynchronously (``torch._assert_async``: no host synchronisation)."""
    check_int("k", k)
    if edge_index.shape[1] != num_nodes * k:
        raise ValueError(f"`k`={k} promises {num_nodes} x {k} edges grouped by target, but edge_index has "
                         f"{edge_index.shape[1]} edges")
    expected = torch.arange(num_nodes, device=edge_index.device).repeat_interleave(k)
    torch._assert_async((edge_index[1] == expected).all(), "edge_index does not list k edges per node, node by node")


def knn_graph(
    x: Tensor,
    k: int,
    batch: Tensor | None = None,
    *,
    loop: bool = False,
    flow: str = "source_to_target",
    backend: str = "auto",
    cloud_size: int | None = None,
) -> Tensor:
    r"""The exact ``k``-nearest-neighbour graph of the points (or features) ``x``, per cloud.

    Args:
        x (torch.Tensor): points or node features :math:`(N, D)`.
        k (int): neighbours per point.
        batch (torch.Tensor, optional): sorted cloud index of every point :math:`(N,)`, as PyG's
            ``DataLoader`` builds it. (default: one cloud)
        loop (bool): count each point as its own neighbour. (default: ``False``)
        flow (str): ``"source_to_target"`` returns ``[neighbour, centre]`` rows, PyG's layout
            for message passing; ``"target_to_source"`` the reverse. (default:
            ``"source_to_target"``)
        backend (str): ``"torch"`` (this module), ``"torch_cluster"``, ``"pyg_lib"`` or
            ``"auto"`` (for 3-D points on the CPU pyg-lib, then torch-cluster when importable;
            else torch, which is faster for features: see ``_automatic_backend``).
        cloud_size (int, optional): every cloud has exactly this many points, so ``x`` holds
            ``N / cloud_size`` consecutive clouds. Under ``torch.compile`` (and tracing) and on
            CUDA the search then depends on shapes only: no host synchronisation and no graph
            break; in eager mode on the CPU, 3-D points take the cell grid, whose shapes depend on
            the data (reading them synchronises with nothing on the CPU). A given ``batch`` is
            checked asynchronously (``torch._assert_async``) instead of on the host. Always uses
            the torch backend. (default: sizes are read from ``batch``)

    Returns:
        ``edge_index`` :math:`(2, E)` with :math:`E = N k` when every cloud has more than ``k``
        points (see the module docstring for smaller clouds).

    Example::

        >>> import torch
        >>> from mgic_geo.nn import knn_graph
        >>> pos = torch.tensor([[0.0, 0, 0], [1, 0, 0], [3, 0, 0], [10, 0, 0]])
        >>> knn_graph(pos, k=1)
        tensor([[1, 0, 1, 2],
                [0, 1, 2, 3]])
    """
    _check(x, k, batch, flow, backend, cloud_size)
    with torch.no_grad():  # indices only: nothing to differentiate, and no graph to keep
        edge_index = _search(x, k, batch, loop, backend, cloud_size)
    return edge_index if flow == "source_to_target" else edge_index.flip(0)


def _automatic_backend(x: Tensor) -> str:
    """A library for 3-D points on the CPU, ours elsewhere. Measured before the cell grid
    (``mgic-geo bench knn``, 2-core CPU, 32 clouds x 1024 points, k = 10): torch-cluster's KD-tree
    took 0.60x our time on 3-D points (0.10x for one 16,384-point cloud) but 18x on 64-dim features,
    where a tree prunes nothing. With the grid (module docstring) it takes about 1.1-1.2x our time
    on the batch (about as long for one 16,384-point cloud, 3x for one of 200,000 points): the
    choice is kept as it was."""
    if x.device.type == "cpu" and x.shape[-1] <= 3:
        for library in ("pyg_lib", "torch_cluster"):
            if _available(library):
                return library
    return "torch"


def _search(x: Tensor, k: int, batch: Tensor | None, loop: bool, backend: str, cloud_size: int | None) -> Tensor:
    if cloud_size is not None:
        return torch.stack(_knn_fixed_size(x, k, batch, loop, cloud_size))
    if backend == "auto":
        backend = _automatic_backend(x)
    if backend == "torch":
        edge_index = _knn_torch(x, k, batch, loop)
    elif backend == "torch_cluster":
        if not _available("torch_cluster"):
            raise ValueError("`backend`='torch_cluster' but torch-cluster is not installed (pip install torch-cluster)")
        import torch_cluster

        edge_index = torch_cluster.knn_graph(x, k, batch, loop=loop, flow="source_to_target")
    else:
        if not _available("pyg_lib"):
            raise ValueError("`backend`='pyg_lib' but pyg-lib is not installed (see PyG's installation guide)")
        from torch_geometric.nn import knn_graph as pyg_knn_graph

        edge_index = pyg_knn_graph(x, k, batch, loop=loop, flow="source_to_target")
    return edge_index

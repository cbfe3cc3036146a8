"""Exact kNN of low-dimensional points by a cell grid (the CPU search of :func:`~mgic_geo.nn.knn.knn_graph`).

For points of 1 to 3 dimensions on the CPU in eager mode
(float32/float64, finite, clouds of at least ``GRID_MIN_POINTS`` and ``16 k`` points: the
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
"""
from __future__ import annotations

import torch
from torch import Tensor

from mgic_geo.nn import cost

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


def grid_applies(points: Tensor, keep: int) -> bool:
    """Whether :func:`knn_grid` searches ``points`` ``[B, n, D]``: CPU, float32/float64, ``D <= 3``,
    ``n >= GRID_MIN_POINTS``, finite coordinates, and neither compiling nor tracing (the grid's
    shapes depend on the data; on the CPU reading them synchronises with nothing), nor counting MACs."""
    if (points.device.type != "cpu" or points.dtype not in (torch.float32, torch.float64)
            or not grid_shape(points.shape[1], points.shape[-1], keep)):
        return False
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    if cost.counting_now():  # a MAC count (mgic_geo.complexity) counts the dense search's products
        return False
    return bool(torch.isfinite(points).all())


def grid_shape(size: int, dims: int, keep: int) -> bool:
    """Whether clouds of ``size`` points of ``dims`` dimensions, ``keep`` neighbours each, suit the grid."""
    return 1 <= dims <= 3 and size >= max(GRID_MIN_POINTS, 16 * keep)


def grid_buffer_elements(size: int) -> int:
    """The most distance-sized elements the grid holds at once for clouds of ``size`` points: the
    squared differences along the 3 axes of one chunk (``3 x GRID_CHUNK_ELEMENTS``, or of one row
    of up to ``size`` candidates), or the distances of the estimate of the cell side."""
    return max(3 * max(GRID_CHUNK_ELEMENTS, size), GRID_SAMPLES * size)


class _Grid:
    """The cells of ``B`` clouds of ``n`` points, points sorted by cell (see :func:`knn_grid`)."""

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


def knn_grid(points: Tensor, keep: int, loop: bool) -> Tensor:
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

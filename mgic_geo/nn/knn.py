"""Exact k-nearest-neighbour graphs in plain torch, with bounded memory.

PyG 2.8's ``knn_graph`` needs ``pyg-lib`` (not on PyPI) and ``torch-cluster`` compiles from source
for minutes, so the package ships its own exact kNN and dispatches to those libraries only when
they are importable (``backend="auto"``).

Method (``backend="torch"``): clouds are contiguous runs of equal ``batch`` values (PyG's
convention, ``batch`` sorted). Clouds of equal size are stacked and searched together, by one of
two searches (:func:`_knn_stacked`):

* The cell grid (:mod:`mgic_geo.nn.knn_grid`), for points of 1 to 3 dimensions on the CPU in eager
  mode (float32/float64, finite, clouds of at least ``GRID_MIN_POINTS`` and ``16 k`` points).
* The dense search (:func:`_knn_dense`), for everything else (features, small clouds, CUDA,
  compilation): every cloud is first centred on its mean (distances do not change, rounding does:
  less cancellation below). Within a cloud the candidates of a chunk of query points are ranked by
  ``|p|^2 - 2 q.p`` (the squared distance less the query's own norm, which does not change the
  order), computed with one batched matrix product into a preallocated buffer, and reduced with
  one ``topk`` (the k smallest, nearest first). Chunks (several small clouds, one cloud, or a
  block of query rows of a large cloud) hold at most ``MAX_DISTANCE_ELEMENTS`` scores: 4 MiB in
  float32, small enough to stay in cache between the product and ``topk``, and a single 200,000-point cloud never needs
  an ``N^2`` buffer. On CPU, rows of ``n < 64 k <= 1.5 n`` candidates are padded with ``+inf`` to
  ``64 k`` columns, where torch's CPU ``topk`` switches from nth_element to a much cheaper heap
  (see :func:`_chunk_shape`).

``mgic-geo bench knn`` times both searches against the naive search and the libraries
(``docs/benchmarks.md`` has the latest report).

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
from another cloud. :func:`knn_graph` then warns (once per call, naming the smallest cloud's size
and the neighbours its points get).
"""
from __future__ import annotations

import importlib.util
import warnings

import torch
from torch import Tensor

from mgic_geo.nn import cost
from mgic_geo.nn.adjacency import mark_valid
from mgic_geo.nn.knn_grid import grid_applies, grid_buffer_elements, grid_shape, knn_grid
from mgic_geo.validation import check_int

MAX_DISTANCE_ELEMENTS = 2**20
# On CUDA each chunk costs kernel launches and a GPU has no cache to stay in: bigger chunks (256 MiB
# of float32 scores). Measured on an H200, B = 32 x 1024 points, k = 10: 6.6 ms in 4 MiB chunks
# against 1.4 ms for one cdist + topk over all 128 MiB.
MAX_DISTANCE_ELEMENTS_CUDA = 2**26
BACKENDS = ("auto", "torch", "torch_cluster", "pyg_lib")


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
    points on the CPU in eager mode (:func:`grid_applies`), else the dense search."""
    clouds, size, dims = points.shape
    keep = min(k, size if loop else size - 1)
    if keep <= 0:
        return points.new_empty((clouds, size, 0), dtype=torch.long)
    # The distance products of the dense search, whichever method runs: the accounting of
    # :mod:`mgic_geo.complexity` (the paper's FLOP tables) does not depend on the machine.
    cost.report("knn", clouds * size * size * (dims + 1))
    if grid_applies(points, keep):
        return knn_grid(points, keep, loop)
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


def cpu_distance_buffer_elements(clouds: int, size: int, k: int, dims: int | None = None) -> int:
    """The most distance-sized elements :func:`knn_graph` (``backend="torch"``, ``loop=False``) holds
    at once on the CPU for ``clouds`` clouds of ``size`` points: the cell grid's (3-D points that
    suit it) or one chunk of the dense search's scores, ``+inf`` padding included.

    Args:
        clouds (int): clouds in the batch.
        size (int): points per cloud.
        k (int): neighbours per point (at most ``size - 1`` are kept).
        dims (int, optional): point dimensions; ``None`` for features, which always take the dense
            search. (default: ``None``)

    Returns:
        int: elements (multiply by the element size for bytes).
    """
    keep = min(k, size - 1)
    if dims is not None and grid_shape(size, dims, keep):
        return grid_buffer_elements(size)
    clouds_per_chunk, rows, width = _chunk_shape(clouds, size, keep, "cpu")
    return clouds_per_chunk * min(size, rows) * width


def _edges(neighbours: Tensor, offsets: Tensor) -> tuple[Tensor, Tensor]:
    """Global (source, target) indices from per-cloud neighbour indices ``[B, n, k']``."""
    clouds, size, keep = neighbours.shape
    local_target = torch.arange(size, device=neighbours.device).view(1, size, 1).expand(clouds, size, keep)
    source = (neighbours + offsets.view(-1, 1, 1)).reshape(-1)
    target = (local_target + offsets.view(-1, 1, 1)).reshape(-1)
    return source, target


def _knn_torch(x: Tensor, k: int, batch: Tensor | None, loop: bool) -> tuple[Tensor, int]:
    """The edges and the size of the smallest cloud."""
    if batch is None or x.shape[0] == 0:
        neighbours = _knn_stacked(x.unsqueeze(0), k, loop)
        return torch.stack(_edges(neighbours, torch.zeros(1, dtype=torch.long, device=x.device))), x.shape[0]
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
        return edge_index, size
    offsets = torch.cumsum(counts, 0) - counts
    sources, targets = [], []
    sizes = torch.unique(counts).tolist()
    # Clouds of one size are searched together; each distinct size is one more search.
    for size in sizes:
        same = (counts == size).nonzero().flatten()
        index = (offsets[same].view(-1, 1) + torch.arange(size, device=x.device)).flatten()
        neighbours = _knn_stacked(x[index].view(len(same), size, -1), k, loop)
        source, target = _edges(neighbours, offsets[same])
        sources.append(source)
        targets.append(target)
    source, target = torch.cat(sources), torch.cat(targets)
    order = torch.argsort(target, stable=True)  # group edges by target, as the other backends do
    return torch.stack([source[order], target[order]]), min(sizes)


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
        points.

    Warns:
        UserWarning: when a cloud has ``k`` points or fewer (``k - 1`` or fewer with ``loop``):
            its points then get every other point of their cloud (and themselves with ``loop``),
            fewer than ``k`` neighbours, never an error or a point of another cloud. One warning
            per call, naming the smallest cloud's size and the neighbours its points get; none
            under ``torch.compile`` or tracing. The sizes come from ``cloud_size`` or ``x``'s shape
            where known, else from the sizes the search reads anyway (a library backend given
            ``batch`` reads them, one host synchronisation, only when it returned fewer than
            :math:`N k` edges).

    Example::

        >>> import torch
        >>> from mgic_geo.nn import knn_graph
        >>> pos = torch.tensor([[0.0, 0, 0], [1, 0, 0], [3, 0, 0], [10, 0, 0]])
        >>> knn_graph(pos, k=1)
        tensor([[1, 0, 1, 2],
                [0, 1, 2, 3]])
    """
    _check(x, k, batch, flow, backend, cloud_size)
    if cloud_size is not None or batch is None:  # the sizes are known from shapes: warn before the search
        _warn_small_clouds(k, cloud_size or x.shape[0], loop)
    with torch.no_grad():  # indices only: nothing to differentiate, and no graph to keep
        edge_index, smallest = _search(x, k, batch, loop, backend, cloud_size)
    if smallest is not None and not (cloud_size is not None or batch is None):
        _warn_small_clouds(k, smallest, loop)
    edge_index = edge_index if flow == "source_to_target" else edge_index.flip(0)
    return mark_valid(edge_index, x.shape[0])  # valid by construction: layers skip the index check


def _warn_small_clouds(k: int, size: int, loop: bool) -> None:
    """Warn (from the caller of :func:`knn_graph`) when a cloud of ``size`` points gives fewer than ``k`` neighbours."""
    keep = min(k, size if loop else size - 1)
    if size == 0 or keep >= k or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return
    which = "every point of its cloud, itself included" if loop else "every other point of its cloud"
    warnings.warn(f"knn_graph: k={k} but a cloud has only {size} points, so each of its points gets {keep} "
                  f"neighbours ({which}) instead of {k}", UserWarning, stacklevel=3)


def _automatic_backend(x: Tensor) -> str:
    """A library for 3-D points on the CPU, ours elsewhere: a library's KD-tree prunes well in 3-D
    and nothing on features (``mgic-geo bench knn`` compares them on both)."""
    if x.device.type == "cpu" and x.shape[-1] <= 3:
        for library in ("pyg_lib", "torch_cluster"):
            if _available(library):
                return library
    return "torch"


def _search(x: Tensor, k: int, batch: Tensor | None, loop: bool, backend: str,
            cloud_size: int | None) -> tuple[Tensor, int | None]:
    """The edges and the size of the smallest cloud where it is known or needed for the warning
    (``None``: every cloud had more than ``k`` points, or the caller knows the sizes from shapes)."""
    if cloud_size is not None:
        return torch.stack(_knn_fixed_size(x, k, batch, loop, cloud_size)), None
    if backend == "auto":
        backend = _automatic_backend(x)
    if backend == "torch":
        return _knn_torch(x, k, batch, loop)
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
    smallest = None
    if batch is not None and edge_index.shape[1] < x.shape[0] * k:  # some cloud had k points or fewer
        smallest = int(torch.unique_consecutive(batch, return_counts=True)[1].min())
    return edge_index, smallest

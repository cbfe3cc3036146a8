import pytest
import torch

from mgic_geo.nn import knn, knn_grid
from mgic_geo.nn.knn import knn_graph


def brute_force_distances(x, batch, k, loop):
    """Per target, the sorted distances to its k nearest points of the same cloud."""
    distances = torch.cdist(x.double(), x.double(), compute_mode="donot_use_mm_for_euclid_dist")
    distances[batch[:, None] != batch[None, :]] = float("inf")
    if not loop:
        distances.fill_diagonal_(float("inf"))
    result = []
    for row in distances:
        finite = row[torch.isfinite(row)]
        result.append(finite.sort().values[:k])
    return result


def found_distances(x, edge_index):
    source, target = edge_index
    distances = (x.double()[source] - x.double()[target]).norm(dim=1)
    return [distances[target == i].sort().values for i in range(x.shape[0])]


@pytest.mark.parametrize("dim", [3, 64])
@pytest.mark.parametrize("loop", [False, True])
def test_equals_brute_force_per_cloud(dim, loop):
    sizes = [50, 50, 7, 120, 3, 1, 50]
    x = torch.randn(sum(sizes), dim)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    edge_index = knn_graph(x, 10, batch, loop=loop, backend="torch")
    source, target = edge_index
    assert (batch[source] == batch[target]).all()  # never an index from another cloud
    if not loop:
        assert (source != target).all()
    for found, expected in zip(found_distances(x, edge_index), brute_force_distances(x, batch, 10, loop)):
        torch.testing.assert_close(found, expected, rtol=1e-4, atol=1e-4)


def test_small_clouds_get_all_their_other_points():
    x = torch.randn(6, 3)
    batch = torch.tensor([0, 0, 0, 1, 1, 2])
    edges = set(map(tuple, knn_graph(x, 10, batch, backend="torch").T.tolist()))
    assert edges == {(1, 0), (2, 0), (0, 1), (2, 1), (0, 2), (1, 2), (4, 3), (3, 4)}
    with_loops = knn_graph(x, 10, batch, loop=True, backend="torch")
    assert with_loops.shape[1] == 3 * 3 + 2 * 2 + 1


def test_layout_is_source_to_target_grouped_by_target_nearest_first():
    pos = torch.tensor([[0.0, 0, 0], [1, 0, 0], [3, 0, 0], [10, 0, 0]])
    assert knn_graph(pos, 2).tolist() == [[1, 2, 0, 2, 1, 0, 2, 1], [0, 0, 1, 1, 2, 2, 3, 3]]
    assert knn_graph(pos, 1, flow="target_to_source").tolist() == [[0, 1, 2, 3], [1, 0, 1, 2]]


def brute_force_neighbours(x, k, loop):
    """Reference: float64 distances computed directly (no |p|^2 - 2 q.p expansion), stable sort:
    nearest first, ties by index."""
    distances = torch.cdist(x.double(), x.double(), compute_mode="donot_use_mm_for_euclid_dist")
    if not loop:
        distances.fill_diagonal_(float("inf"))
    order = distances.sort(dim=1, stable=True)
    return order.indices[:, :k], order.values[:, :k]


@pytest.mark.parametrize("size, k", [(300, 10), (300, 20), (1100, 20), (64, 30)])
@pytest.mark.parametrize("loop", [False, True])
def test_float64_equals_brute_force_neighbour_by_neighbour(size, k, loop):
    # Random float64 points have no ties: the fast path (chunks, +inf padding for the CPU topk
    # heap at n < 64 k <= 1.5 n, e.g. 1100 points with k = 20) gives exactly the brute-force
    # neighbours in the same order.
    x = torch.randn(size, 3, dtype=torch.float64) * 10 + 100  # far from the origin: centring matters
    expected, _ = brute_force_neighbours(x, k, loop)
    found = knn_graph(x, k, loop=loop, backend="torch")
    assert torch.equal(found[1], torch.arange(size).repeat_interleave(k))
    assert torch.equal(found[0].view(size, k), expected)


@pytest.mark.parametrize("dim", [3, 64])
@pytest.mark.parametrize("k", [10, 20])
def test_float32_matches_brute_force_up_to_rounding(dim, k):
    # float32 scores carry rounding: a neighbour may differ from float64 brute force only where
    # its distance is within rounding of the k-th one; the sorted distances agree.
    clouds, size = 3, 500
    x = torch.randn(clouds * size, dim) + 5
    batch = torch.arange(clouds).repeat_interleave(size)
    found = knn_graph(x, k, batch, backend="torch")
    expected = brute_force_distances(x, batch, k, loop=False)
    distances = (x.double()[found[0]] - x.double()[found[1]]).norm(dim=1).view(-1, k)
    assert (distances[:, 1:] >= distances[:, :-1] - 1e-4).all()  # nearest first
    torch.testing.assert_close(distances, torch.stack(expected), rtol=1e-5, atol=1e-5)
    same = (found[0].view(-1, k).sort(1).values == torch.stack(
        [brute_force_neighbours(x[batch == c], k, False)[0] + c * size for c in range(clouds)]).view(-1, k).sort(1).values)
    assert same.all(1).float().mean() > 0.99  # different sets only at near-ties


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [6, 20])
def test_exact_ties_keep_the_brute_force_distances(dtype, k):
    # Integer grid points: every score is exact in float32 and float64, and many distances tie.
    # Documented behaviour: the distances (and all neighbours strictly nearer than the k-th
    # distance) equal brute force; which of the points tied at the k-th distance are kept is
    # unspecified, but they are distinct points at exactly that distance.
    grid = torch.stack(torch.meshgrid(*[torch.arange(8)] * 3, indexing="ij"), -1).reshape(-1, 3).to(dtype)
    x = torch.cat([grid, grid[:40]])  # 40 duplicated points: ties at distance 0 too
    found = knn_graph(x, k, backend="torch")
    neighbours = found[0].view(-1, k)
    _, expected_distances = brute_force_neighbours(x, k, False)
    distances = (x.double()[neighbours] - x.double()[:, None]).norm(dim=-1)
    assert torch.equal(distances, expected_distances)  # exact, nearest first
    assert (neighbours != torch.arange(x.shape[0])[:, None]).all()
    assert (neighbours.sort(1).values.diff(dim=1) != 0).all()  # no point twice
    full = torch.cdist(x.double(), x.double(), compute_mode="donot_use_mm_for_euclid_dist").fill_diagonal_(float("inf"))
    kth = expected_distances[:, -1:]
    strictly_nearer = full < kth
    kept = torch.zeros_like(strictly_nearer).scatter_(1, neighbours, True)
    assert (kept | ~strictly_nearer).all()  # every strictly nearer point is kept


def test_cpu_topk_padding_rule():
    # Rows are padded with +inf up to 64 k columns (CPU topk's heap threshold) when n < 64 k <= 1.5 n.
    assert knn._chunk_shape(32, 1024, 20, "cpu") == (1, 1024, 1280)
    assert knn._chunk_shape(32, 1024, 10, "cpu") == (1, 1024, 1024)  # 64 k <= n already
    assert knn._chunk_shape(32, 1024, 30, "cpu") == (1, 1024, 1024)  # 64 k > 1.5 n: not worth it
    assert knn._chunk_shape(32, 1024, 20, "meta") == (32, 1024, 1024)  # CPU rules only: no padding, big chunks
    assert knn._chunk_shape(1, 200_000, 10, "cuda") == (1, 2**26 // 200_000, 200_000)
    assert knn._chunk_shape(32, 100, 10, "cpu") == (32, 100, 100)
    assert knn._chunk_shape(1, 200_000, 10, "cpu") == (1, 5, 200_000)


def test_chunking_keeps_results_and_bounds_the_buffer(monkeypatch):
    x = torch.randn(300, 8)  # features: the dense search (3-D points of large clouds take the grid)
    expected = knn_graph(x, 5, backend="torch")
    monkeypatch.setattr(knn, "MAX_DISTANCE_ELEMENTS", 1000)  # 3 query rows per chunk
    seen = []
    original = torch.topk

    def recording_topk(scores, *args, **kwargs):
        seen.append(scores.numel())
        return original(scores, *args, **kwargs)

    monkeypatch.setattr(torch, "topk", recording_topk)
    assert torch.equal(knn_graph(x, 5, backend="torch"), expected)
    assert max(seen) <= 1000 and len(seen) == 100


def test_batch_from_a_pyg_dataloader():
    from torch_geometric.data import Data
    from torch_geometric.loader import DataLoader

    clouds = [Data(pos=torch.randn(n, 3)) for n in (20, 30, 20)]
    data = next(iter(DataLoader(clouds, batch_size=3)))
    edge_index = knn_graph(data.pos, 4, data.batch)
    assert edge_index.shape == (2, 70 * 4)
    assert (data.batch[edge_index[0]] == data.batch[edge_index[1]]).all()


def test_fixed_cloud_size_equals_the_general_search():
    x = torch.randn(4 * 30, 3)
    batch = torch.repeat_interleave(torch.arange(4), 30)
    expected = knn_graph(x, 6, batch, backend="torch")
    assert torch.equal(knn_graph(x, 6, batch, cloud_size=30), expected)
    assert torch.equal(knn_graph(x, 6, cloud_size=30), expected)
    assert knn_graph(x[:0], 6, cloud_size=30).shape == (2, 0)


def test_fixed_cloud_size_checks_batch_without_a_host_sync():
    x = torch.randn(60, 3)
    wrong = torch.repeat_interleave(torch.arange(3), torch.tensor([10, 30, 20]))
    with pytest.raises(RuntimeError, match="does not hold clouds of `cloud_size` points"):
        knn_graph(x, 4, wrong, cloud_size=20)


def test_fixed_cloud_size_compiles_without_graph_breaks():
    import torch._dynamo

    def search(x, batch):
        return knn_graph(x, 5, batch, cloud_size=32)

    explanation = torch._dynamo.explain(search)(torch.randn(64, 3), torch.arange(2).repeat_interleave(32))
    assert explanation.graph_break_count == 0, explanation.break_reasons


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(x=torch.randn(5)), r"`x` must be a floating-point \[N, D\] tensor, got \(5,\)"),
        (dict(x=torch.ones(5, 3, dtype=torch.long)), r"`x` must be a floating-point"),
        (dict(k=0), r"`k` must be a positive integer, got 0"),
        (dict(batch=torch.zeros(4, dtype=torch.long)), r"`batch` must be an integer vector with one entry per point \(5\)"),
        (dict(batch=torch.tensor([0, 1, 0, 1, 1])), r"`batch` must be sorted"),
        (dict(flow="up"), r"`flow` must be"),
        (dict(backend="faiss"), r"`backend` must be one of"),
        (dict(cloud_size=0), r"`cloud_size` must be a positive integer, got 0"),
        (dict(cloud_size=2), r"`cloud_size`=2 must divide the number of points 5"),
    ],
)
def test_bad_input_is_a_clear_error(kwargs, message):
    arguments = dict(x=torch.randn(5, 3), k=2) | kwargs
    with pytest.raises(ValueError, match=message):
        knn_graph(arguments.pop("x"), arguments.pop("k"), **arguments)


@pytest.mark.parametrize("backend", ["torch_cluster", "pyg_lib"])
def test_optional_backends_agree_with_ours(backend):
    if not knn._available(backend):
        with pytest.raises(ValueError, match=f"`backend`='{backend}' but"):
            knn_graph(torch.randn(5, 3), 2, backend=backend)
        pytest.skip(f"{backend} is not installed: only its clear error is checked")
    x = torch.randn(200, 3)
    batch = torch.repeat_interleave(torch.arange(4), 50)
    theirs, ours = knn_graph(x, 10, batch, backend=backend), knn_graph(x, 10, batch, backend="torch")
    for a, b in zip(found_distances(x, theirs), found_distances(x, ours)):
        torch.testing.assert_close(a, b)


def test_duplicate_points_are_found_at_distance_zero():
    x = torch.randn(30, 3).repeat(2, 1)  # every point twice
    batch = torch.repeat_interleave(torch.arange(2), torch.tensor([25, 35]))
    edge_index = knn_graph(x, 3, batch, backend="torch")
    source, target = edge_index
    assert (source != target).all() and (batch[source] == batch[target]).all()
    for found, expected in zip(found_distances(x, edge_index), brute_force_distances(x, batch, 3, False)):
        torch.testing.assert_close(found, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size, k", [(512, 10), (64, 4)])  # padded to 64 k = 640 columns on CPU; not padded
def test_traced_knn_has_no_graph_break_and_equals_eager(size, k):
    import torch._dynamo

    torch.manual_seed(0)
    pos = torch.rand(2 * size, 3, dtype=torch.float64)
    batch = torch.arange(2).repeat_interleave(size)

    def graph(points):
        return knn_graph(points, k, batch, cloud_size=size)

    explanation = torch._dynamo.explain(graph)(pos)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    torch._dynamo.reset()
    traced = torch.compile(graph, backend="eager", fullgraph=True)(pos)
    assert torch.equal(traced, graph(pos))


@pytest.mark.parametrize("dims, expected", [(3, "torch_cluster"), (8, "torch")])
def test_auto_uses_a_library_only_for_3d_points_on_cpu(dims, expected, monkeypatch):
    monkeypatch.setattr(knn, "_available", lambda module: module == "torch_cluster")
    assert knn._automatic_backend(torch.rand(10, dims)) == expected
    assert knn._automatic_backend(torch.rand(10, dims, device="meta")) == "torch"


# ----------------------------------------------------------------------------------------------
# The cell grid (CPU, D <= 3, clouds of at least GRID_MIN_POINTS points): exact, like the dense search


def make_cloud(kind, size, dtype, generator):
    """Point clouds that stress the grid: uneven density, degenerate shapes, duplicates, ties."""
    uniform = lambda *shape: torch.rand(*shape, generator=generator, dtype=torch.float64)  # noqa: E731
    if kind == "cube":
        x = uniform(size, 3)
    elif kind == "sphere":  # a surface: what ModelNet clouds look like
        x = torch.nn.functional.normalize(torch.randn(size, 3, generator=generator, dtype=torch.float64), dim=1)
    elif kind == "plane":  # flat: one layer of cells
        x = torch.cat([uniform(size, 2), torch.full((size, 1), 0.25, dtype=torch.float64)], 1)
    elif kind == "line":  # along a diagonal
        x = uniform(size, 1) * torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    elif kind == "clusters":  # four tight clusters far apart: at most GRID_CELLS_PER_POINT cells
        centres = torch.randint(0, 4, (size, 1), generator=generator).double() * 100
        x = centres + 1e-3 * torch.randn(size, 3, generator=generator, dtype=torch.float64)
    elif kind == "far":  # far from the origin
        x = uniform(size, 3) + 1e4
    elif kind == "duplicates":  # every point three times
        x = uniform(size // 3 + 1, 3).repeat(3, 1)[:size]
    elif kind == "identical":
        x = torch.full((size, 3), 0.5, dtype=torch.float64)
    elif kind == "integers":  # exact float32 scores, many ties
        x = torch.randint(0, 7, (size, 3), generator=generator).double()
    else:
        raise ValueError(kind)
    return x.to(dtype)


def assert_exact_knn(x, batch, k, loop, edge_index, *, exact_order):
    """Against float64 brute force, cloud by cloud: the k' nearest (k' = min(k, n) or min(k, n - 1)),
    nearest first, no point twice, never another cloud, self only with loop; the sorted distances
    equal brute force and every point strictly nearer than the k'-th distance is kept, exactly in
    float64 and up to rounding in float32 (the grid: relative to the distances; the dense search of
    the small clouds: relative to the squared radius of the cloud, as the module docstring says).
    ``exact_order``: no ties, so the very indices of brute force, in order."""
    source, target = edge_index
    assert torch.equal(target, target.sort(stable=True).values)  # grouped by target
    for cloud in batch.unique():
        members = (batch == cloud).nonzero().flatten()
        first, size = int(members[0]), members.numel()
        keep = min(k, size if loop else size - 1)
        mine = (target >= first) & (target < first + size)
        assert int(mine.sum()) == size * keep
        neighbours = source[mine].view(size, keep) - first
        assert ((neighbours >= 0) & (neighbours < size)).all()  # never another cloud
        assert torch.equal(target[mine].view(size, keep)[:, 0] - first, torch.arange(size))
        points = x[first:first + size].double()
        full = torch.cdist(points, points, compute_mode="donot_use_mm_for_euclid_dist").square()
        if not loop:
            full.fill_diagonal_(float("inf"))
            assert (neighbours != torch.arange(size)[:, None]).all()
        assert (neighbours.sort(1).values.diff(dim=1) != 0).all()  # no point twice
        relative, absolute = 0.0, 0.0  # on squared distances
        if x.dtype != torch.float64:
            if size >= knn_grid.GRID_MIN_POINTS:
                relative = 1e-5
            else:
                absolute = 1e-6 * float((points - points.mean(0)).square().sum(1).max())
        expected = full.sort(dim=1, stable=True)
        found = full.gather(1, neighbours)
        assert (found[:, 1:] >= found[:, :-1] * (1 - relative) - absolute).all()  # nearest first
        kth = expected.values[:, keep - 1: keep]
        assert ((found - expected.values[:, :keep]).abs() <= relative * kth + absolute).all()
        strictly_nearer = full < kth * (1 - 2 * relative) - 2 * absolute
        kept = torch.zeros_like(strictly_nearer).scatter_(1, neighbours, True)
        assert (kept | ~strictly_nearer).all()
        if exact_order:
            assert torch.equal(neighbours, expected.indices[:, :keep])


@pytest.fixture
def grid_calls(monkeypatch):
    """Counts the searches that took the grid, so that a test cannot silently test the dense one."""
    calls = []
    original = knn.knn_grid

    def counting(points, keep, loop):
        calls.append(tuple(points.shape))
        return original(points, keep, loop)

    monkeypatch.setattr(knn, "knn_grid", counting)
    return calls


NO_TIES = ("cube", "sphere", "plane", "line", "clusters", "far")


@pytest.mark.parametrize("kind", NO_TIES + ("duplicates", "identical", "integers"))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("loop", [False, True])
def test_grid_batch_path_equals_brute_force(kind, dtype, loop, grid_calls):
    generator = torch.Generator().manual_seed(hash((kind, str(dtype), loop)) % 2**31)
    sizes = [300, 5, 1030, 300, 11, 257]  # varying sizes, clouds of n <= k among them
    x = torch.cat([make_cloud(kind, n, dtype, generator) for n in sizes])
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    k = 16 if kind == "clusters" else 11
    edge_index = knn_graph(x, k, batch, loop=loop, backend="torch")
    assert sorted(shape[1] for shape in grid_calls) == [257, 300, 1030]  # the small clouds: dense
    exact = dtype == torch.float64 and kind in NO_TIES
    assert_exact_knn(x, batch, k, loop, edge_index, exact_order=exact)


@pytest.mark.parametrize("kind", NO_TIES + ("duplicates", "identical", "integers"))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("k", [1, 10, 20])
def test_grid_cloud_size_path_equals_brute_force(kind, dtype, k, grid_calls):
    generator = torch.Generator().manual_seed(hash((kind, str(dtype), k)) % 2**31)
    clouds, size = 3, 400
    x = torch.cat([make_cloud(kind, size, dtype, generator) for _ in range(clouds)])
    batch = torch.arange(clouds).repeat_interleave(size)
    edge_index = knn_graph(x, k, batch, cloud_size=size)
    assert grid_calls == [(clouds, size, 3)]
    assert edge_index.shape == (2, clouds * size * k)
    exact = dtype == torch.float64 and kind in NO_TIES
    assert_exact_knn(x, batch, k, False, edge_index, exact_order=exact)
    assert torch.equal(edge_index, knn_graph(x, k, batch, backend="torch"))  # the same search


@pytest.mark.parametrize("dims", [1, 2])
def test_grid_takes_points_of_fewer_dimensions(dims, grid_calls):
    x = torch.rand(2 * 500, dims, dtype=torch.float64)
    batch = torch.arange(2).repeat_interleave(500)
    assert_exact_knn(x, batch, 10, False, knn_graph(x, 10, batch, backend="torch"), exact_order=True)
    assert grid_calls == [(2, 500, dims)]


@pytest.mark.parametrize("factor, passes", [(1.2, "first"), (0.5, "grown"), (0.05, "whole cloud")])
def test_grid_uncertified_queries_are_searched_again(factor, passes, monkeypatch):
    # Cells too small for the k-th neighbour: queries fail the check of their 3 x 3 x 3 block and
    # are searched again in a grown block, or (grown too much) against their whole cloud; the
    # result stays exact.
    monkeypatch.setattr(knn_grid, "GRID_CELL_FACTOR", factor)
    searches, whole = [], []
    original_search, original_whole = knn_grid._grid_search, knn_grid._grid_brute_force
    monkeypatch.setattr(knn_grid, "_grid_search", lambda grid, queries, *grown: searches.append(queries.numel())
                        or original_search(grid, queries, *grown))
    monkeypatch.setattr(knn_grid, "_grid_brute_force", lambda grid, rows: whole.append(rows.numel())
                        or original_whole(grid, rows))
    x = torch.rand(2 * 600, 3, dtype=torch.float64)
    batch = torch.arange(2).repeat_interleave(600)
    assert_exact_knn(x, batch, 16, False, knn_graph(x, 16, batch, backend="torch"), exact_order=True)
    assert searches[0] == 1200
    if passes == "grown":
        assert len(searches) == 2 and searches[1] > 0
    if passes == "whole cloud":
        assert whole and whole[0] > 0


@pytest.mark.parametrize("dims", [3, 8])
def test_points_that_are_a_view_of_a_wider_tensor(dims):
    wide = torch.randn(4 * 300, dims + 2)
    batch = torch.arange(4).repeat_interleave(300)
    x = wide[:, 1:dims + 1]  # not contiguous
    assert torch.equal(knn_graph(x, 10, batch, backend="torch"), knn_graph(x.contiguous(), 10, batch, backend="torch"))
    assert torch.equal(knn_graph(x, 10, batch, cloud_size=300), knn_graph(x.contiguous(), 10, batch, backend="torch"))


def test_grid_chunks_bound_the_distance_buffer(monkeypatch):
    x = torch.rand(1000, 3)
    expected = knn_graph(x, 8, backend="torch")
    monkeypatch.setattr(knn_grid, "GRID_CHUNK_ELEMENTS", 2000)
    seen = []

    def recording(original):
        def topk(scores, *args, **kwargs):
            seen.append((tuple(scores.shape), kwargs.get("sorted", True)))
            return original(scores, *args, **kwargs)
        return topk

    monkeypatch.setattr(torch.Tensor, "topk", recording(torch.Tensor.topk))
    monkeypatch.setattr(torch, "topk", recording(torch.topk))
    assert torch.equal(knn_graph(x, 8, backend="torch"), expected)
    searched = [shape for shape, ordered in seen if ordered]  # the estimate of the cell side: unordered
    assert sum(rows for rows, _ in searched) >= 1000
    assert all(rows * width <= 2000 or rows == 1 for rows, width in searched)
    assert all(rows * width <= knn_grid.grid_buffer_elements(1000) for (rows, width), _ in seen)


def test_grid_applies_only_to_low_dimensional_cpu_points_outside_compilation(monkeypatch):
    points = torch.rand(2, 512, 3)
    assert knn_grid.grid_applies(points, 10)
    assert not knn_grid.grid_applies(torch.rand(2, 512, 4), 10)  # features: dense
    assert not knn_grid.grid_applies(torch.rand(2, knn_grid.GRID_MIN_POINTS - 1, 3), 10)  # small clouds: dense
    assert not knn_grid.grid_applies(points.half(), 10)
    assert not knn_grid.grid_applies(torch.rand(2, 512, 3, device="meta"), 10)  # CUDA and others: dense
    infinite = points.clone()
    infinite[0, 0, 0] = float("inf")
    assert not knn_grid.grid_applies(infinite, 10)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # shapes must not depend on data
    assert not knn_grid.grid_applies(points, 10)


def test_mac_counting_sees_the_dense_search():
    from mgic_geo.nn import cost
    from mgic_geo.nn.knn_grid import grid_applies

    points = torch.rand(2, 1024, 3)
    assert grid_applies(points, 10)
    with cost.counting():
        assert not grid_applies(points, 10)
    assert grid_applies(points, 10)


# --- clouds with k points or fewer (issue 16, item 11) ------------------------------------------

def _small_cloud_warnings(record):
    return [str(w.message) for w in record if issubclass(w.category, UserWarning) and "knn_graph: k=" in str(w.message)]


@pytest.mark.parametrize("kwargs", [{}, {"cloud_size": 5}, {"backend": "torch"}])
def test_k_beyond_a_small_cloud_warns_once_and_keeps_every_other_point(kwargs):
    x = torch.randn(5, 3)
    with pytest.warns(UserWarning) as record:
        edge_index = knn_graph(x, 10, **kwargs)
    assert _small_cloud_warnings(record) == [
        "knn_graph: k=10 but a cloud has only 5 points, so each of its points gets 4 neighbours "
        "(every other point of its cloud) instead of 10"]
    assert edge_index.shape == (2, 5 * 4)  # the behaviour is kept


def test_the_warning_comes_once_per_call_naming_the_smallest_cloud():
    x = torch.randn(3 + 6 + 3 + 20, 3)
    batch = torch.tensor([0] * 3 + [1] * 6 + [2] * 3 + [3] * 20)
    with pytest.warns(UserWarning) as record:
        knn_graph(x, 8, batch, loop=True)
    assert _small_cloud_warnings(record) == [
        "knn_graph: k=8 but a cloud has only 3 points, so each of its points gets 3 neighbours "
        "(every point of its cloud, itself included) instead of 8"]
    same = torch.randn(4 * 6, 3)
    with pytest.warns(UserWarning) as record:
        knn_graph(same, 6, torch.arange(4).repeat_interleave(6))
    assert len(_small_cloud_warnings(record)) == 1 and "a cloud has only 6 points" in _small_cloud_warnings(record)[0]


def test_no_warning_when_every_cloud_is_large_enough_or_under_compilation(monkeypatch):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        knn_graph(torch.randn(11, 3), 10)  # 10 other points: exactly k
        knn_graph(torch.randn(10, 3), 10, loop=True)
        knn_graph(torch.randn(3 * 11, 3), 10, cloud_size=11)
        knn_graph(torch.randn(0, 3), 10)
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
        knn_graph(torch.randn(5, 3), 10, cloud_size=5)

import pytest
import torch

from mgic_geo.nn import knn
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
    x = torch.randn(300, 3)
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

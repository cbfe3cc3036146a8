"""The point-cloud classifiers of the registry: shapes, order invariance, batches, targets."""
import pytest
import torch

from mgic_geo.complexity import profile
from mgic_geo.models import create_model
from mgic_geo.models.dgcnn import DGCNN
from mgic_geo.models.diffgcn import DiffGCNNet
from mgic_geo.core.config import MGICConfig

MODELS = ["dgcnn", "dgcnn_pyg_example", "diffgcn", "mgic_dgcnn", "mgic_diffgcn"]


def small(name, **kwargs):
    return create_model(name, num_classes=5, k=5, **kwargs)


def shapes(count=3, size=64):
    pos = torch.randn(count * size, 3)
    return pos, torch.arange(count).repeat_interleave(size)


@pytest.mark.parametrize("name", MODELS)
def test_logits_per_cloud_and_gradients(name):
    model = small(name)
    pos, batch = shapes()
    logits = model(pos, batch)
    assert logits.shape == (3, 5)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_invariant_to_the_order_of_points(name):
    model = small(name).eval()
    pos, batch = shapes()
    permutation = torch.cat([torch.randperm(64) + 64 * i for i in range(3)])
    torch.testing.assert_close(model(pos[permutation], batch), model(pos, batch), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_clouds_are_independent_and_sizes_may_differ(name):
    """A cloud's logits do not depend on the other clouds of the batch, equal-sized or not."""
    model = small(name).eval()
    sizes = [40, 64, 23]
    clouds = [torch.randn(n, 3) for n in sizes]
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor(sizes))
    together = model(torch.cat(clouds), batch)
    alone = torch.cat([model(cloud, torch.zeros(len(cloud), dtype=torch.long)) for cloud in clouds])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name, kwargs", [(name, {}) for name in MODELS] + [
    ("diffgcn", {"graph": "dynamic"}), ("mgic_diffgcn", {"graph": "dynamic"})])
def test_fixed_size_batches_need_no_host_sync_and_match(name, kwargs):
    import torch._dynamo

    pos, batch = shapes(count=2, size=32)
    model = small(name, **kwargs).eval()
    fixed = small(name, num_points=32, **kwargs).eval()
    fixed.load_state_dict(model.state_dict())
    torch.testing.assert_close(fixed(pos, batch), model(pos, batch))
    explanation = torch._dynamo.explain(fixed)(pos, batch)
    assert explanation.graph_break_count == 0, explanation.break_reasons


@pytest.mark.parametrize("name", ["diffgcn", "mgic_diffgcn"])
def test_diffgcn_graphs_static_per_stage_on_positions_or_dynamic_per_block_on_features(name, monkeypatch):
    import mgic_geo.models.clouds as clouds

    built = []

    def knn_graph(x, k, batch, **kwargs):
        built.append((x.shape[0], x.shape[1]))
        return original(x, k, batch, **kwargs)

    original = clouds.knn_graph
    monkeypatch.setattr(clouds, "knn_graph", knn_graph)
    pos, batch = shapes(count=2, size=64)
    small(name)(pos, batch)
    assert built == [(128, 3), (64, 3), (32, 3), (16, 3)]  # one graph per stage, on the kept positions
    built.clear()
    dynamic = small(name, graph="dynamic")
    dynamic(pos, batch)
    assert built == [(128, 3), (128, 32), (64, 64), (32, 128), (16, 256)]  # the stem's, then one per block
    assert "graph='dynamic'" in repr(dynamic)


def test_pyg_dataloader_batch():
    from torch_geometric.data import Data
    from torch_geometric.loader import DataLoader

    data = [Data(pos=torch.randn(50, 3), y=torch.tensor([i % 5])) for i in range(6)]
    batch = next(iter(DataLoader(data, batch_size=6)))
    assert small("mgic_diffgcn")(batch.pos, batch.batch).shape == (6, 5)


def test_table_6_targets_at_1024_points():
    pos = torch.randn(1024, 3)
    measured = {name: profile(create_model(name), pos) for name in ("dgcnn", "diffgcn", "mgic_diffgcn")}
    assert measured["mgic_diffgcn"].params <= 0.11e6 and measured["mgic_diffgcn"].macs <= 13.7e6
    assert 0.12e6 < measured["dgcnn"].params < 0.17e6 and 120e6 < measured["dgcnn"].macs < 130e6
    assert measured["diffgcn"].params > 4 * measured["mgic_diffgcn"].params
    # kNN distances are reported on their own line: 4 graphs on coordinates here.
    assert measured["mgic_diffgcn"].knn_macs == 4 * (1024**2 + 512**2 + 256**2 + 128**2)
    # diffGCN's neighbour sums, also apart: 4 operators x k = 10 neighbours per channel and point.
    # Stem 3 channels at 1024 points, then the MGIC levels [32, 16], [64, 32, 16], [128 .. 16], [256 .. 16].
    sums = 1024 * (3 + 32 + 16) + 512 * (64 + 32 + 16) + 256 * (128 + 64 + 32 + 16) + 128 * (256 + 128 + 64 + 32 + 16)
    assert measured["mgic_diffgcn"].graph_operator_macs == 40 * sums


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: DGCNN(mgic={"group_sise": 8}), "`mgic` has unknown field.s. group_sise; MGICConfig fields are"),
        (lambda: DiffGCNNet(mgic=8), "`mgic` must be an MGICConfig or a mapping of its fields, got 8"),
        (lambda: create_model("mgic_diffgcn", group_size=8, mgic={"group_size": 4}),
         "'group_size' given both in `mgic` and as an argument of its own"),
        (lambda: DiffGCNNet(widths=()), "`widths` must list at least one stage width"),
        (lambda: DiffGCNNet(widths=(32, 0)), r"`widths` must be a positive integer, got 0"),
        (lambda: DGCNN(widths=(64, -1)), r"`widths` must be a positive integer, got -1"),
        (lambda: create_model("dgcnn", num_points=0), r"`num_points` must be a positive integer, got 0"),
        (lambda: create_model("dgcnn_pyg_example", num_points=0), r"`num_points` must be a positive integer, got 0"),
        (lambda: create_model("mgic_diffgcn", k=0), r"`k` must be a positive integer, got 0"),
        (lambda: create_model("mgic_diffgcn", graph="knn"), r"`graph` must be one of \('static', 'dynamic'\), got 'knn'"),
    ],
)
def test_bad_construction(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize(
    "pos, batch, message",
    [
        (torch.randn(10, 2), None, r"`pos` must be a floating-point \[N, 3\] tensor, got \(10, 2\)"),
        (torch.randn(0, 3), None, "`pos` holds no points"),
        (torch.randn(10, 3), torch.zeros(9, dtype=torch.long), r"`batch` must be an integer vector with one entry per point \(10\)"),
        (torch.randn(4, 3), torch.tensor([1, 1, 0, 0]), "`batch` must number the clouds 0, 1, 2"),
        (torch.randn(4, 3), torch.tensor([0, 0, 2, 2]), "`batch` must number the clouds 0, 1, 2"),
    ],
)
def test_bad_inputs(pos, batch, message):
    with pytest.raises(ValueError, match=message):
        small("mgic_diffgcn")(pos, batch)


def test_num_points_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"expects clouds of 32 points \(`num_points`\), but the batch has 40 points"):
        small("dgcnn", num_points=32)(torch.randn(40, 3))


@pytest.mark.parametrize("name, network", [("dgcnn", "DGCNN"), ("mgic_dgcnn", "DGCNN"), ("diffgcn", "DiffGCNNet"),
                                           ("mgic_diffgcn", "DiffGCNNet"), ("dgcnn_pyg_example", "PyGExampleDGCNN")])
def test_positions_of_another_dtype_or_device_are_named(name, network):
    model = small(name).eval()
    pos, batch = shapes(2, 32)
    with pytest.raises(ValueError, match=rf"^{network}: `pos` has dtype torch.float64 but its parameters have "
                                         r"torch.float32; convert one of them"):
        model(pos.double(), batch)
    with pytest.raises(ValueError, match=rf"^{network}: `pos` must be floating point \(its parameters' dtype "
                                         r"torch.float32\), got dtype torch.int64"):
        model(pos.long(), batch)
    with pytest.raises(ValueError, match=rf"^{network}: `pos` is on device meta but its parameters are on cpu"):
        model(pos.to("meta"), batch)
    with pytest.raises(ValueError, match=rf"^{network}: `pos` is on the meta device, which holds no values"):
        model.to("meta")(pos.to("meta"), batch)


@pytest.mark.parametrize("name", ["dgcnn", "mgic_dgcnn", "diffgcn", "mgic_diffgcn"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_networks_run_in_the_dtype_they_are_converted_to(name, dtype):
    pos, batch = shapes(2, 32)
    assert small(name).eval().to(dtype)(pos.to(dtype), batch).dtype == dtype


def test_diffgcn_in_dgcnns_skeleton_shares_one_graph_and_operator():
    from mgic_geo.models.dgcnn import DGCNN
    from mgic_geo.nn import MGICConv

    model = create_model("mgic_diffgcn_dgcnn", num_points=64).eval()
    assert isinstance(model, DGCNN) and model.conv == "diffgcn"
    assert sum(isinstance(m, MGICConv) for m in model.modules()) == 3  # MGIC(64), MGIC(128), MGIC(256)
    pos = torch.randn(2 * 64, 3)
    with torch.no_grad():
        assert model(pos, torch.arange(2).repeat_interleave(64)).shape == (2, 10)
    with pytest.raises(ValueError, match=r"`conv` must be one of \('edge', 'diffgcn'\), got 'gcn'"):
        DGCNN(conv="gcn")

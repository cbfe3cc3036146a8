import pytest
import torch

from mgic_geo.complexity import count_parameters
from mgic_geo.core.block import MGICBlock
from mgic_geo.nn import DiffGCNNormAct, DynamicEdgeConvNormAct, DynamicMGICConv, EdgeConvNormAct, MGICConv, knn_graph
from mgic_geo.core.config import MGICConfig

CONVS = ["diffgcn", "edge"]


def clouds(count=3, size=40, channels=32):
    pos = torch.randn(count * size, 3)
    return torch.randn(count * size, channels), pos, torch.arange(count).repeat_interleave(size)


@pytest.mark.parametrize("conv", CONVS)
def test_is_algorithm_1_over_grouped_graph_convs(conv):
    layer = MGICConv(64, conv=conv, mgic=MGICConfig(group_size=8, coarsest=16))
    assert isinstance(layer.block, MGICBlock)
    assert layer.widths == [64, 32, 16] and layer.groups == [8, 4, 1]
    level = DiffGCNNormAct if conv == "diffgcn" else EdgeConvNormAct
    assert [type(b) for b in layer.block.blocks] == [level] * 3
    assert [b.groups for b in layer.block.blocks] == [8, 4, 1]


@pytest.mark.parametrize("conv", CONVS)
def test_shapes_and_gradients_reach_every_parameter(conv):
    x, pos, batch = clouds()
    layer = MGICConv(32, conv=conv, mgic=MGICConfig(group_size=4, coarsest=8, zero_init_correction=False))
    x.requires_grad_()
    out = layer(x, pos, knn_graph(pos, 10, batch))
    assert out.shape == (120, 32)
    out.square().sum().backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


@pytest.mark.parametrize("conv", CONVS)
def test_permutation_equivariant(conv):
    x, pos, _ = clouds(count=1, size=60)
    layer = MGICConv(32, conv=conv, mgic=MGICConfig(group_size=4, coarsest=8)).eval()
    permutation = torch.randperm(60)
    out = layer(x, pos, knn_graph(pos, 10))
    permuted = layer(x[permutation], pos[permutation], knn_graph(pos[permutation], 10))
    torch.testing.assert_close(permuted, out[permutation], rtol=1e-4, atol=1e-5)


def test_parameters_grow_linearly_with_width():
    params = [count_parameters(MGICConv(c, mgic=MGICConfig(group_size=8, coarsest=16))) for c in (64, 128, 256, 512)]
    increments = [b - a for a, b in zip(params, params[1:])]
    # Doubling the width adds one level and doubles the fine levels' cost: increments double.
    assert increments[1] == 2 * increments[0] and increments[2] == 2 * increments[1]
    dense = [count_parameters(DiffGCNNormAct(c, c)) for c in (256, 512)]
    assert dense[1] > 3.9 * dense[0] and params[3] < dense[1] / 20


@pytest.mark.parametrize("conv", CONVS)
def test_dynamic_variant_equals_the_static_one_on_its_graph(conv):
    x, pos, batch = clouds()
    dynamic = DynamicMGICConv(32, conv=conv, k=7, mgic=MGICConfig(group_size=4, coarsest=8))
    static = MGICConv(32, conv=conv, mgic=MGICConfig(group_size=4, coarsest=8))
    static.load_state_dict(dynamic.state_dict())
    graph = knn_graph(pos if conv == "diffgcn" else x, 7, batch)
    expected = static(x, pos, graph)
    torch.testing.assert_close(dynamic(x, pos, batch), expected)
    torch.testing.assert_close(dynamic(x, pos, batch, cloud_size=40), expected)


def test_dynamic_edgeconv_uses_the_feature_graph():
    x, _, batch = clouds()
    dynamic = DynamicEdgeConvNormAct(32, 16, k=5)
    static = EdgeConvNormAct(32, 16)
    static.load_state_dict(dynamic.state_dict())
    torch.testing.assert_close(dynamic(x, batch), static(x, knn_graph(x, 5, batch)))


@pytest.mark.parametrize("conv", CONVS)
def test_works_on_a_pyg_dataloader_batch(conv):
    from torch_geometric.data import Data
    from torch_geometric.loader import DataLoader

    data = [Data(x=torch.randn(n, 16), pos=torch.randn(n, 3)) for n in (30, 45, 30)]
    batch = next(iter(DataLoader(data, batch_size=3)))
    out = DynamicMGICConv(16, conv=conv, mgic=MGICConfig(group_size=4, coarsest=4))(batch.x, batch.pos, batch.batch)
    assert out.shape == (105, 16) and torch.isfinite(out).all()


@pytest.mark.parametrize("conv", CONVS)
def test_fixed_size_batches_compile_without_graph_breaks(conv):
    import torch._dynamo

    x, pos, batch = clouds(count=2, size=32, channels=16)
    layer = DynamicMGICConv(16, conv=conv, k=5, mgic=MGICConfig(group_size=4, coarsest=4))

    def step(x, pos, batch):
        return layer(x, pos, batch, cloud_size=32)

    explanation = torch._dynamo.explain(step)(x, pos, batch)
    assert explanation.graph_break_count == 0, explanation.break_reasons


def test_reprs_and_reset_parameters():
    assert repr(MGICConv(64)) == "MGICConv(64, conv='diffgcn', group_size=8, coarsest=16)"
    assert repr(DynamicMGICConv(64, conv="edge", k=20, mgic=MGICConfig(group_size=16, coarsest=32))) == (
        "DynamicMGICConv(64, conv='edge', group_size=16, coarsest=32, k=20)"
    )
    assert repr(DynamicEdgeConvNormAct(3, 64, k=10)) == "DynamicEdgeConvNormAct(3, 64, k=10)"
    assert repr(DiffGCNNormAct(8, 16, groups=2)) == "DiffGCNNormAct(8, 16, groups=2)"
    layer = MGICConv(32, mgic=MGICConfig(group_size=4, coarsest=8))
    before = [p.clone() for p in layer.parameters()]
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(1.0)
    layer.reset_parameters()
    after = list(layer.parameters())
    assert all(not torch.equal(a, b + 1.0) for a, b in zip(after, before))
    assert all(torch.equal(n.weight, torch.zeros_like(n.weight)) for n in layer.block.norms)


@pytest.mark.parametrize("conv", CONVS)
def test_corrections_start_closed_and_open_from_the_finest(conv):
    """With zero-initialised N_j the block starts as its finest level block; the finest
    correction's scale gets a gradient at once, and once it is open, so do the coarser ones."""
    x, pos, batch = clouds()
    graph = knn_graph(pos, 10, batch)
    layer = MGICConv(32, conv=conv, mgic=MGICConfig(group_size=4, coarsest=8))
    finest = layer.block.blocks[0]
    args = (x, graph) if conv == "edge" else (x, pos, graph)
    torch.testing.assert_close(layer(x, pos, graph), finest(*args))
    layer(x, pos, graph).square().sum().backward()
    assert layer.block.norms[0].weight.grad.abs().sum() > 0
    with torch.no_grad():
        layer.block.norms[0].weight.fill_(0.1)
    layer.zero_grad()
    layer(x, pos, graph).square().sum().backward()
    assert layer.block.norms[1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: MGICConv(64, conv="gcn"), r"`conv` must be one of \('diffgcn', 'edge'\), got 'gcn'"),
        (lambda: MGICConv(0), r"`channels` must be a positive integer, got 0"),
        (lambda: DynamicMGICConv(64, k=0), r"`k` must be a positive integer, got 0"),
        (lambda: DynamicEdgeConvNormAct(3, 64, k=-2), r"`k` must be a positive integer, got -2"),
    ],
)
def test_bad_construction(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_bad_inputs():
    x, pos, batch = clouds()
    with pytest.raises(ValueError, match=r"expected node features \[N, 16\], got \(120, 32\)"):
        MGICConv(16)(x, pos, knn_graph(pos, 5))
    with pytest.raises(ValueError, match="`pos` is required by conv='diffgcn'"):
        MGICConv(32)(x, None, knn_graph(pos, 5))
    with pytest.raises(ValueError, match="`pos` is required by conv='diffgcn'"):
        DynamicMGICConv(32)(x, None, batch)
    with pytest.raises(ValueError, match=r"`cloud_size`=50 must divide the number of points 120"):
        DynamicMGICConv(32)(x, pos, batch, cloud_size=50)


@pytest.mark.parametrize("regular", [False, True], ids=["general", "regular"])
@pytest.mark.parametrize("layer_name", ["DiffGCNConv", "EdgeConvNormAct", "DynamicEdgeConvNormAct"])
def test_single_layers_are_permutation_equivariant(layer_name, regular):
    from mgic_geo.nn import DiffGCNConv

    x, pos, _ = clouds(count=1, size=50, channels=8)
    permutation = torch.randperm(50)
    k = 6 if regular else None
    if layer_name == "DiffGCNConv":
        layer = DiffGCNConv(8, 16, groups=2)
        run = lambda x, pos: layer(x, pos, knn_graph(pos, 6), k=k)  # noqa: E731
    elif layer_name == "EdgeConvNormAct":
        layer = EdgeConvNormAct(8, 16, groups=2).eval()
        run = lambda x, pos: layer(x, knn_graph(x, 6), k=k)  # noqa: E731
    else:
        layer = DynamicEdgeConvNormAct(8, 16, k=6).eval()
        run = lambda x, pos: layer(x, cloud_size=50 if regular else None)  # noqa: E731
    torch.testing.assert_close(run(x[permutation], pos[permutation]), run(x, pos)[permutation], rtol=1e-4, atol=1e-5)

import itertools

import pytest
import torch

from mgic_geo import MGICBlock
from mgic_geo.nn import DiffGCNConv, knn_graph
from mgic_geo.nn.diffgcn import differential_features
from mgic_geo.core.config import MGICConfig


def reference_features(x, pos, edge_index, operator_scale="spacing"):
    """Edge by edge, straight from the formulas in the module docstring."""
    n, c = x.shape
    out = torch.zeros(n, c, 5, dtype=x.dtype)
    out[:, :, 0] = x
    for i in range(n):
        sources = edge_index[0][edge_index[1] == i]
        spacing = torch.stack([(pos[j] - pos[i]).norm() for j in sources.tolist()]).mean() if len(sources) else 0
        scale = spacing if operator_scale == "spacing" else 1.0
        for j in sources.tolist():
            d = pos[j] - pos[i]
            delta = x[j] - x[i]
            out[i, :, 1:4] += 3 * scale * delta[:, None] * (d / (d.square().sum() + 1e-12))[None, :] / len(sources)
            out[i, :, 4] += delta / len(sources)
    return out.flatten(1)


@pytest.mark.parametrize("operator_scale", ["spacing", "derivative"])
def test_features_equal_the_edge_by_edge_formulas(operator_scale):
    pos = torch.randn(40, 3, dtype=torch.float64)
    x = torch.randn(40, 6, dtype=torch.float64)
    edge_index = knn_graph(pos, 5)
    expected = reference_features(x, pos, edge_index, operator_scale)
    # the [N, k] path
    torch.testing.assert_close(differential_features(x, pos, edge_index, 5, operator_scale=operator_scale), expected)
    edge_index = edge_index[:, edge_index[1] != 7]  # an isolated node too: the scatter path
    torch.testing.assert_close(differential_features(x, pos, edge_index, operator_scale=operator_scale),
                               reference_features(x, pos, edge_index, operator_scale))


def test_spacing_scale_makes_the_features_independent_of_the_units():
    pos = torch.randn(50, 3, dtype=torch.float64)
    x = torch.randn(50, 4, dtype=torch.float64)
    edge_index = knn_graph(pos, 6)
    metres = differential_features(x, pos, edge_index, 6)
    millimetres = differential_features(x, pos * 1000, edge_index, 6)
    torch.testing.assert_close(millimetres, metres)
    derivative = differential_features(x, pos * 1000, edge_index, 6, operator_scale="derivative").view(50, 4, 5)
    torch.testing.assert_close(derivative[..., 1:4] * 1000,
                               differential_features(x, pos, edge_index, 6, operator_scale="derivative").view(50, 4, 5)[..., 1:4])


def test_unknown_operator_scale_is_refused():
    with pytest.raises(ValueError, match="`operator_scale` must be one of"):
        DiffGCNConv(4, 4, operator_scale="metres")
    assert repr(DiffGCNConv(4, 8, operator_scale="derivative")) == "DiffGCNConv(4, 8, groups=1, operator_scale='derivative')"
    assert repr(DiffGCNConv(4, 8)) == "DiffGCNConv(4, 8, groups=1)"


def lattice_with_six_neighbours():
    points = torch.tensor(list(itertools.product(range(3), repeat=3)), dtype=torch.float64) * 0.5
    centre = 13  # (1, 1, 1)
    neighbours = [i for i, p in enumerate(points) if (p - points[centre]).abs().sum() == 0.5]
    edge_index = torch.tensor([neighbours, [centre] * len(neighbours)])
    return points, centre, edge_index


def test_gradient_of_a_linear_field_is_exact_on_a_symmetric_neighbourhood():
    points, centre, edge_index = lattice_with_six_neighbours()
    slope = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
    x = (points @ slope)[:, None] + 4.0
    features = differential_features(x, points, edge_index, operator_scale="derivative")[centre]
    torch.testing.assert_close(features[1:4], slope)
    spacing = 0.5  # every neighbour of the centre is 0.5 away
    scaled = differential_features(x, points, edge_index)[centre]
    torch.testing.assert_close(scaled[1:4], spacing * slope)
    torch.testing.assert_close(features[4], torch.tensor(0.0, dtype=torch.float64))  # no curvature
    torch.testing.assert_close(features[0], x[centre, 0])


def test_constant_field_has_no_gradient_or_laplacian():
    pos = torch.randn(30, 3)
    features = differential_features(torch.full((30, 2), 3.0), pos, knn_graph(pos, 4)).view(30, 2, 5)
    torch.testing.assert_close(features[..., 1:], torch.zeros(30, 2, 4), atol=1e-5, rtol=0)


def test_grouped_mixing_keeps_groups_apart():
    conv = DiffGCNConv(8, 12, groups=4)
    pos = torch.randn(20, 3)
    edge_index = knn_graph(pos, 4)
    x = torch.randn(20, 8)
    changed = x.clone()
    changed[:, :2] += 1.0  # the channels of group 0
    difference = (conv(changed, pos, edge_index) - conv(x, pos, edge_index)).abs().sum(0)
    assert difference[:3].min() > 0 and difference[3:].max() == 0


def test_as_an_mgic_level_block_on_a_pyg_batch():
    from torch_geometric.data import Data
    from torch_geometric.loader import DataLoader

    data = next(iter(DataLoader([Data(pos=torch.randn(64, 3), x=torch.randn(64, 32)) for _ in range(3)], batch_size=3)))
    edge_index = knn_graph(data.pos, 10, data.batch)
    block = MGICBlock(32, lambda w, g: DiffGCNConv(w, w, groups=g), mgic=MGICConfig(group_size=8, coarsest=8))
    assert block.widths == [32, 16, 8] and block.groups == [4, 2, 1]
    out = block(data.x, data.pos, edge_index)
    assert out.shape == (192, 32)
    out.sum().backward()
    assert all(p.grad is not None for p in block.parameters())


def test_traces_without_graph_breaks():
    import torch._dynamo

    conv = DiffGCNConv(16, 16, groups=2)
    pos = torch.randn(50, 3)
    explanation = torch._dynamo.explain(conv)(torch.randn(50, 16), pos, knn_graph(pos, 10))
    assert explanation.graph_count == 1 and explanation.graph_break_count == 0, explanation.break_reasons


def test_repr_and_reset_parameters():
    conv = DiffGCNConv(16, 32, groups=4)
    assert repr(conv) == "DiffGCNConv(16, 32, groups=4)"
    assert conv.mix.weight.shape == (4, 8, 20)  # each group mixes 4 channels x 5 features
    before = conv.mix.weight.clone()
    conv.reset_parameters()
    assert not torch.equal(before, conv.mix.weight)


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((0, 8), {}, r"`in_channels` must be a positive integer, got 0"),
        ((8, 8), dict(groups=3), r"`groups`=3 must divide in_channels=8 and out_channels=8"),
    ],
)
def test_bad_construction(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        DiffGCNConv(*args, **kwargs)


@pytest.mark.parametrize(
    "x, pos, edge_index, message",
    [
        (torch.randn(5, 4), torch.randn(5, 3), torch.zeros(2, 1, dtype=torch.long), r"expected node features \[N, 8\], got \(5, 4\)"),
        (torch.randn(5, 8), torch.randn(5, 2), torch.zeros(2, 1, dtype=torch.long), r"expected positions \[5, 3\], got \(5, 2\)"),
        (torch.randn(5, 8), torch.randn(5, 3), torch.zeros(3, 1, dtype=torch.long), r"expected edge_index \[2, E\], got \(3, 1\)"),
    ],
)
def test_bad_inputs(x, pos, edge_index, message):
    with pytest.raises(ValueError, match=message):
        DiffGCNConv(8, 8)(x, pos, edge_index)


def test_grouped_equals_a_dense_conv_with_block_diagonal_weights():
    grouped = DiffGCNConv(8, 12, groups=4)
    dense = DiffGCNConv(8, 12)
    with torch.no_grad():
        dense.mix.weight.copy_(grouped.mix.dense_weight().unsqueeze(0))
        dense.mix.bias.copy_(grouped.mix.bias)
    pos, x = torch.randn(40, 3), torch.randn(40, 8)
    edge_index = knn_graph(pos, 6)
    torch.testing.assert_close(grouped(x, pos, edge_index), dense(x, pos, edge_index))


def test_regular_graph_path_equals_the_general_one():
    conv = DiffGCNConv(6, 8, groups=2)
    pos, x = torch.randn(3 * 30, 3), torch.randn(3 * 30, 6, requires_grad=True)
    edge_index = knn_graph(pos, 5, cloud_size=30)
    general = conv(x, pos, edge_index)
    (grad_general,) = torch.autograd.grad(general.square().sum(), x)
    regular = conv(x, pos, edge_index, k=5)
    (grad_regular,) = torch.autograd.grad(regular.square().sum(), x)
    torch.testing.assert_close(regular, general)
    torch.testing.assert_close(grad_regular, grad_general)
    with pytest.raises(ValueError, match=r"`k`=4 promises 90 x 4 edges grouped by target, but edge_index has 450"):
        conv(x, pos, edge_index, k=4)
    with pytest.raises(RuntimeError, match="does not list k edges per node, node by node"):
        conv(x, pos, edge_index.flip(1), k=5)


@pytest.mark.parametrize("regular", [False, True])
def test_half_precision_features_with_float32_positions(regular):
    # Mixed precision: features come in as bf16 while positions stay float32 (a crash before).
    torch.manual_seed(0)
    pos, x = torch.rand(64, 3), torch.randn(64, 8)
    edge_index = knn_graph(pos, 8)
    k = 8 if regular else None
    reference = differential_features(x, pos, edge_index, k=k)
    half = differential_features(x.bfloat16(), pos, edge_index, k=k)
    assert half.dtype == torch.bfloat16
    assert torch.allclose(half.float(), reference, rtol=2e-2, atol=2e-2 * reference.abs().max().item())


def test_mgic_diffgcn_runs_under_bf16_autocast_on_cpu():
    from mgic_geo.models import create_model

    torch.manual_seed(0)
    model = create_model("mgic_diffgcn", num_classes=10, k=8)
    pos = torch.rand(2 * 64, 3)
    batch = torch.arange(2).repeat_interleave(64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(pos, batch)
    assert logits.shape == (2, 10) and torch.isfinite(logits.float()).all()

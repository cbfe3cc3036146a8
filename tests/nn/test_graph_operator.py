from contextlib import contextmanager

import pytest
import torch

from mgic_geo.models.clouds import Clouds, neighbourhood_mean
from mgic_geo.nn import DiffGCNConv, MGICConv, knn_graph
from mgic_geo.nn.diffgcn import differential_features
from mgic_geo.nn.graph_operator import DiffGCNOperator, SparseMatrix
from mgic_geo.core.config import MGICConfig


def irregular_graph(num_nodes: int, seed: int = 0) -> torch.Tensor:
    """Unsorted edges, varying degrees, an isolated node, a self loop and a duplicate edge."""
    generator = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, num_nodes, (2, 6 * num_nodes), generator=generator)
    edge_index = edge_index[:, edge_index[1] != 3]  # node 3 receives nothing
    extra = torch.tensor([[5, 7, 7], [5, 9, 9]])  # a self loop and the edge 7 -> 9 twice
    return torch.cat([edge_index, extra], 1)


@contextmanager
def counted_builds():
    """Record every DiffGCNOperator.build made inside the block (one entry each)."""
    builds = []
    original = DiffGCNOperator.build.__func__

    def counting_build(cls, *args, **kwargs):
        builds.append(1)
        return original(cls, *args, **kwargs)

    DiffGCNOperator.build = classmethod(counting_build)
    try:
        yield builds
    finally:
        DiffGCNOperator.build = classmethod(original)


def gather_output(conv: DiffGCNConv, x, pos, edge_index, k=None):
    """The layer as it was before the operator: features first, then the mix."""
    return conv.mix(differential_features(x, pos, edge_index, k, operator_scale=conv.operator_scale))


def assert_same_values_and_gradients(make_output, reference_output, tensors):
    torch.manual_seed(1)
    out, expected = make_output(), reference_output()
    torch.testing.assert_close(out, expected)
    grad = torch.randn_like(out)
    torch.testing.assert_close(torch.autograd.grad(out, tensors, grad), torch.autograd.grad(expected, tensors, grad))


@pytest.mark.parametrize("channels, groups", [(8, 1), (8, 4), (64, 8)])  # (64, 8): two super-groups
@pytest.mark.parametrize("operator_scale", ["spacing", "derivative"])
@pytest.mark.parametrize("regular", [True, False])
def test_operator_path_equals_the_gather_path_with_gradients(channels, groups, operator_scale, regular):
    torch.manual_seed(0)
    pos = torch.randn(3 * 40, 3, dtype=torch.float64)
    x = torch.randn(3 * 40, channels, dtype=torch.float64, requires_grad=True)
    conv = DiffGCNConv(channels, channels, groups=groups, operator_scale=operator_scale).double()
    if regular:
        edge_index, k = knn_graph(pos, 6, cloud_size=40), 6
    else:
        edge_index, k = irregular_graph(120), None
    operator = DiffGCNOperator.build(pos, edge_index, k=k, operator_scale=operator_scale)
    tensors = [x, conv.mix.weight, conv.mix.bias]
    assert_same_values_and_gradients(lambda: conv(x, pos, edge_index, k=k, operator=operator),
                                     lambda: gather_output(conv, x, pos, edge_index, k), tensors)
    # built by the layer itself when none is given
    assert_same_values_and_gradients(lambda: conv(x, pos, edge_index, k=k),
                                     lambda: gather_output(conv, x, pos, edge_index, k), tensors)


def test_narrowing_layers_use_the_operator_and_widening_ones_the_features():
    pos = torch.randn(50, 3, dtype=torch.float64)
    edge_index = knn_graph(pos, 5)
    for in_channels, out_channels in ((16, 4), (3, 12)):
        conv = DiffGCNConv(in_channels, out_channels).double()
        x = torch.randn(50, in_channels, dtype=torch.float64, requires_grad=True)
        assert_same_values_and_gradients(lambda: conv(x, pos, edge_index, k=5),
                                         lambda: gather_output(conv, x, pos, edge_index, 5), [x, conv.mix.weight])


def test_positions_that_need_a_gradient_take_the_differentiable_path():
    pos = torch.randn(30, 3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(30, 4, dtype=torch.float64)
    edge_index = knn_graph(pos.detach(), 4)
    conv = DiffGCNConv(4, 4).double()
    (grad,) = torch.autograd.grad(conv(x, pos, edge_index, k=4).square().sum(), pos)
    assert grad.abs().sum() > 0


def test_mgic_conv_shares_one_operator_between_its_levels_exactly():
    torch.manual_seed(0)
    pos = torch.randn(2 * 64, 3, dtype=torch.float64)
    x = torch.randn(2 * 64, 32, dtype=torch.float64, requires_grad=True)
    edge_index = knn_graph(pos, 8, cloud_size=64)
    conv = MGICConv(32, mgic=MGICConfig(group_size=8, coarsest=8)).double().train()
    with counted_builds() as builds:
        fast = conv(x, pos, edge_index, k=8)
    assert len(builds) == 1 and len(conv.widths) == 3
    # positions that need a gradient switch every level to the gather formulation
    plain = conv(x, pos.clone().requires_grad_(), edge_index, k=8)
    torch.testing.assert_close(fast, plain)
    grad = torch.randn_like(fast)
    params = [x] + list(conv.parameters())
    torch.testing.assert_close(torch.autograd.grad(fast, params, grad, retain_graph=True),
                               torch.autograd.grad(plain, params, grad))


def test_half_precision_features_are_multiplied_in_float32():
    pos = torch.randn(60, 3)
    edge_index = knn_graph(pos, 6)
    conv = DiffGCNConv(8, 8)
    x = torch.randn(60, 8)
    out = conv.to(torch.bfloat16)(x.to(torch.bfloat16), pos, edge_index, k=6)
    assert out.dtype == torch.bfloat16
    expected = DiffGCNConv.forward(conv.float(), x, pos, edge_index, k=6)
    torch.testing.assert_close(out.float(), expected, atol=0.1, rtol=0.05)


def test_sparse_matrix_products_and_gradients_match_the_dense_matrix():
    rows = torch.tensor([2, 0, 1, 2, 0, 2])
    cols = torch.tensor([1, 3, 0, 1, 0, 2])  # (2, 1) twice: duplicates add up
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], dtype=torch.float64)
    dense = torch.zeros(3, 4, dtype=torch.float64).index_put_((rows, cols), values, accumulate=True)
    sparse = SparseMatrix.from_entries(rows, cols, values, (3, 4))
    assert sparse.shape == (3, 4)
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    assert_same_values_and_gradients(lambda: sparse @ x, lambda: dense @ x, [x])
    with pytest.raises(ValueError, match=r"expected a dense \[4, C\] operand, got \(3, 5\)"):
        sparse @ torch.randn(3, 5)


def test_neighbourhood_mean_at_kept_nodes_equals_the_full_mean():
    pos = torch.randn(4 * 64, 3, dtype=torch.float64)
    edge_index = knn_graph(pos, 10, cloud_size=64)
    x = torch.randn(256, 8, dtype=torch.float64, requires_grad=True)
    index, _ = Clouds.of(pos, None, 64).subsample(pos)
    assert_same_values_and_gradients(lambda: neighbourhood_mean(x, edge_index, index, 10),
                                     lambda: neighbourhood_mean(x, edge_index)[index], [x])
    assert_same_values_and_gradients(lambda: neighbourhood_mean(x, edge_index, index),
                                     lambda: neighbourhood_mean(x, edge_index)[index], [x])


def test_a_mismatched_operator_is_refused():
    pos = torch.randn(20, 3)
    edge_index = knn_graph(pos, 4)
    operator = DiffGCNOperator.build(pos, edge_index, k=4)
    conv = DiffGCNConv(4, 4)
    with pytest.raises(ValueError, match="built for 20 nodes, but the features have 10"):
        conv(torch.randn(10, 4), pos[:10], edge_index, operator=operator)
    with pytest.raises(ValueError, match="operator_scale='spacing', but the layer uses 'derivative'"):
        DiffGCNConv(4, 4, operator_scale="derivative")(torch.randn(20, 4), pos, edge_index, operator=operator)
    with pytest.raises(ValueError, match="`operator` must be a DiffGCNOperator"):
        conv(torch.randn(20, 4), pos, edge_index, operator=edge_index)
    with pytest.raises(ValueError, match=r"expected blocks \[20, 5, C\]"):
        operator(torch.randn(20, 4, 3))
    with pytest.raises(ValueError, match="`operator_scale` must be one of"):
        DiffGCNOperator.build(pos, edge_index, operator_scale="metres")


def test_the_transpose_is_built_only_for_a_backward_pass():
    pos = torch.randn(40, 3)
    edge_index = knn_graph(pos, 5)
    conv = DiffGCNConv(6, 6)
    operator = DiffGCNOperator.build(pos, edge_index, k=5)
    with torch.no_grad():
        conv(torch.randn(40, 6), pos, edge_index, k=5, operator=operator)
    assert operator.product._transpose is None
    x = torch.randn(40, 6, requires_grad=True)
    conv(x, pos, edge_index, k=5, operator=operator).sum().backward()
    assert operator.product._transpose is not None and x.grad is not None


@pytest.mark.parametrize("name", ["mgic_diffgcn", "diffgcn"])
def test_networks_build_one_operator_per_graph_and_match_the_gather_path(name):
    from mgic_geo.models import create_model

    torch.manual_seed(0)
    model = create_model(name, num_points=64, dropout=0.0).double().train()
    pos = torch.randn(2 * 64, 3, dtype=torch.float64)
    batch = torch.arange(2).repeat_interleave(64)
    with counted_builds() as builds:
        fast = model(pos, batch)
    assert len(builds) == 4  # one per stage graph, shared by the stem, the widening and the block
    plain = model(pos.clone().requires_grad_(), batch)  # positions needing a gradient: the gather path
    torch.testing.assert_close(fast, plain)
    grad = torch.randn_like(fast)
    params = list(model.parameters())
    torch.testing.assert_close(torch.autograd.grad(fast, params, grad), torch.autograd.grad(plain, params, grad))


def test_sorted_columns_give_the_same_matrix():
    from mgic_geo.nn.graph_operator import _csr

    crow, cols = torch.tensor([0, 3, 3, 5]), torch.tensor([4, 0, 2, 3, 1])
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    unsorted, ordered = _csr(crow, cols, values, (3, 5), False), _csr(crow, cols, values, (3, 5), True)
    assert ordered.col_indices().tolist() == [0, 2, 4, 1, 3]
    torch.testing.assert_close(unsorted.to_dense(), ordered.to_dense())

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mgic_geo.nn import EdgeConvNormAct, knn_graph


def per_edge_reference(conv, norm, x, edge_index):
    """DGCNN's EdgeConvNormAct as usually written: materialise every edge, BN over edges, max per node."""
    source, target = edge_index
    edges = torch.cat([x[target], x[source] - x[target]], dim=1)
    centre, offset = conv.centre.dense_weight(), conv.offset.dense_weight()
    h = F.leaky_relu(norm(F.linear(edges, torch.cat([centre + offset, offset], dim=1))), 0.2)
    out = torch.zeros(x.shape[0], h.shape[1], dtype=x.dtype)
    return out.scatter_reduce(0, target[:, None].expand_as(h), h, "amax", include_self=False)


@pytest.fixture(params=[1, 2], ids=["dense", "grouped"])
def setup(request):
    torch.manual_seed(3)
    conv = EdgeConvNormAct(6, 10, groups=request.param).double()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(10))  # both signs: the max and the min branch
        conv.bias.copy_(torch.randn(10))
    norm = nn.BatchNorm1d(10).double()
    with torch.no_grad():
        norm.weight.copy_(conv.weight)
        norm.bias.copy_(conv.bias)
    pos = torch.randn(60, 3, dtype=torch.float64)
    x = torch.randn(60, 6, dtype=torch.float64)
    batch = torch.repeat_interleave(torch.arange(3), 20)
    return conv, norm, x, knn_graph(pos, 5, batch)


def test_per_node_computation_equals_the_per_edge_one(setup):
    conv, norm, x, edge_index = setup
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours, theirs = conv(x1, edge_index), per_edge_reference(conv, norm, x2, edge_index)
    torch.testing.assert_close(ours, theirs)
    grad = torch.randn_like(ours)
    ours.backward(grad)
    conv_grads = [p.grad.clone() for p in (conv.weight, conv.bias)]
    linear_grads = [conv.centre.weight.grad.clone(), conv.offset.weight.grad.clone()]
    conv.zero_grad()
    theirs.backward(grad)
    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close([conv.centre.weight.grad, conv.offset.weight.grad], linear_grads)
    torch.testing.assert_close([norm.weight.grad, norm.bias.grad], conv_grads)
    torch.testing.assert_close(conv.running_mean, norm.running_mean)
    torch.testing.assert_close(conv.running_var, norm.running_var)


def test_eval_mode_uses_running_statistics(setup):
    conv, norm, x, edge_index = setup
    conv(x, edge_index), per_edge_reference(conv, norm, x, edge_index)  # one training step each
    conv.eval(), norm.eval()
    torch.testing.assert_close(conv(x, edge_index), per_edge_reference(conv, norm, x, edge_index))


def test_memory_is_per_node():
    conv = EdgeConvNormAct(8, 16)
    x = torch.randn(500, 8)
    out = conv(x, knn_graph(x, 20))
    assert out.shape == (500, 16)


def test_traces_without_graph_breaks():
    import torch._dynamo

    conv = EdgeConvNormAct(4, 8)
    x = torch.randn(40, 4)
    explanation = torch._dynamo.explain(conv)(x, knn_graph(x, 5))
    assert explanation.graph_count == 1 and explanation.graph_break_count == 0, explanation.break_reasons


def test_repr_and_reset_parameters():
    conv = EdgeConvNormAct(3, 64)
    assert repr(conv) == "EdgeConvNormAct(3, 64)"
    assert repr(EdgeConvNormAct(8, 16, groups=4)) == "EdgeConvNormAct(8, 16, groups=4)"
    with torch.no_grad():
        conv.weight.fill_(2.0)
        conv.running_var.fill_(5.0)
    conv.reset_parameters()
    assert torch.equal(conv.weight, torch.ones(64)) and torch.equal(conv.running_var, torch.ones(64))


@pytest.mark.parametrize(
    "x, edge_index, message",
    [
        (torch.randn(5, 2), torch.zeros(2, 1, dtype=torch.long), r"expected node features \[N, 3\], got \(5, 2\)"),
        (torch.randn(5, 3), torch.zeros(1, 4, dtype=torch.long), r"expected edge_index \[2, E\], got \(1, 4\)"),
    ],
)
def test_bad_inputs(x, edge_index, message):
    with pytest.raises(ValueError, match=message):
        EdgeConvNormAct(3, 4)(x, edge_index)


def test_bad_construction():
    with pytest.raises(ValueError, match=r"`out_channels` must be a positive integer, got -1"):
        EdgeConvNormAct(3, -1)
    with pytest.raises(ValueError, match=r"`groups`=4 must divide in_channels=6 and out_channels=8"):
        EdgeConvNormAct(6, 8, groups=4)


def test_initial_weights_follow_dgcnn():
    """W_a = centre + offset and W_b = offset are each U(+-1/sqrt(2 C_in)), as DGCNN's h."""
    conv = EdgeConvNormAct(32, 256)
    bound = 1 / 64**0.5
    for weight in (conv.centre.weight + conv.offset.weight, conv.offset.weight):
        assert weight.abs().max() <= bound and weight.std() > 0.9 * bound / 3**0.5


def test_regular_graph_path_equals_the_general_one(setup):
    conv, _, x, edge_index = setup  # 3 clouds of 20 points, k = 5
    general_conv = EdgeConvNormAct(6, 10, groups=conv.groups).double()
    general_conv.load_state_dict(conv.state_dict())
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    regular, general = conv(x1, edge_index, k=5), general_conv(x2, edge_index)
    torch.testing.assert_close(regular, general)
    grad = torch.randn_like(regular)
    regular.backward(grad)
    general.backward(grad)
    torch.testing.assert_close(x1.grad, x2.grad)
    for mine, theirs in zip(conv.parameters(), general_conv.parameters()):
        torch.testing.assert_close(mine.grad, theirs.grad)
    torch.testing.assert_close(conv.running_var, general_conv.running_var)

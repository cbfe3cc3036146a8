"""PyG-distinct names, sibling layers, callable level blocks, norm_layer / act_layer, SyncBatchNorm."""
import inspect
from functools import partial

import pytest
import torch
from torch import nn

import mgic_geo.nn as ours
from mgic_geo.core.config import MGICConfig
from mgic_geo.models import create_model
from mgic_geo.models.dgcnn import DGCNN
from mgic_geo.models.diffgcn import DiffGCNNet
from mgic_geo.nn import (DiffGCNNormAct, DynamicEdgeConvNormAct, DynamicMGICConv, EdgeConvNormAct, MGICConv,
                         knn_graph)

GROUP_NORM = partial(nn.GroupNorm, 4)


def test_no_pyg_names_with_another_contract():
    for name in ("EdgeConv", "DynamicEdgeConv"):
        assert not hasattr(ours, name)
        assert name not in ours.__all__


def test_dynamic_layers_are_siblings_not_subclasses():
    assert not issubclass(DynamicEdgeConvNormAct, EdgeConvNormAct)
    assert not issubclass(DynamicMGICConv, MGICConv)
    assert list(inspect.signature(EdgeConvNormAct.forward).parameters) == ["self", "x", "edge_index", "k"]
    assert list(inspect.signature(MGICConv.forward).parameters)[:4] == ["self", "x", "pos", "edge_index"]


def test_callable_conv_equals_the_string_shorthand():
    torch.manual_seed(0)
    pos, x = torch.randn(90, 3), torch.randn(90, 32)
    config = MGICConfig(group_size=4, coarsest=8)
    by_name = MGICConv(32, conv="diffgcn", mgic=config)
    by_callable = MGICConv(32, conv=lambda width, groups: DiffGCNNormAct(width, width, groups=groups), mgic=config)
    by_callable.load_state_dict(by_name.state_dict())
    graph = knn_graph(pos, 6)
    torch.testing.assert_close(by_callable(x, pos, graph), by_name(x, pos, graph))
    assert by_callable.groups == by_name.groups
    assert repr(by_callable).startswith("MGICConv(32, conv=<lambda>")


def test_dynamic_callable_conv_builds_its_graph_on_what_it_is_told():
    torch.manual_seed(0)
    pos, x = torch.randn(60, 3), torch.randn(60, 16)
    config = MGICConfig(group_size=4, coarsest=8)
    level = lambda width, groups: DiffGCNNormAct(width, width, groups=groups)  # noqa: E731
    on_pos = DynamicMGICConv(16, conv=level, k=5, graph_on="pos", mgic=config)
    static = MGICConv(16, conv=level, mgic=config)
    static.load_state_dict(on_pos.state_dict())
    torch.testing.assert_close(on_pos(x, pos), static(x, pos, knn_graph(pos, 5)))
    assert DynamicMGICConv(16, conv=level, mgic=config).graph_on == "x"
    with pytest.raises(ValueError, match="`graph_on` must be one of"):
        DynamicMGICConv(16, graph_on="edges")


@pytest.mark.parametrize("make", [
    lambda **kw: EdgeConvNormAct(8, 16, **kw),
    lambda **kw: DynamicEdgeConvNormAct(8, 16, k=5, **kw),
    lambda **kw: DiffGCNNormAct(8, 16, **kw),
], ids=["edge", "dynamic_edge", "diffgcn"])
def test_layers_use_the_given_norm_and_activation(make):
    layer = make(norm_layer=GROUP_NORM, act_layer=nn.GELU)
    assert isinstance(layer.norm, nn.GroupNorm) and layer.norm.num_groups == 4 and isinstance(layer.act, nn.GELU)
    default = make()
    assert type(default.norm) is nn.BatchNorm1d
    assert sum(p.numel() for p in layer.parameters()) == sum(p.numel() for p in default.parameters())
    with pytest.raises(ValueError, match="`norm_layer` must be a callable"):
        make(norm_layer="batch")


def test_edgeconv_with_any_norm_and_activation_runs_per_edge():
    torch.manual_seed(0)
    x = torch.randn(50, 8, dtype=torch.float64)
    graph = knn_graph(x, 5)
    layer = EdgeConvNormAct(8, 16, norm_layer=GROUP_NORM, act_layer=nn.GELU).double()
    assert not layer.per_node
    source, target = graph
    a, b = layer.centre(x), layer.offset(x)
    h = nn.functional.gelu(layer.norm(a[target] + b[source]))
    expected = h.view(50, 5, 16).amax(1)
    torch.testing.assert_close(layer(x, graph), expected)
    torch.testing.assert_close(layer(x, graph, k=5), expected)


class MyLeakyReLU(nn.LeakyReLU):
    """LeakyReLU under a type the per-node check does not know."""


def test_per_edge_path_equals_the_per_node_one_for_batchnorm():
    torch.manual_seed(0)
    x = torch.randn(60, 6, dtype=torch.float64)
    graph = knn_graph(x, 5, torch.arange(3).repeat_interleave(20))
    per_node = EdgeConvNormAct(6, 10).double()
    per_edge = EdgeConvNormAct(6, 10, act_layer=partial(MyLeakyReLU, 0.2)).double()
    with torch.no_grad():
        per_node.norm.weight.copy_(torch.randn(10))  # both signs: the max and the min branch
    per_edge.load_state_dict(per_node.state_dict())
    assert per_node.per_node and not per_edge.per_node
    torch.testing.assert_close(per_edge(x, graph), per_node(x, graph))
    torch.testing.assert_close(per_edge.norm.running_var, per_node.norm.running_var)
    per_node.eval(), per_edge.eval()
    torch.testing.assert_close(per_edge(x, graph), per_node(x, graph))
    assert not EdgeConvNormAct(6, 10, act_layer=partial(nn.LeakyReLU, -0.5)).per_node  # decreasing part


def test_old_checkpoints_load():
    layer = EdgeConvNormAct(4, 8)
    state = layer.state_dict()
    old = {key.replace("norm.", ""): value for key, value in state.items() if key != "norm.num_batches_tracked"}
    fresh = EdgeConvNormAct(4, 8)
    fresh.load_state_dict(old)
    for key, value in state.items():
        torch.testing.assert_close(fresh.state_dict()[key], value)


@pytest.mark.parametrize("network", [DGCNN, DiffGCNNet])
@pytest.mark.parametrize("mgic", [None, {"group_size": 8, "coarsest": 16}], ids=["plain", "mgic"])
def test_networks_use_the_given_norm_and_activation_everywhere(network, mgic):
    model = network(mgic=mgic, norm_layer=GROUP_NORM, act_layer=nn.GELU)
    assert not any(isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.ReLU, nn.LeakyReLU)) for m in model.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules()) and any(isinstance(m, nn.GELU) for m in model.modules())
    model.eval()
    out = model(torch.randn(2 * 64, 3), torch.arange(2).repeat_interleave(64))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["dgcnn", "mgic_dgcnn", "diffgcn", "mgic_diffgcn"])
def test_network_defaults_are_unchanged(name):
    """Without norm_layer / act_layer: BatchNorm1d (ChannelBatchNorm for MGIC corrections), and
    LeakyReLU(0.2) in DGCNN, ReLU in diffGCN with DGCNN's LeakyReLU(0.2) head."""
    from mgic_geo.core.norm import ChannelBatchNorm

    model = create_model(name)
    norms = {type(m) for m in model.modules() if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm))}
    assert norms == ({nn.BatchNorm1d, ChannelBatchNorm} if name.startswith("mgic") else {nn.BatchNorm1d})
    acts = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU, nn.GELU))]
    if "dgcnn" in name:
        assert all(type(m) is nn.LeakyReLU and m.negative_slope == 0.2 for m in acts)
        torch.manual_seed(0)
        explicit = DGCNN(act_layer=partial(nn.LeakyReLU, 0.2),
                         mgic={"group_size": 8, "coarsest": 16} if name.startswith("mgic") else None)
        torch.manual_seed(0)
        model = create_model(name)
        assert [type(m) for m in model.modules()] == [type(m) for m in explicit.modules()]
        for (key, a), (_, b) in zip(model.state_dict().items(), explicit.state_dict().items()):
            assert torch.equal(a, b), key
    else:
        assert {type(m) for m in acts} == {nn.ReLU, nn.LeakyReLU}
        assert [type(m) for m in model.head.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU))] == [nn.LeakyReLU] * 2

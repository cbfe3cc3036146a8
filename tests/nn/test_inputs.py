"""The feature and position checks of the graph layers (mgic_geo.nn.inputs; issue 16, item 12):
every supported dtype works, anything else is a ValueError naming the layer, the tensor and the
expected dtype or device."""
import pytest
import torch

from mgic_geo.layers import ChannelMixNormAct
from mgic_geo.nn import (DiffGCNConv, DiffGCNNormAct, DynamicEdgeConvNormAct, DynamicMGICConv, EdgeConvNormAct,
                         MGICConv, knn_graph)

MGIC = {"group_size": 2, "coarsest": 2}
NODES = 24

LAYERS = {
    "DiffGCNConv": (lambda: DiffGCNConv(8, 8), lambda l, x, pos, g, b: l(x, pos, g)),
    "DiffGCNNormAct": (lambda: DiffGCNNormAct(8, 8), lambda l, x, pos, g, b: l(x, pos, g)),
    "EdgeConvNormAct": (lambda: EdgeConvNormAct(8, 8), lambda l, x, pos, g, b: l(x, g)),
    "DynamicEdgeConvNormAct": (lambda: DynamicEdgeConvNormAct(8, 8, k=4), lambda l, x, pos, g, b: l(x, b)),
    "MGICConv": (lambda: MGICConv(8, mgic=MGIC), lambda l, x, pos, g, b: l(x, pos, g)),
    "MGICConv-edge": (lambda: MGICConv(8, conv="edge", mgic=MGIC), lambda l, x, pos, g, b: l(x, pos, g)),
    "DynamicMGICConv": (lambda: DynamicMGICConv(8, mgic=MGIC, k=4), lambda l, x, pos, g, b: l(x, pos, b)),
    "DynamicMGICConv-edge": (lambda: DynamicMGICConv(8, conv="edge", mgic=MGIC, k=4),
                             lambda l, x, pos, g, b: l(x, pos, b)),
    "ChannelMixNormAct": (lambda: ChannelMixNormAct(8, 2), lambda l, x, pos, g, b: l(x)),
}


def run(name, *, layer_dtype=torch.float32, x=None, pos=None, device="cpu"):
    make, call = LAYERS[name]
    torch.manual_seed(0)
    layer = make().to(layer_dtype).to(device)
    x = torch.randn(NODES, 8, dtype=layer_dtype) if x is None else x
    pos = torch.randn(x.shape[0], 3) if pos is None else pos
    graph = knn_graph(torch.randn(x.shape[0], 3), 4) if x.shape[0] else torch.zeros(2, 0, dtype=torch.long)
    return call(layer, x, pos, graph, None)


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_every_floating_dtype_works_when_features_and_layer_agree(name, dtype):
    out = run(name, layer_dtype=dtype, x=torch.randn(NODES, 8).to(dtype), pos=torch.randn(NODES, 3).to(dtype))
    assert out.dtype == dtype and out.shape == (NODES, 8)


@pytest.mark.parametrize("name", [n for n in LAYERS if n != "ChannelMixNormAct"])
@pytest.mark.parametrize("pos_dtype", [torch.float64, torch.bfloat16])
def test_positions_may_have_any_floating_dtype(name, pos_dtype):
    assert run(name, pos=torch.randn(NODES, 3).to(pos_dtype)).dtype == torch.float32


def _label(name):
    return name.split("-")[0]


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("x, message", [
    (torch.randn(NODES, 8, dtype=torch.float64),
     r"`x` has dtype torch.float64 but its parameters have torch.float32; convert one of them \(`x`.to\(torch.float32\) "
     r"or layer.to\(torch.float64\)\), or run under torch.autocast"),
    (torch.randn(NODES, 8, dtype=torch.float16), r"`x` has dtype torch.float16 but its parameters have torch.float32"),
    (torch.randint(0, 5, (NODES, 8)),
     r"`x` must be floating point \(its parameters' dtype torch.float32\), got dtype torch.int64"),
    (torch.empty(NODES, 8, device="meta"), r"`x` is on device meta but its parameters are on cpu; move one of them"),
    (torch.randn(0, 8), r"`x` holds 0 nodes; \w+ needs at least one \(leave empty batches out\)"),
])
def test_bad_features_are_named(name, x, message):
    with pytest.raises(ValueError, match=rf"^{_label(name)}: {message}"):
        run(name, x=x, pos=torch.randn(x.shape[0], 3))


@pytest.mark.parametrize("name", [n for n in LAYERS if n != "ChannelMixNormAct"])
def test_meta_features_are_refused_even_on_a_meta_layer(name):
    with pytest.raises(ValueError, match=rf"^{_label(name)}: `x` is on the meta device, which holds no values"):
        run(name, x=torch.empty(NODES, 8, device="meta"), pos=torch.empty(NODES, 3, device="meta"), device="meta")


def test_channel_mix_runs_on_the_meta_device_and_checks_its_channels():
    assert run("ChannelMixNormAct", x=torch.empty(NODES, 8, device="meta"), device="meta").shape == (NODES, 8)
    with pytest.raises(ValueError, match=r"ChannelMixNormAct: expected `x` \[N, 8, \*\], got \(24, 4\)"):
        run("ChannelMixNormAct", x=torch.randn(NODES, 4))


@pytest.mark.parametrize("name", ["DiffGCNConv", "MGICConv", "DynamicMGICConv"])
def test_bad_positions_are_named(name):
    with pytest.raises(ValueError, match=rf"^{name}: `pos` must be a floating-point tensor, got dtype torch.int64"):
        run(name, pos=torch.randint(0, 5, (NODES, 3)))
    with pytest.raises(ValueError, match=rf"^{name}: `pos` is on device meta but `x` on cpu"):
        run(name, pos=torch.empty(NODES, 3, device="meta"))


@pytest.mark.parametrize("name", ["MGICConv", "MGICConv-edge", "DynamicMGICConv", "DiffGCNNormAct"])
def test_autocast_may_hand_the_levels_another_dtype(name):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = run(name)
    assert out.shape == (NODES, 8)

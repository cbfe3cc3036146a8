import torch
from torch import nn

from mgic_geo.core.norm import ChannelBatchNorm
from mgic_geo.core.transfer import GroupedChannelMap
from mgic_geo.layers import ChannelMixNormAct, ConvNormAct


def test_channel_mix_works_on_every_rank():
    layer = ChannelMixNormAct(16, 4)
    for shape in [(10, 16), (2, 16, 7), (2, 16, 3, 3)]:
        assert layer(torch.randn(shape)).shape == shape
    assert isinstance(layer[0], GroupedChannelMap) and layer[0].groups == 4
    assert isinstance(layer[1], ChannelBatchNorm)
    assert layer.in_channels == layer.out_channels == 16


def test_conv_norm_act_is_a_grouped_same_padding_conv():
    layer = ConvNormAct(16, 4, kernel_size=5, act_layer=nn.GELU)
    assert layer(torch.randn(2, 16, 9, 9)).shape == (2, 16, 9, 9)
    assert layer[0].groups == 4 and layer[0].padding == (2, 2) and layer[0].bias is None
    assert isinstance(layer[2], nn.GELU)


def test_channel_mix_names_a_wrong_dtype_or_an_empty_batch():
    import pytest

    layer = ChannelMixNormAct(16, 4)
    assert layer.double()(torch.randn(2, 16, 3, 3, dtype=torch.float64)).dtype == torch.float64
    with pytest.raises(ValueError, match=r"ChannelMixNormAct: `x` has dtype torch.float32 but its parameters have torch.float64"):
        layer(torch.randn(2, 16, 3, 3))
    with pytest.raises(ValueError, match=r"ChannelMixNormAct: `x` holds 0 nodes"):
        layer(torch.randn(0, 16, 3, 3, dtype=torch.float64))

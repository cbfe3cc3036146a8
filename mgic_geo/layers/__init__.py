"""Layers used as MGIC level blocks."""
from mgic_geo.layers.conv_norm_act import ChannelMixNormAct, ConvNormAct

__all__ = ["ChannelMixNormAct", "ConvNormAct"]

"""Ready-made level blocks for :class:`~mgic_geo.MGICBlock`: ``block(width, groups)`` factories.

Shapes:
    - :class:`ChannelMixNormAct`: :math:`(N, C, *) \\to (N, C, *)`, any rank (node features too)
    - :class:`ConvNormAct`: :math:`(B, C, H, W) \\to (B, C, H, W)`
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from mgic_geo.core.norm import ChannelBatchNorm
from mgic_geo.core.transfer import GroupedChannelMap
from mgic_geo.nn.inputs import check_features


class ChannelMixNormAct(nn.Sequential):
    """Grouped 1x1 channel mixing, batch norm and activation on channel dimension 1.

    ``pointwise``: it acts on every node (row) on its own, so :class:`~mgic_geo.MGICBlock` may run
    it on channel-major node features.

    Input: :math:`(N, C, *)`, floating point in the layer's dtype and on its device (any dtype
    under ``torch.autocast``; the meta device too), at least one row; anything else raises a
    ``ValueError`` naming the layer (:mod:`mgic_geo.nn.inputs`)."""

    pointwise = True

    def __init__(
        self,
        channels: int,
        groups: int = 1,
        *,
        norm_layer: Callable[[int], nn.Module] = ChannelBatchNorm,
        act_layer: Callable[[], nn.Module] = nn.ReLU,
    ):
        super().__init__(GroupedChannelMap(channels, channels, groups), norm_layer(channels), act_layer())
        self.in_channels = self.out_channels = channels

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__}: expected `x` [N, {self.in_channels}, *], got {tuple(x.shape)}")
        check_features(type(self).__name__, "x", x, self, allow_meta=True)
        return super().forward(x)


class ConvNormAct(nn.Sequential):
    """Grouped ``k x k`` convolution (same padding, bias-free), batch norm and activation."""

    def __init__(
        self,
        channels: int,
        groups: int = 1,
        *,
        kernel_size: int = 3,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        act_layer: Callable[[], nn.Module] = nn.ReLU,
    ):
        super().__init__(
            nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=groups, bias=False),
            norm_layer(channels),
            act_layer(),
        )
        self.in_channels = self.out_channels = channels


"""Grid-transfer operators between channel levels (paper Sec. 4.3).

``R_j`` maps ``c_j -> c_{j+1}`` channels and ``P_j`` maps back; both are bias-free grouped 1x1
maps with ``g_j`` contiguous groups, so coarse group ``k`` covers fine groups ``2k`` and ``2k+1``.
``P_j`` has the transposed block structure of ``R_j`` but its own weights.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mgic_geo.core.grouped import block_diagonal, grouped_channel_map
from mgic_geo.validation import check_int

TRANSFER_INITS = ("average", "kaiming")


class GroupedChannelMap(nn.Module):
    r"""A grouped 1x1 channel map (a grouped ``Linear`` / 1x1 convolution) acting on channel
    dimension 1 of a tensor of any rank.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        groups (int): number of contiguous channel groups; must divide both widths.
        bias (bool): learn an additive bias. (default: ``False``)

    Shapes:
        - **input:** :math:`(N, C_{in}, *)`
        - **output:** :math:`(N, C_{out}, *)`
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int = 1, bias: bool = False):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            check_int(name, value)
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"`groups`={groups} must divide in_channels={in_channels} and out_channels={out_channels}"
            )
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.weight = nn.Parameter(torch.empty(groups, out_channels // groups, in_channels // groups))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same distribution as nn.Linear / nn.Conv2d: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        bound = 1.0 / math.sqrt(self.weight.shape[-1])
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return grouped_channel_map(x, self.weight, self.bias)

    def dense_weight(self) -> Tensor:
        """The equivalent dense ``[out_channels, in_channels]`` block-diagonal matrix."""
        return block_diagonal(self.weight)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, groups={self.groups}, bias={self.bias is not None}"


class TransferOperator(GroupedChannelMap):
    r"""A restriction (``c -> c/2``) or prolongation (``c/2 -> c``) between channel levels.

    ``init="average"`` (the paper's): random positive entries with every row summing to 1, so a
    constant signal restricts and prolongs to the same constant while no two coarse channels start
    identical. ``init="kaiming"`` reproduces the authors' released models, whose model-wide init
    loop overwrote the transfer operators with random signed Kaiming-normal weights (fan-out, ReLU
    gain). Model-wide init helpers of this package skip this class
    (:func:`mgic_geo.core.init.init_weights`).
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int = 1, init: str = "average"):
        if init not in TRANSFER_INITS:
            raise ValueError(f"`transfer_init` must be one of {TRANSFER_INITS}, got {init!r}")
        self.init = init
        super().__init__(in_channels, out_channels, groups, bias=False)

    def reset_parameters(self) -> None:
        with torch.no_grad():
            if self.init == "average":
                self.weight.uniform_(0.5, 1.5)
                self.weight.div_(self.weight.sum(dim=-1, keepdim=True))
            else:
                nn.init.kaiming_normal_(self.weight.view(self.out_channels, -1), mode="fan_out", nonlinearity="relu")

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, groups={self.groups}, init={self.init!r}"

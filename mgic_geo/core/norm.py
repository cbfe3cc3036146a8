"""Batch normalisation over channel dimension 1 of a tensor of any rank >= 2."""
from __future__ import annotations

from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from mgic_geo.core.grouped import is_channel_major


class ChannelBatchNorm(_BatchNorm):
    r"""``BatchNorm1d``/``2d``/``3d`` in one module: statistics per channel (dimension 1) over all
    other dimensions, so the same MGIC block normalises node features ``[N, C]``, sequences
    ``[B, C, L]`` and images ``[B, C, H, W]``.

    Channel-major node features (``[N, C]`` with ``x.t()`` contiguous, as inside an
    :class:`~mgic_geo.MGICBlock` over node features) are normalised as ``[1, C, N]``, the layout
    batch norm reduces fastest, and come back channel-major.

    Shapes:
        - **input:** :math:`(N, C, *)`
        - **output:** same as input
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected a tensor with a channel dimension (>= 2 dims), got {input.dim()}D")

    def forward(self, input: Tensor) -> Tensor:
        if is_channel_major(input):
            return super().forward(input.t().unsqueeze(0)).squeeze(0).t()
        return super().forward(input)

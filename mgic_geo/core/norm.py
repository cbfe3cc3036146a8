"""Batch normalisation over channel dimension 1 of a tensor of any rank >= 2."""
from __future__ import annotations

from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm


class ChannelBatchNorm(_BatchNorm):
    r"""``BatchNorm1d``/``2d``/``3d`` in one module: statistics per channel (dimension 1) over all
    other dimensions, so the same MGIC block normalises node features ``[N, C]``, sequences
    ``[B, C, L]`` and images ``[B, C, H, W]``.

    Shapes:
        - **input:** :math:`(N, C, *)`
        - **output:** same as input
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected a tensor with a channel dimension (>= 2 dims), got {input.dim()}D")

"""Model-wide weight initialisation that leaves the MGIC transfer operators alone.

The authors' released models run a Kaiming init loop over every convolution after building the
network, which silently replaces the paper's averaging init of ``R_j``/``P_j`` by random signed
weights. :func:`init_weights` skips :class:`~mgic_geo.core.transfer.TransferOperator`.
"""
from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mgic_geo.core.block import MGICBlock
from mgic_geo.core.transfer import GroupedChannelMap, TransferOperator


def init_weights(model: nn.Module) -> nn.Module:
    """Kaiming-normal (fan-out, ReLU) for convolutions and linear maps, unit scale and zero shift
    for batch norms, zero biases; MGIC transfer operators keep their own init and zero-initialised
    corrections (``MGICBlock(zero_init_correction=True)``) stay zero. Returns ``model``."""
    for module in model.modules():
        if isinstance(module, TransferOperator):
            continue
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, GroupedChannelMap):
            nn.init.kaiming_normal_(module.weight.view(module.out_channels, -1), mode="fan_out", nonlinearity="relu")
        elif isinstance(module, _BatchNorm) and module.affine:
            nn.init.ones_(module.weight)
        else:
            continue
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    for module in model.modules():
        if isinstance(module, MGICBlock):
            module.init_corrections()
    return model

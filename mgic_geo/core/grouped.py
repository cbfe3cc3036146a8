"""Grouped 1x1 channel maps on channel dimension 1, for any tensor rank.

One primitive serves the transfer operators ``R_j``/``P_j`` and the grouped 1x1 level blocks of
node-feature networks. Which formulation is fastest depends on the memory layout; ``mgic-geo
bench grouped`` times the alternatives side by side (its table is in the README):

* channel-major (``[B, C, *S]`` contiguous, e.g. NCHW images): each group is a small matrix
  applied to a contiguous ``[a, S]`` slab, so one broadcast ``matmul`` does it (faster than
  ``conv2d(groups=g)``).
* channel-last (``[N, C]`` node features, channels_last images): per-group GEMMs with an inner
  dimension of ``C / g`` (8 at the paper's ``s_g``) are slow (``einsum``, ``conv1d``), so
  neighbouring groups are packed into block-diagonal super-groups of about
  ``SUPERGROUP_CHANNELS`` input channels and applied as one batched GEMM -- it multiplies the zero
  blocks too, but long inner products pay for that. The zero blocks are built from the compact weight on
  every call, so gradients reach only the real entries.
* channel-major node features (``[N, C]`` whose transpose ``[C, N]`` is contiguous, see
  :func:`to_channel_major`): every group is again a contiguous ``[a, N]`` slab, so the broadcast
  ``matmul`` of channel-major images applies with no zero blocks and no layout copies; the output
  is channel-major too. :class:`~mgic_geo.MGICBlock` runs the V-cycle of node features in this
  layout when its level blocks act on every node independently (``pointwise``).
"""
from __future__ import annotations

import torch
from torch import Tensor

SUPERGROUP_CHANNELS = 64


def _supergroup_size(groups: int, in_per_group: int, channels: int = SUPERGROUP_CHANNELS) -> int:
    size = max(1, min(groups, channels // in_per_group))
    while groups % size:
        size -= 1
    return size


def is_channel_major(x: Tensor) -> bool:
    """``x`` is ``[N, C]`` node features stored channel by channel (``x.t()`` contiguous, ``N, C > 1``)."""
    return x.dim() == 2 and x.shape[0] > 1 and x.shape[1] > 1 and x.stride() == (1, x.shape[0])


def to_channel_major(x: Tensor) -> Tensor:
    """The same ``[N, C]`` values, stored channel by channel (a copy unless already so). Its
    gradient comes back in ``x``'s layout."""
    return x if is_channel_major(x) else _Relayout.apply(x, True)


def to_row_major(x: Tensor) -> Tensor:
    """The same ``[N, C]`` values, stored row by row (a copy unless already so). Its gradient comes
    back in ``x``'s layout: elementwise backward passes (ReLU, sums of gradients) then read and
    write one layout, several times faster on the CPU than mixing two."""
    return x if x.is_contiguous() else _Relayout.apply(x, False)


class _Relayout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, channel_major: bool) -> Tensor:
        ctx.channel_major = channel_major
        return x.t().contiguous().t() if channel_major else x.contiguous()

    @staticmethod
    def backward(ctx, grad: Tensor):
        return (grad.contiguous() if ctx.channel_major else to_channel_major(grad)), None


def _supergroup_weight(weight: Tensor, size: int) -> Tensor:
    """``F`` grouped maps ``[g, F, b, a]`` -> ``[g / size, F * size * b, size * a]``: each super-group
    of ``size`` neighbouring groups as one block-diagonal matrix per map, maps stacked map by map.
    Built from the compact weight on every call, so gradients reach only the real entries."""
    groups, maps, out_per_group, in_per_group = weight.shape
    if size == 1:
        return weight.reshape(groups, maps * out_per_group, in_per_group)
    eye = torch.eye(size, dtype=weight.dtype, device=weight.device)
    weight = torch.einsum("sgfba,gh->sfgbha", weight.reshape(groups // size, size, maps, out_per_group, in_per_group), eye)
    return weight.reshape(groups // size, maps * size * out_per_group, size * in_per_group)


def _channel_last_map(x: Tensor, weight: Tensor) -> Tensor:
    """``x``: ``[M, C_in]`` rows; ``weight``: ``[g, b, a]``. Returns ``[M, g * b]``."""
    groups, _, in_per_group = weight.shape
    weight = _supergroup_weight(weight[:, None], _supergroup_size(groups, in_per_group))
    rows = x.shape[0]
    out = torch.einsum("ngi,goi->ngo", x.reshape(rows, weight.shape[0], -1), weight)
    return out.reshape(rows, -1)


def channel_last_map(x: Tensor, weight: Tensor) -> Tensor:
    """The grouped 1x1 map of row-major (channel-last) rows by block-diagonal super-groups: the
    formulation :func:`grouped_channel_map` uses for ``[N, C]`` node features stored row by row,
    whatever the layout of ``x`` (for comparisons such as ``mgic-geo bench grouped``).

    Args:
        x (Tensor): ``[M, g * a]`` rows, contiguous.
        weight (Tensor): ``[g, b, a]``, ``g`` groups mapping ``a`` channels to ``b``.

    Returns:
        Tensor: ``[M, g * b]``.
    """
    return _channel_last_map(x, weight)


def grouped_maps_by_supergroup(x: Tensor, weight: Tensor, supergroup_channels: int = SUPERGROUP_CHANNELS // 2) -> Tensor:
    """Several grouped 1x1 maps of the same row-major ``[M, g * a]`` input at once: ``weight`` is
    ``[g, F, b, a]`` (``F`` maps). Returns ``[S, M, F, w]``: for each of the ``S`` super-groups of
    :func:`_channel_last_map` (``w`` output channels each), every map's output, map by map, as one
    batched GEMM writes them (no layout copy of the output). The maps multiply ``F`` times the zero
    blocks of a super-group, so super-groups are narrower than for a single map: 32 input channels,
    the fastest choice for widths 32-256 with ``F = 5`` (the diffGCN mix) in ``mgic-geo bench modelnet``."""
    groups, maps, out_per_group, in_per_group = weight.shape
    size = _supergroup_size(groups, in_per_group, supergroup_channels)
    supergroups = groups // size
    weight = _supergroup_weight(weight, size)
    rows = x.shape[0]
    out = torch.bmm(x.reshape(rows, supergroups, size * in_per_group).transpose(0, 1), weight.transpose(1, 2))
    return out.view(supergroups, rows, maps, size * out_per_group)


def grouped_channel_map(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Apply the block-diagonal channel map ``weight`` (``[groups, out/groups, in/groups]``)
    to channel dimension 1 of ``x`` (``[N, C]``, ``[B, C, L]``, ``[B, C, H, W]``, ...)."""
    groups, out_per_group, in_per_group = weight.shape
    if x.dim() < 2 or x.shape[1] != groups * in_per_group:
        raise ValueError(
            f"expected input with {groups * in_per_group} channels in dimension 1, "
            f"got shape {tuple(x.shape)}"
        )
    if is_channel_major(x):
        out = torch.matmul(weight, x.t().reshape(groups, in_per_group, -1)).reshape(groups * out_per_group, -1).t()
    elif x.dim() == 2:
        out = _channel_last_map(x, weight)
    elif x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        batch, _, height, width = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
        out = _channel_last_map(rows, weight).reshape(batch, height, width, -1).permute(0, 3, 1, 2)
    else:
        spatial = x.shape[2:]
        out = torch.matmul(weight, x.reshape(x.shape[0], groups, in_per_group, -1))
        out = out.reshape(x.shape[0], groups * out_per_group, *spatial)
    if bias is not None:
        out = out + bias.view(1, -1, *([1] * (x.dim() - 2)))
    return out


def block_diagonal(weight: Tensor) -> Tensor:
    """The dense ``[out, in]`` matrix of a grouped weight ``[groups, out/groups, in/groups]``."""
    return torch.block_diag(*weight.unbind(0))

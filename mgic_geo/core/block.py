"""The multigrid-in-channels block: Algorithm 1 of the paper, as the authors run it.

::

    down:    for j = 0 .. L-1:  keep x_j;  r_j = R_j(x_j);  x_{j+1} = r_j
    coarse:  y = Block_full(x_L)                                   (groups = 1)
    up:      for j = L-1 .. 0:  z = x_j + N_j(P_j(y - r_j));  y = Block_grouped_j(z)
    return y

No work is done on the way down, the correction reuses the stored ``r_j``, and ``N_j`` is a
BatchNorm (no activation). If every level block is the identity, so is the whole block.

Two things only change how the cycle runs, never what it computes:

* Node features ``[N, C]`` whose level blocks all act on every node on its own (``pointwise``
  modules such as :class:`~mgic_geo.layers.ChannelMixNormAct`) go through the cycle channel-major
  (:func:`~mgic_geo.core.grouped.to_channel_major`): the grouped maps and batch norms then work
  on contiguous per-channel rows instead of block-diagonal super-groups and strided reductions.
  The output comes back in the input's layout.
* ``checkpoint=True`` keeps only the inputs of every level on the way up and recomputes the
  level during backward (:func:`torch.utils.checkpoint.checkpoint`), trading time for memory.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Callable

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as recompute_in_backward

from mgic_geo.core.config import MGICConfig
from mgic_geo.core.grouped import to_channel_major, to_row_major
from mgic_geo.core.norm import ChannelBatchNorm
from mgic_geo.core.transfer import TransferOperator

BlockFactory = Callable[[int, int], nn.Module]


class MGICBlock(nn.Module):
    r"""Replace a channel-preserving ``block`` by its V-cycle over channel widths
    ``c, c/2, ..., s_c``: grouped blocks on the fine levels, one fully coupled block on the
    coarsest, learned grouped 1x1 transfer operators between levels.

    Args:
        channels (int): the width ``c`` of the block's input and output.
        block (callable): ``block(width, groups) -> nn.Module`` builds a level block that maps
            ``width`` channels to ``width`` channels with ``groups`` channel groups
            (``groups == 1`` on the coarsest level).
        mgic (MGICConfig or dict, optional): group size, coarsest width, level rule, transfer and
            correction init (:class:`~mgic_geo.core.config.MGICConfig`; a dict replaces some of
            its defaults). (default: ``MGICConfig()``)
        norm (callable, optional): ``norm(width) -> nn.Module`` builds ``N_j``.
            (default: :class:`~mgic_geo.core.norm.ChannelBatchNorm`)
        group_width (callable, optional): ``group_width(width) -> int``, the width a level block
            of ``width`` channels is grouped on, when its grouped maps act on another width than
            its own (an inverted residual's expanded width). ``s_g`` and ``s_c`` are then measured
            on it: the level count and the group counts follow it (:mod:`mgic_geo.core.plan`); a
            level block gets the ``groups`` of its level as before and must use them on that width.
            (default: ``None``, the level width itself)
        checkpoint (bool): during training, store only each level's inputs on the way up and
            recompute the level (correction and level block) in backward, so one level's
            activations are alive at a time. Batch-norm running statistics are updated once,
            as without it. (default: ``False``)

    Extra positional and keyword arguments of :meth:`forward` (``pos``, ``edge_index``, ...) are
    passed to every level block.

    Shapes:
        - **input:** :math:`(N, C, *)`, channels in dimension 1
        - **output:** :math:`(N, C, *)`
    """

    def __init__(
        self,
        channels: int,
        block: BlockFactory,
        mgic: MGICConfig | dict | None = None,
        *,
        norm: Callable[[int], nn.Module] | None = None,
        group_width: Callable[[int], int] | None = None,
        checkpoint: bool = False,
    ):
        super().__init__()
        if not callable(block):
            raise ValueError(f"`block` must be a callable block(width, groups) -> nn.Module, got {block!r}")
        self.mgic = mgic = MGICConfig.coerce(mgic)
        self.hierarchy = mgic.hierarchy(channels, group_width=group_width)
        self.channels = channels
        norm = norm or ChannelBatchNorm
        widths, groups = self.widths, self.groups

        self.blocks = nn.ModuleList(_build_level_block(block, w, g) for w, g in zip(widths, groups))
        self.restrictions = nn.ModuleList(
            TransferOperator(widths[j], widths[j + 1], groups[j], init=mgic.transfer_init) for j in range(len(widths) - 1)
        )
        self.prolongations = nn.ModuleList(
            TransferOperator(widths[j + 1], widths[j], groups[j], init=mgic.transfer_init)
            for j in range(len(widths) - 1)
        )
        self.norms = nn.ModuleList(norm(widths[j]) for j in range(len(widths) - 1))
        self.checkpoint = checkpoint
        self.init_corrections()

    @property
    def widths(self) -> list[int]:
        """Channel width of every level, finest first."""
        return list(self.hierarchy.widths)

    @property
    def groups(self) -> list[int]:
        """Group count of every level's block and transfer operators, finest first (last is 1)."""
        return list(self.hierarchy.groups)

    @property
    def group_widths(self) -> list[int]:
        """Width each level's groups are counted on, finest first (``widths`` without ``group_width``)."""
        return list(self.hierarchy.group_widths)

    def reset_parameters(self) -> None:
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        self.init_corrections()

    def init_corrections(self) -> None:
        """Zero the scale of every ``N_j`` when the config's ``zero_init_correction`` (model-wide
        init helpers call this after theirs)."""
        if self.mgic.zero_init_correction:
            for norm in self.norms:
                if getattr(norm, "weight", None) is not None:
                    nn.init.zeros_(norm.weight)

    @property
    def pointwise(self) -> bool:
        """Every level block acts on each row (node) on its own, so node features may run channel-major."""
        return all(getattr(block, "pointwise", False) for block in self.blocks)

    def forward(self, x: Tensor, *args, **kwargs) -> Tensor:
        channel_major = x.dim() == 2 and self.pointwise
        if channel_major:
            layout_in, x = x, to_channel_major(x)

        fine, restricted = [], []
        for restrict in self.restrictions:
            fine.append(x)
            x = restrict(x)
            restricted.append(x)

        y = self._run(self._level, len(self.restrictions), x, args, kwargs)  # y = Block_full(x_L)

        for j in reversed(range(len(self.restrictions))):
            # z = x_j + N_j(P_j(y - r_j));  y = Block_grouped_j(z)
            y = self._run(self._up, j, fine[j], y, restricted[j], args, kwargs)

        if channel_major and layout_in.is_contiguous():
            y = to_row_major(y)
        return y

    def _up(self, j: int, x: Tensor, y: Tensor, r: Tensor, args, kwargs) -> Tensor:
        z = x + self.norms[j](self.prolongations[j](y - r))
        return self._level(j, z, args, kwargs)

    def _run(self, step: Callable, j: int, *inputs):
        """``step(j, *inputs)``, recomputed in backward when ``checkpoint`` (training only)."""
        if not (self.checkpoint and self.training and torch.is_grad_enabled()):
            return step(j, *inputs)
        modules = [self.blocks[j]] + ([self.norms[j], self.prolongations[j]] if j < len(self.norms) else [])
        return recompute_in_backward(
            step, j, *inputs, use_reentrant=False, context_fn=lambda: (nullcontext(), _buffers_restored(modules))
        )

    def _level(self, j: int, x: Tensor, args, kwargs) -> Tensor:
        y = self.blocks[j](x, *args, **kwargs)
        if y.shape[1] != x.shape[1]:
            raise ValueError(
                f"`block`({self.widths[j]}, {self.groups[j]}) returned {y.shape[1]} channels from "
                f"{x.shape[1]}; MGICBlock needs a channel-preserving level block"
            )
        return y

    def extra_repr(self) -> str:
        group_widths = f", group_widths={self.group_widths}" if self.group_widths != self.widths else ""
        return (
            f"{self.channels}, group_size={self.mgic.group_size}, coarsest={self.mgic.coarsest}, "
            f"widths={self.widths}, groups={self.groups}{group_widths}"
        )


@contextmanager
def _buffers_restored(modules: list[nn.Module]):
    """Undo what a recomputation does to buffers (batch-norm running statistics and counters)."""
    buffers = [b for m in modules for b in m.buffers()]
    saved = [b.clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in zip(buffers, saved):
                b.copy_(value)


def _build_level_block(block: BlockFactory, width: int, groups: int) -> nn.Module:
    module = block(width, groups)
    if not isinstance(module, nn.Module):
        raise ValueError(f"`block`({width}, {groups}) must return an nn.Module, got {type(module).__name__}")
    for attribute in ("in_channels", "out_channels", "in_features", "out_features"):
        value = getattr(module, attribute, None)
        if isinstance(value, int) and value != width:
            raise ValueError(
                f"`block`({width}, {groups}) built a module with {attribute}={value}; "
                f"MGICBlock needs a channel-preserving level block ({width} -> {width})"
            )
    return module

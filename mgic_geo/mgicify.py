"""Turn the residual blocks of an existing ResNet into MGIC blocks, in place.

:func:`mgicify` replaces every channel-preserving residual block (stride 1, no downsampling
shortcut) of a torchvision ResNet, or of :class:`~mgic_geo.models.resnet.ResNet`, by the same
MGIC block ``mgic_resnet50`` is made of (:func:`~mgic_geo.models.resnet.mgic_residual_block`):
its level blocks are grouped copies of that block type, and for bottlenecks ``group_size`` and
``coarsest`` count bottleneck channels. Blocks that change the width or the resolution are kept.

**Weights.** A grouped convolution can hold only the block-diagonal part of a dense one, so the
finest level of each new block starts from that part of the replaced block's convolutions, and
from its norms whole (scales, shifts and running statistics). The coarser levels, the transfer
operators and the coarse-grid corrections are new (:func:`~mgic_geo.init_weights`). With the
corrections starting at zero (``MGICConfig.zero_init_correction``, the default) the new block then
computes at first what the replaced block would with its off-diagonal weights set to zero. The
report lists, per block, what was kept and what was initialised anew, and a ``UserWarning`` says
how much of the replaced weights survived: fine-tune before use. ``reuse_weights=False``
initialises everything anew.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from mgic_geo.core.block import MGICBlock
from mgic_geo.core.config import MGICConfig
from mgic_geo.core.init import init_weights


@dataclass
class BlockConversion:
    """What :func:`mgicify` did with one block: the parameter and buffer names of the new block
    copied from the replaced one (``kept``: whole; ``block_diagonal``: the block-diagonal part of a
    dense convolution), and how many of the new block's parameters were initialised anew."""

    name: str
    kept: list[str] = field(default_factory=list)
    block_diagonal: list[str] = field(default_factory=list)
    weights_kept: int = 0
    weights_replaced: int = 0
    new_parameters: int = 0

    @property
    def fraction_kept(self) -> float:
        """Share of the replaced block's parameters that live on in the new block."""
        return self.weights_kept / self.weights_replaced if self.weights_replaced else 0.0


@dataclass
class MGICifyReport:
    """What :func:`mgicify` did: the qualified names of the replaced blocks, those kept (they change
    the width or the resolution), the parameter counts before and after, and per replaced block
    which weights were kept (:class:`BlockConversion`)."""

    replaced: list[str]
    kept: list[str] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    conversions: list[BlockConversion] = field(default_factory=list)

    def __str__(self) -> str:
        kept = sum(c.weights_kept for c in self.conversions)
        replaced = sum(c.weights_replaced for c in self.conversions)
        reused = f"; {kept:,} of the replaced blocks' {replaced:,} parameters kept" if replaced else ""
        return (f"replaced {len(self.replaced)} blocks by MGIC blocks (kept {len(self.kept)}): "
                f"{self.params_before / 1e6:.3f} M -> {self.params_after / 1e6:.3f} M params{reused}")


def _block_types() -> dict[type, str]:
    """Known residual block types -> ``"basic"`` / ``"bottleneck"``."""
    from torchvision.models import resnet as tv

    from mgic_geo.models import resnet as ours

    return {tv.BasicBlock: "basic", tv.Bottleneck: "bottleneck", ours.BasicBlock: "basic",
            ours.Bottleneck: "bottleneck"}


def _find_blocks(module: nn.Module, prefix: str, known: dict[type, str], found: list[tuple[str, nn.Module]]) -> None:
    for name, child in module.named_children():
        qualified = f"{prefix}.{name}" if prefix else name
        if type(child) in known:
            found.append((qualified, child))
            continue
        if isinstance(child, MGICBlock):
            continue  # already converted
        if isinstance(child, nn.Sequential) and any(type(c) in known for c in child.children()):
            # a ResNet stage: every block of it must be one we know how to convert (or keep)
            for index, block in child.named_children():
                if type(block) not in known and not isinstance(block, MGICBlock):
                    raise ValueError(f"mgicify: unknown block type {type(block).__name__} at {qualified}.{index}; "
                                     f"it converts {', '.join(sorted({t.__name__ for t in known}))}")
        _find_blocks(child, qualified, known, found)


def _stride(block: nn.Module) -> int:
    return max(max(m.stride) for m in block.modules() if isinstance(m, nn.Conv2d))


def mgicify(model: nn.Module, mgic: MGICConfig | dict, *, reuse_weights: bool = True) -> MGICifyReport:
    """Replace, in place, every channel-preserving residual block of ``model`` by an MGIC block.

    Args:
        model (nn.Module): a torchvision ResNet (``resnet18`` ... ``resnet152``) or a
            :class:`~mgic_geo.models.resnet.ResNet`.
        mgic (MGICConfig or dict): the hierarchy (:class:`~mgic_geo.core.config.MGICConfig`; a dict
            of its fields); ``group_size`` and ``coarsest`` count bottleneck channels for
            bottlenecks, and ``group_size`` must divide the (bottleneck) width of every converted block.
        reuse_weights (bool): start each new block's finest level from the replaced block's weights
            (module docstring) and warn what was kept; ``False`` initialises everything anew.
            (default: ``True``)

    Returns:
        MGICifyReport: replaced and kept block names, parameters before and after, and per block
        what was kept (:class:`BlockConversion`).

    Raises:
        ValueError: nothing to convert, a stage holding a block type it does not know, a grouped
            or widened (ResNeXt, wide ResNet) bottleneck, or a ``group_size`` that does not divide
            a block's width; the message names the module. ``model`` is unchanged then.

    Example::

        >>> import torchvision, warnings
        >>> from mgic_geo import MGICConfig, mgicify
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     report = mgicify(torchvision.models.resnet18(), MGICConfig(group_size=16, coarsest=32))
        >>> report.replaced[:3]
        ['layer1.0', 'layer1.1', 'layer2.1']
        >>> report.conversions[0].block_diagonal
        ['blocks.0.conv1.weight', 'blocks.0.conv2.weight']
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"`model` must be an nn.Module, got {type(model).__name__}")
    mgic = MGICConfig.coerce(mgic)
    from mgic_geo.complexity import count_parameters
    from mgic_geo.models.resnet import BLOCKS, mgic_residual_block

    known = _block_types()
    found: list[tuple[str, nn.Module]] = []
    _find_blocks(model, "", known, found)
    plans, kept = [], []
    for name, block in found:
        kind = known[type(block)]
        width = block.conv1.in_channels
        out = (block.conv3 if kind == "bottleneck" else block.conv2).out_channels
        if block.downsample is not None or _stride(block) != 1 or width != out:
            kept.append(name)
            continue
        if kind == "bottleneck":
            inner = block.conv1.out_channels
            if block.conv2.groups != 1 or block.conv1.groups != 1 or 4 * inner != block.conv3.out_channels:
                raise ValueError(f"mgicify: {name} is a grouped or widened bottleneck ({inner} -> "
                                 f"{block.conv3.out_channels} channels, groups {block.conv2.groups}); "
                                 "only standard bottlenecks (width / 4) are converted")
        inner = width // (4 if kind == "bottleneck" else 1)
        if inner % mgic.group_size:
            raise ValueError(f"mgicify: `group_size` ({mgic.group_size}) does not divide the "
                             f"{'bottleneck ' if kind == 'bottleneck' else ''}width {inner} of {name}")
        plans.append((name, block, kind, width))
    if not plans:
        raise ValueError(f"mgicify: nothing to convert in {type(model).__name__}: no channel-preserving "
                         f"BasicBlock/Bottleneck (stride 1, no downsample) found")

    params_before = count_parameters(model)
    replacements, conversions = [], []
    for name, block, kind, width in plans:
        new = mgic_residual_block(BLOCKS[kind], width, mgic)
        init_weights(new)
        conversion = BlockConversion(name, weights_replaced=count_parameters(block))
        if reuse_weights:
            _start_from(new, block, conversion)
        conversion.new_parameters = count_parameters(new) - conversion.weights_kept
        reference = next(block.parameters(), None)
        if reference is not None:
            new.to(device=reference.device, dtype=reference.dtype)
        new.train(block.training)
        replacements.append((name, new))
        conversions.append(conversion)
    for name, new in replacements:  # every block is built before the model changes
        parent_name, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attribute, new)
    report = MGICifyReport(replaced=[name for name, *_ in plans], kept=kept, params_before=params_before,
                           params_after=count_parameters(model), conversions=conversions)
    if reuse_weights:
        kept_weights = sum(c.weights_kept for c in conversions)
        replaced_weights = sum(c.weights_replaced for c in conversions)
        warnings.warn(
            f"mgicify: {len(plans)} blocks replaced; their finest levels start from the block-diagonal part of the "
            f"dense convolutions and the norms ({kept_weights:,} of {replaced_weights:,} parameters kept, "
            f"{kept_weights / max(replaced_weights, 1):.1%}); coarse levels, transfers and corrections are new "
            f"({sum(c.new_parameters for c in conversions):,} parameters): fine-tune before use "
            f"(report.conversions lists each block)", UserWarning, stacklevel=2)
    return report


def _start_from(new: MGICBlock, old: nn.Module, conversion: BlockConversion) -> None:
    """Copy into the finest level of ``new`` what its grouped block can hold of ``old``: the
    block-diagonal part of every convolution, the norms whole."""
    finest = new.blocks[0]
    with torch.no_grad():
        for child_name, target in finest.named_children():
            source = getattr(old, child_name, None)
            if isinstance(target, nn.Conv2d) and isinstance(source, nn.Conv2d):
                target.weight.copy_(block_diagonal_part(source.weight, target.groups))
                conversion.block_diagonal.append(f"blocks.0.{child_name}.weight")
                conversion.weights_kept += target.weight.numel()
            elif isinstance(target, nn.modules.batchnorm._BatchNorm) and type(source) is type(target):
                for key, value in source.state_dict().items():
                    target.state_dict()[key].copy_(value)
                    conversion.kept.append(f"blocks.0.{child_name}.{key}")
                conversion.weights_kept += sum(p.numel() for p in target.parameters())


def block_diagonal_part(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """The weight of a ``groups``-grouped convolution holding the block-diagonal part of the dense
    convolution ``weight`` (``[out, in, *kernel]`` -> ``[out, in / groups, *kernel]``): output
    channel group ``i`` keeps its weights on input channel group ``i``."""
    out_channels, in_channels, *kernel = weight.shape
    if out_channels % groups or in_channels % groups:
        raise ValueError(f"`groups`={groups} must divide both widths of a {tuple(weight.shape)} convolution weight")
    blocks = weight.reshape(groups, out_channels // groups, groups, in_channels // groups, *kernel)
    index = torch.arange(groups, device=weight.device)
    return blocks[index, :, index].reshape(out_channels, in_channels // groups, *kernel)

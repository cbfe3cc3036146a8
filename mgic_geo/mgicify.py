"""Turn the residual blocks of an existing ResNet into MGIC blocks, in place.

:func:`mgicify` replaces every channel-preserving residual block (stride 1, no downsampling
shortcut) of a torchvision ResNet, or of :class:`~mgic_geo.models.resnet.ResNet`, by an
:class:`~mgic_geo.MGICBlock` whose level blocks are grouped copies of that block type
(:class:`~mgic_geo.models.resnet.BasicBlock` or :class:`~mgic_geo.models.resnet.Bottleneck`,
torchvision's blocks with grouped convolutions). As in ``mgic_resnet50``, the groups of a
bottleneck are computed on its bottleneck width: ``group_size`` and ``coarsest`` count bottleneck
channels. Blocks that change the width or the resolution are kept as they are.

This is an architecture conversion: the new blocks are freshly initialised
(:func:`~mgic_geo.init_weights`), with the device, dtype and training mode of the blocks they
replace; the weights of the replaced blocks are not reused. Norms are ``nn.BatchNorm2d`` and
activations ``nn.ReLU`` (torchvision's defaults).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from mgic_geo.core.block import MGICBlock
from mgic_geo.core.init import init_weights
from mgic_geo.validation import check_int


@dataclass
class MGICifyReport:
    """What :func:`mgicify` did: the qualified names of the replaced blocks, those kept (they change
    the width or the resolution), and the parameter counts before and after."""

    replaced: list[str]
    kept: list[str] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0

    def __str__(self) -> str:
        return (f"replaced {len(self.replaced)} blocks by MGIC blocks (kept {len(self.kept)}): "
                f"{self.params_before / 1e6:.3f} M -> {self.params_after / 1e6:.3f} M params")


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


def mgicify(model: nn.Module, *, group_size: int, coarsest: int, level_rule: str = "paper",
            zero_init_correction: bool = True) -> MGICifyReport:
    """Replace, in place, every channel-preserving residual block of ``model`` by an MGIC block.

    Args:
        model (nn.Module): a torchvision ResNet (``resnet18`` ... ``resnet152``) or a
            :class:`~mgic_geo.models.resnet.ResNet`.
        group_size (int): :math:`s_g`, channels per group (of the bottleneck width for bottlenecks);
            it must divide the (bottleneck) width of every converted block.
        coarsest (int): :math:`s_c` (bottleneck channels for bottlenecks).
        level_rule (str): ``"paper"`` or ``"official"`` (:class:`~mgic_geo.MGICBlock`).
        zero_init_correction (bool): passed to every :class:`~mgic_geo.MGICBlock`; ``True`` (the
            default, as in the ``mgic_resnet*`` builders) starts the coarse-grid corrections at zero.

    Returns:
        MGICifyReport: replaced and kept block names, parameters before and after.

    Raises:
        ValueError: nothing to convert, a stage holding a block type it does not know, a grouped
            or widened (ResNeXt, wide ResNet) bottleneck, or a ``group_size`` that does not divide
            a block's width; the message names the module. ``model`` is unchanged then.

    Example::

        >>> import torchvision
        >>> from mgic_geo.mgicify import mgicify
        >>> report = mgicify(torchvision.models.resnet18(), group_size=16, coarsest=32)
        >>> report.replaced[:3]
        ['layer1.0', 'layer1.1', 'layer2.1']
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"`model` must be an nn.Module, got {type(model).__name__}")
    check_int("group_size", group_size)
    check_int("coarsest", coarsest)
    from mgic_geo.complexity import count_parameters
    from mgic_geo.models.resnet import BasicBlock, Bottleneck

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
        else:
            inner = width
        if inner % group_size:
            raise ValueError(f"mgicify: `group_size` ({group_size}) does not divide the "
                             f"{'bottleneck ' if kind == 'bottleneck' else ''}width {inner} of {name}")
        plans.append((name, block, kind, width))
    if not plans:
        raise ValueError(f"mgicify: nothing to convert in {type(model).__name__}: no channel-preserving "
                         f"BasicBlock/Bottleneck (stride 1, no downsample) found")

    params_before = count_parameters(model)
    replacements = []
    for name, block, kind, width in plans:
        block_type, expansion = (Bottleneck, 4) if kind == "bottleneck" else (BasicBlock, 1)

        def level_block(c: int, groups: int, block_type=block_type) -> nn.Module:
            return block_type(c, c, groups=groups)

        new = MGICBlock(width, level_block, group_size=expansion * group_size, coarsest=expansion * coarsest,
                        norm=nn.BatchNorm2d, level_rule=level_rule, zero_init_correction=zero_init_correction)
        init_weights(new)
        reference = next(block.parameters(), None)
        if reference is not None:
            new.to(device=reference.device, dtype=reference.dtype)
        new.train(block.training)
        replacements.append((name, new))
    for name, new in replacements:  # every block is built before the model changes
        parent_name, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attribute, new)
    return MGICifyReport(replaced=[name for name, *_ in plans], kept=kept, params_before=params_before,
                         params_after=count_parameters(model))

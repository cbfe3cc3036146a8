"""ResNets for images, plain and MGIC: CIFAR ResNet-56 and ImageNet ResNet-50.

Architectures are data (:data:`ARCHITECTURES`): a stem, and stages of ``(width, depth, stride)``
where ``width`` is the stage's output width (``4 x`` the bottleneck width for bottleneck blocks).

Plain networks (torchvision conventions):

* ``resnet56``: 3x3 stem conv 3->16 + BN + ReLU, stages 16/32/64 of 9 basic blocks (stride 2 at the
  first block of stages 2 and 3), global average pool, linear classifier. When a block changes
  shape, its shortcut is a strided 1x1 conv + BN ("option B" of He et al. 2016, torchvision's
  choice; ``mgic-geo table 2`` prints its params and MACs beside the paper's 0.85 M / 125 M).
* ``resnet50``: torchvision's ResNet-50 (v1.5, stride on the 3x3 conv), same parameter count
  (25,557,032 at 1000 classes).

MGIC networks:

* every channel-preserving block becomes an :class:`~mgic_geo.MGICBlock` whose level block is the
  same block type with grouped convolutions: a basic block
  ``ReLU(z + BN(conv3x3_g(ReLU(BN(conv3x3_g(z))))))`` or a bottleneck with all three convs grouped;
* every block that changes the width (or the resolution) becomes a :class:`Transition` (a depthwise
  3x3 conv with channel multiplier ``c_out / c_in`` and the block's stride, + BN + ReLU; O(c)
  parameters, as in the paper and the authors' code) followed by an MGIC block at ``c_out``, so a
  stage keeps its depth of MGIC blocks;
* bottlenecks: the groups are computed on the bottleneck width. The MGIC block runs on the
  bottleneck's outer width ``c = 4 b`` with ``group_size = 4 s_g`` and ``coarsest = 4 s_c``, so
  every level's bottleneck width ``c_j / 4`` has groups of ``s_g`` channels and the coarsest
  bottleneck width is at most ``s_c``; level blocks are whole bottlenecks (grouped 1x1, grouped 3x3,
  grouped 1x1).

With the paper's level rule, a width below ``2 s_c`` gets no coarsening: stage 1 of
``mgic_resnet56`` (width 16, ``s_c = 16``) is the plain stage.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor, nn

from mgic_geo.core.block import MGICBlock
from mgic_geo.core.config import MGICConfig
from mgic_geo.core.init import init_weights
from mgic_geo.models.registry import register_builders
from mgic_geo.validation import check_int

NormLayer = Callable[[int], nn.Module]
ActLayer = Callable[[], nn.Module]


@dataclass(frozen=True)
class Stage:
    """One stage: ``depth`` blocks of output width ``width``; the first has stride ``stride``."""

    width: int
    depth: int
    stride: int


@dataclass(frozen=True)
class Architecture:
    """A ResNet as data: ``block`` is ``"basic"`` or ``"bottleneck"``, ``stem`` is ``"cifar"``
    (3x3 conv) or ``"imagenet"`` (7x7/2 conv + 3x3/2 max pool) with ``stem_width`` channels."""

    block: str
    stem: str
    stem_width: int
    stages: tuple[Stage, ...]


ARCHITECTURES: dict[str, Architecture] = {
    "resnet56": Architecture("basic", "cifar", 16, (Stage(16, 9, 1), Stage(32, 9, 2), Stage(64, 9, 2))),
    "resnet50": Architecture("bottleneck", "imagenet", 64,
                             (Stage(256, 3, 1), Stage(512, 4, 2), Stage(1024, 6, 2), Stage(2048, 3, 2))),
}

EXPANSION = {"basic": 1, "bottleneck": 4}


def _shortcut(in_channels: int, out_channels: int, stride: int, norm_layer: NormLayer) -> nn.Module | None:
    """Option B: a strided 1x1 conv + norm when the shape changes, else ``None`` (identity)."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), norm_layer(out_channels))


class BasicBlock(nn.Module):
    """``act(shortcut(x) + BN(conv3x3_g(act(BN(conv3x3_g(x))))))``, with ``groups`` channel groups in
    both convs (``groups=1``: the standard block)."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, groups: int = 1,
                 norm_layer: NormLayer = nn.BatchNorm2d, act_layer: ActLayer = nn.ReLU):
        super().__init__()
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn1 = norm_layer(out_channels)
        self.act1 = act_layer()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, groups=groups, bias=False)
        self.bn2 = norm_layer(out_channels)
        self.act2 = act_layer()
        self.downsample = _shortcut(in_channels, out_channels, stride, norm_layer)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        return self.act2(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """``act(shortcut(x) + BN(conv1x1_g(act(BN(conv3x3_g(act(BN(conv1x1_g(x)))))))))`` with bottleneck
    width ``out_channels // 4`` and the stride on the 3x3 conv (torchvision's v1.5); ``groups``
    applies to all three convs (``groups=1``: torchvision's block)."""

    expansion = 4

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, groups: int = 1,
                 norm_layer: NormLayer = nn.BatchNorm2d, act_layer: ActLayer = nn.ReLU):
        super().__init__()
        width = out_channels // self.expansion
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.conv1 = nn.Conv2d(in_channels, width, 1, groups=groups, bias=False)
        self.bn1 = norm_layer(width)
        self.act1 = act_layer()
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = norm_layer(width)
        self.act2 = act_layer()
        self.conv3 = nn.Conv2d(width, out_channels, 1, groups=groups, bias=False)
        self.bn3 = norm_layer(out_channels)
        self.act3 = act_layer()
        self.downsample = _shortcut(in_channels, out_channels, stride, norm_layer)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        return self.act3(self.bn3(self.conv3(out)) + identity)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}
BLOCK_NAMES = {block_type: name for name, block_type in BLOCKS.items()}

# The paper's settings for each network (Tables 2 and 3); builders take changes to them.
MGIC_RESNET56 = MGICConfig(group_size=8, coarsest=16)
MGIC_RESNET50 = MGICConfig(group_size=32, coarsest=64)


class Transition(nn.Sequential):
    """The MGIC networks' width/resolution change: a depthwise 3x3 conv with channel multiplier
    ``out_channels / in_channels`` and ``stride``, + norm + activation (``9 c_out`` weights)."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1,
                 norm_layer: NormLayer = nn.BatchNorm2d, act_layer: ActLayer = nn.ReLU):
        if out_channels % in_channels:
            raise ValueError(f"a depthwise transition needs out_channels ({out_channels}) to be a multiple of "
                             f"in_channels ({in_channels})")
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, groups=in_channels, bias=False),
            norm_layer(out_channels),
            act_layer(),
        )
        self.in_channels, self.out_channels = in_channels, out_channels


class ResNet(nn.Module):
    r"""A ResNet described by an :class:`Architecture`, plain or MGIC.

    Args:
        architecture (Architecture): stem and stages (see :data:`ARCHITECTURES`).
        num_classes (int): output classes.
        mgic (MGICConfig or dict, optional): build the MGIC version with these settings
            (:class:`~mgic_geo.core.config.MGICConfig`); for bottleneck blocks ``group_size`` and
            ``coarsest`` count bottleneck channels. ``group_size`` must divide every stage's
            (bottleneck) width that is wider than it (a narrower stage is a single group).
            (default: ``None``, plain)
        zero_init_residual (bool): start the last norm of every residual block with a zero scale
            (torchvision's option). (default: ``False``)
        norm_layer (callable): ``norm_layer(channels)``. (default: :class:`torch.nn.BatchNorm2d`)
        act_layer (callable): ``act_layer()``. (default: :class:`torch.nn.ReLU`)

    Shapes:
        - **input:** :math:`(B, 3, H, W)`
        - **output:** logits :math:`(B, \text{num_classes})`
    """

    def __init__(
        self,
        architecture: Architecture,
        *,
        num_classes: int,
        mgic: MGICConfig | dict | None = None,
        zero_init_residual: bool = False,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: ActLayer = nn.ReLU,
    ):
        super().__init__()
        check_int("num_classes", num_classes)
        if architecture.block not in BLOCKS:
            raise ValueError(f"`architecture.block` must be one of {sorted(BLOCKS)}, got {architecture.block!r}")
        if mgic is not None:
            mgic = MGICConfig.coerce(mgic)
            for stage in architecture.stages:
                check_group_size(mgic, BLOCKS[architecture.block], stage.width, "every stage's")
        self.architecture, self.mgic = architecture, mgic
        block_type = BLOCKS[architecture.block]

        stem_width = architecture.stem_width
        if architecture.stem == "cifar":
            self.stem = nn.Sequential(nn.Conv2d(3, stem_width, 3, padding=1, bias=False), norm_layer(stem_width),
                                      act_layer())
        elif architecture.stem == "imagenet":
            self.stem = nn.Sequential(nn.Conv2d(3, stem_width, 7, stride=2, padding=3, bias=False),
                                      norm_layer(stem_width), act_layer(), nn.MaxPool2d(3, stride=2, padding=1))
        else:
            raise ValueError(f"`architecture.stem` must be 'cifar' or 'imagenet', got {architecture.stem!r}")

        stages, in_channels = [], stem_width
        for stage in architecture.stages:
            blocks: list[nn.Module] = []
            for index in range(stage.depth):
                stride = stage.stride if index == 0 else 1
                if mgic is None:
                    blocks.append(block_type(in_channels, stage.width, stride=stride, norm_layer=norm_layer,
                                             act_layer=act_layer))
                    in_channels = stage.width
                    continue
                if stride != 1 or in_channels != stage.width:
                    blocks.append(Transition(in_channels, stage.width, stride=stride, norm_layer=norm_layer,
                                             act_layer=act_layer))
                    in_channels = stage.width
                blocks.append(mgic_residual_block(block_type, stage.width, mgic, norm_layer=norm_layer,
                                                  act_layer=act_layer))
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)

        init_weights(self)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, BasicBlock):
                    nn.init.zeros_(module.bn2.weight)
                elif isinstance(module, Bottleneck):
                    nn.init.zeros_(module.bn3.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


def check_group_size(mgic: MGICConfig, block_type: type, width: int, where: str) -> None:
    """Refuse an ``s_g`` that does not divide the (bottleneck) width of a ``block_type`` block of
    ``width`` channels, when that width is wider than ``s_g`` (a narrower one is a single group)."""
    expansion = EXPANSION[BLOCK_NAMES[block_type]]
    inner = width // expansion
    if inner % mgic.group_size and inner > mgic.group_size:
        kind = "bottleneck width" if expansion > 1 else "width"
        raise ValueError(f"`group_size` ({mgic.group_size}) must divide {where} {kind}; it does not divide {inner}")


def mgic_residual_block(block_type: type, width: int, mgic: MGICConfig, *, norm_layer: NormLayer = nn.BatchNorm2d,
                        act_layer: ActLayer = nn.ReLU) -> MGICBlock:
    """The MGIC version of a channel-preserving ``block_type`` block (:class:`BasicBlock` or
    :class:`Bottleneck`) of ``width`` channels: level blocks are the same block type, grouped; for
    bottlenecks ``s_g`` and ``s_c`` count bottleneck channels (module docstring)."""
    expansion = EXPANSION[BLOCK_NAMES[block_type]]

    def level_block(channels: int, groups: int) -> nn.Module:
        return block_type(channels, channels, groups=groups, norm_layer=norm_layer, act_layer=act_layer)

    config = mgic.replace(group_size=expansion * mgic.group_size, coarsest=expansion * mgic.coarsest)
    return MGICBlock(width, level_block, config, norm=norm_layer)


# name -> (docstring, classes by default, architecture, default MGIC config or None for the plain network)
BUILDERS = {
    "resnet56": ("CIFAR ResNet-56 with option-B shortcuts (paper: 0.85 M params / 125 M MACs; ``mgic-geo table 2`` "
                 "prints ours beside them).", 10, "resnet56", None),
    "mgic_resnet56": ("MGIC ResNet-56; ``mgic`` defaults to the paper's ``MGICConfig(group_size=8, coarsest=16)`` (a "
                      "dict replaces some of its fields). With the paper's level rule stage 1 (width 16 < 2 s_c) "
                      "stays plain. ``mgic-geo table 2`` prints its params and MACs beside the paper's.",
                      10, "resnet56", MGIC_RESNET56),
    "resnet50": ("ResNet-50 (v1.5), parameter for parameter torchvision's (``mgic-geo table 3``).",
                 1000, "resnet50", None),
    "mgic_resnet50": ("MGIC ResNet-50; ``mgic`` defaults to ``MGICConfig(group_size=32, coarsest=64)``, counted on "
                      "the bottleneck width (the paper's configurations: (32, 64), (64, 64), (16, 64)). "
                      "``mgic-geo table 3`` prints their params and MACs beside the paper's.",
                      1000, "resnet50", MGIC_RESNET50),
}


def _resnet(name: str, **kwargs) -> ResNet:
    return ResNet(ARCHITECTURES[name], **kwargs)


_builders = register_builders(
    {name: (doc, {"num_classes": classes, "zero_init_residual": False, "norm_layer": nn.BatchNorm2d,
                  "act_layer": nn.ReLU}, arch, mgic) for name, (doc, classes, arch, mgic) in BUILDERS.items()},
    _resnet, module=__name__)
resnet56, mgic_resnet56 = _builders["resnet56"], _builders["mgic_resnet56"]
resnet50, mgic_resnet50 = _builders["resnet50"], _builders["mgic_resnet50"]

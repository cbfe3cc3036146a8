"""MobileNetV3 (Large/Small) and its multigrid-in-channels version (paper Sec. 5.2, Table 4).

The plain builders are torchvision's :class:`~torchvision.models.MobileNetV3` built from
torchvision's own architecture tables (``_mobilenet_v3_conf``), so ``mobilenetv3_large()`` has
exactly torchvision's 5,483,032 parameters.

The MGIC builders keep the MobileNetV3 shell of the paper untouched (3x3 stem, the 1x1 last stage
``c -> 6c``, average pool and the two-layer classifier head) and change only the inverted residual
blocks, one of two ways:

* **Channel-preserving blocks** (``stride == 1`` and ``c_in == c_out``, the ones with a residual
  connection) become an :class:`~mgic_geo.core.MGICBlock` over ``c_in`` channels. Its level block
  (:class:`InvertedResidualLevel`, width ``w``, ``g`` groups) is the same inverted residual at width
  ``w``: a grouped 1x1 expand to ``e = w * t`` channels (``t`` the block's expansion ratio,
  :func:`expanded_width`), the depthwise ``k x k`` convolution (with the block's dilation) and the
  squeeze-excitation over *all* expanded channels, a grouped 1x1 project back to ``w``, plus the
  block's residual ``z + F(z)``. On the coarsest level ``g = 1`` (fully coupled). The residual is
  added once, inside the level blocks; the MGIC block is not wrapped in a second skip connection
  (the authors' code adds it twice). With every level block the identity the whole block is the
  identity, as the residual block it replaces would be.
* **Blocks that change width or stride** (the stage transitions) stay plain inverted residuals, with
  their 1x1 expand and project grouped into ``g`` groups (:func:`transition_groups`); no dense
  strided 1x1 transition is added (``transition="dense"`` adds one instead, see below).

**The group rule: s_g and s_c are measured on the expanded width.** An inverted residual's cost is
in its two 1x1 maps, ``2 w e`` weights that touch the expanded width ``e = t w`` (64 ... 960 at
width 1.0), not its input width ``w`` (16 ... 160). So, as ResNet-50's
bottlenecks are grouped on the width their 3x3 convolutions act on, the plan of an MGIC inverted
residual is computed on the expanded width, through the core's ``group_width`` option
(``MGICBlock(..., group_width=e(w))``, :mod:`mgic_geo.core.plan`):

* levels: the paper's rule on the expanded width, ``L = floor(log2(e / s_c))`` (``L = 0``, the plain
  block, when ``e < 2 s_c``); the widths still halve from ``c_in`` and each level's expanded width is
  ``e_j = round(w_j * t)``, so the coarsest, fully coupled level has ``s_c <= e_L < 2 s_c``;
* groups: ``g_j`` is the largest count ``<= e_j / s_g`` dividing ``w_j``, ``w_{j+1}`` and ``e_j``
  (groups of at least ``s_g`` expanded channels; odd widths get fewer groups, never an error);
* transitions: the same count on their expanded width, ``g <= e / s_g`` dividing ``c_in``, ``e``
  and ``c_out``.

At width 1.0 with ``s_g = s_c = 64`` MobileNetV3-Large's blocks get (``widths / expanded / groups``):
``24/72`` and ``40/120``: one full level (``e < 128``); ``80``: ``[80, 40] / [200, 100]`` (or
``[184, 92]``) ``/ [2, 1]``; ``112``: ``[112, 56, 28, 14] / [672, 336, 168, 84] / [8, 4, 2, 1]``;
``160``: ``[160, 80, 40, 20] / [960, 480, 240, 120] / [10, 5, 2, 1]``; transitions
``16->24: 1, 24->40: 1, 40->80: 2, 80->112: 4, 112->160: 8``. The plan of every block is
inspectable (``block.mgic.widths``, ``block.mgic.group_widths``, ``block.mgic.groups``).
``level_rule="official"`` (always coarsen once, stop when the expanded width drops below
``2 s_c``) gives every block at least two levels.

``mgic-geo table 4`` prints the params and MACs of every width beside the paper's Table 4 (224x224,
1000 classes). The paper's MACs at 0.6x are out of reach of this rule: there the stem and the
early, high-resolution blocks whose expanded width is below ``2 s_g = 128`` (so they keep one
group) already cost most of them. The parameter savings are smaller than the MAC savings because
most parameters sit in the untouched head and in the squeeze-excitations, which stay dense on every
level (``e_j -> e_j / 4 -> e_j``): they act on pooled ``1 x 1`` maps, so they add parameters but
almost no MACs.

**Two other readings of the paper** are builder options of the MGIC networks (and of their LR-ASPP
versions), so that their params and MACs can be compared with the default's:

* ``group_width="input"`` (the paper's text: Algorithm 1's ``c_in`` is the block's input feature
  map width): the plan of every MGIC inverted residual is computed on its input width ``w``
  (``MGICBlock`` without ``group_width``: ``L = floor(log2(w / s_c))``, ``g_j <= w_j / s_g``,
  :mod:`mgic_geo.core.plan`), and the transitions' groups are counted on their input width
  (``g <= c_in / s_g`` dividing ``c_in``, ``e`` and ``c_out``). At ``s_g = s_c = 64`` and width 1.0
  only the 160-channel blocks are coarsened (widths ``[160, 80]``); the 112-channel ones stay one
  level (``112 < 128``). A level's expanded width is rounded to a multiple of its groups when they
  do not divide it (:class:`InvertedResidualLevel`).
* ``transition="dense"`` (the authors' released MobileNet code): a width- or stride-changing block
  becomes :class:`DenseTransition`, a dense 1x1 convolution ``c_in -> c_out`` carrying the block's
  stride, with batch norm, followed by the block itself as an :class:`MGICInvertedResidual` at
  ``c_out`` (its expanded width, kernel, squeeze-excitation, activation and dilation kept).

The defaults, ``group_width="expanded"`` and ``transition="grouped"``, are the design described
above. The plain networks take neither option.

Squeeze-excitation is torchvision's ``SqueezeExcitation`` (hard-sigmoid gate) over all expanded
channels of a level with its usual dense maps.

The MGIC transfer operators keep their averaging init: torchvision's model-wide init loop touches
only ``nn.Conv2d``/``nn.Linear``/batch norms, not :class:`~mgic_geo.core.TransferOperator`.
"""
from __future__ import annotations

import copy
import math
from functools import partial
from typing import Callable

from torch import Tensor, nn
from torchvision.models._utils import _make_divisible
from torchvision.models.mobilenetv3 import InvertedResidualConfig, MobileNetV3, _mobilenet_v3_conf
from torchvision.ops.misc import Conv2dNormActivation, SqueezeExcitation

from mgic_geo.core.block import MGICBlock
from mgic_geo.core.config import MGICConfig
from mgic_geo.core.plan import largest_group_count
from mgic_geo.models.registry import register_builders
from mgic_geo.validation import check_choice, check_int

# The paper's setting (Table 4); builders take changes to it.
MGIC_MOBILENETV3 = MGICConfig(group_size=64, coarsest=64)

__all__ = [
    "InvertedResidualLevel",
    "MGICInvertedResidual",
    "GroupedInvertedResidual",
    "DenseTransition",
    "mobilenetv3_large",
    "mobilenetv3_small",
    "mgic_mobilenetv3_large",
    "mgic_mobilenetv3_small",
    "expanded_width",
    "transition_groups",
]

ARCHS = {"large": "mobilenet_v3_large", "small": "mobilenet_v3_small"}

# The builder options of the MGIC networks (module docstring); the first value of each is the default.
GROUP_WIDTHS = ("expanded", "input")
TRANSITIONS = ("grouped", "dense")
# Taken by the MGIC builders only: the plain ones do not accept them.
MGIC_BUILDER_DEFAULTS = {"group_width": GROUP_WIDTHS[0], "transition": TRANSITIONS[0]}


def default_norm_layer(momentum: float = 0.01) -> Callable[..., nn.Module]:
    """torchvision's MobileNetV3 batch norm (``eps=1e-3``, ``momentum=0.01``; ``momentum`` is the
    weight of each batch in the running statistics: 0.01 suits long ImageNet runs, while a run of a
    few hundred steps needs more, e.g. 0.1, for its evaluation-mode statistics to be usable)."""
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 < momentum <= 1:
        raise ValueError(f"`bn_momentum` must be in (0, 1], got {momentum!r}")
    return partial(nn.BatchNorm2d, eps=0.001, momentum=momentum)


def _inverted_residual_layers(
    in_channels: int,
    expanded: int,
    out_channels: int,
    *,
    kernel: int,
    stride: int,
    dilation: int,
    use_se: bool,
    use_hs: bool,
    groups: int,
    norm_layer: Callable[..., nn.Module],
) -> nn.Sequential:
    """expand (grouped 1x1, skipped when ``expanded == in_channels``) -> depthwise k x k -> SE ->
    project (grouped 1x1, no activation), as torchvision's ``InvertedResidual`` with groups."""
    activation = nn.Hardswish if use_hs else nn.ReLU
    layers: list[nn.Module] = []
    if expanded != in_channels:
        layers.append(Conv2dNormActivation(in_channels, expanded, kernel_size=1, groups=groups,
                                           norm_layer=norm_layer, activation_layer=activation))
    layers.append(Conv2dNormActivation(expanded, expanded, kernel_size=kernel, stride=stride, dilation=dilation,
                                       groups=expanded, norm_layer=norm_layer, activation_layer=activation))
    if use_se:
        layers.append(SqueezeExcitation(expanded, _make_divisible(expanded // 4, 8), scale_activation=nn.Hardsigmoid))
    layers.append(Conv2dNormActivation(expanded, out_channels, kernel_size=1, groups=groups,
                                       norm_layer=norm_layer, activation_layer=None))
    return nn.Sequential(*layers)


def expanded_width(width: int, cnf: InvertedResidualConfig) -> int:
    """The expanded width of block ``cnf`` at ``width`` input channels: ``width * e / c`` rounded half
    up (at least 1), ``e``/``c`` the block's expanded/input widths; exactly ``e`` at ``width == c``,
    and ``width`` itself for blocks without an expand layer (``e == c``)."""
    c, e = cnf.input_channels, cnf.expanded_channels
    return max(1, (2 * width * e + c) // (2 * c))


class InvertedResidualLevel(nn.Module):
    r"""One level of an MGIC inverted residual: ``z + F(z)`` with ``F`` = grouped 1x1 expand,
    depthwise ``k x k``, squeeze-excitation over all expanded channels, grouped 1x1 project.

    Args:
        width (int): channels of the level (input and output).
        groups (int): groups of the 1x1 expand and project (1 on the coarsest level).
        cnf (InvertedResidualConfig): the MobileNetV3 block this level reproduces at ``width``:
            kernel, dilation, SE, activation and expansion ratio
            ``cnf.expanded_channels / cnf.input_channels``.
        norm_layer (callable): ``norm_layer(channels) -> nn.Module``.

    The expanded width is :func:`expanded_width` (which the MGIC plan's groups divide); should
    ``groups`` not divide it (a level block built by hand), it is rounded to a multiple of
    ``groups``. With a ratio of 1 there is no expand layer, as in MobileNetV3.

    Shapes:
        - **input:** :math:`(B, C, H, W)`
        - **output:** :math:`(B, C, H, W)`
    """

    def __init__(self, width: int, groups: int, cnf: InvertedResidualConfig, norm_layer: Callable[..., nn.Module]):
        super().__init__()
        self.in_channels = self.out_channels = width
        expanded = expanded_width(width, cnf)
        if expanded % groups:
            expanded = max(groups, (2 * expanded + groups) // (2 * groups) * groups)
        self.expanded_channels = expanded
        self.block = _inverted_residual_layers(
            width, expanded, width, kernel=cnf.kernel, stride=1, dilation=cnf.dilation, use_se=cnf.use_se,
            use_hs=cnf.use_hs, groups=groups, norm_layer=norm_layer,
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class MGICInvertedResidual(nn.Module):
    r"""A channel-preserving MobileNetV3 block (stride 1, ``c_in == c_out``) as an
    :class:`~mgic_geo.core.MGICBlock` whose level blocks are :class:`InvertedResidualLevel`.

    The residual is added once per level, inside the level blocks; there is no outer skip.

    Args:
        cnf (InvertedResidualConfig): the block (stride 1, ``cnf.input_channels == cnf.out_channels``).
        norm_layer (callable): ``norm_layer(channels) -> nn.Module``.
        mgic (MGICConfig): group size, coarsest width and the other MGIC settings.
        group_width (str): ``"expanded"`` (plan computed on the expanded width,
            :func:`expanded_width`) or ``"input"`` (on the block's width itself); see the module
            docstring. (default: ``"expanded"``)

    Shapes:
        - **input:** :math:`(B, C, H, W)`
        - **output:** :math:`(B, C, H, W)`
    """

    def __init__(self, cnf: InvertedResidualConfig, norm_layer: Callable[..., nn.Module], *, mgic: MGICConfig,
                 group_width: str = "expanded"):
        super().__init__()
        check_choice("group_width", group_width, GROUP_WIDTHS)
        if cnf.stride != 1 or cnf.input_channels != cnf.out_channels:
            raise ValueError("MGICInvertedResidual needs a channel-preserving block (stride 1, c_in == c_out)")
        self.in_channels = self.out_channels = cnf.out_channels
        self._is_cn = False  # read by torchvision's LR-ASPP builder (stage ends), as on its InvertedResidual
        self.mgic = MGICBlock(cnf.input_channels, partial(InvertedResidualLevel, cnf=cnf, norm_layer=norm_layer),
                              mgic, norm=norm_layer,
                              group_width=partial(expanded_width, cnf=cnf) if group_width == "expanded" else None)

    def forward(self, x: Tensor) -> Tensor:
        return self.mgic(x)


def transition_groups(in_channels: int, expanded: int, out_channels: int, group_size: int, *,
                      group_width: str = "expanded") -> int:
    """Groups of the 1x1 maps of a width- or stride-changing block, counted on the expanded width as
    in the MGIC levels (:func:`~mgic_geo.core.plan.largest_group_count` of the three widths, at most
    ``expanded // group_size``); with ``group_width="input"`` counted on the input width (at most
    ``in_channels // group_size``)."""
    counted_on = expanded if check_choice("group_width", group_width, GROUP_WIDTHS) == "expanded" else in_channels
    return largest_group_count(counted_on // group_size, in_channels, expanded, out_channels)


class GroupedInvertedResidual(nn.Module):
    r"""A MobileNetV3 stage transition (width or stride change) with grouped 1x1 expand and
    project (:func:`transition_groups`, counted on the width ``group_width`` names); no residual, as
    in MobileNetV3.

    Shapes:
        - **input:** :math:`(B, C_{in}, H, W)`
        - **output:** :math:`(B, C_{out}, H / s, W / s)`
    """

    def __init__(self, cnf: InvertedResidualConfig, norm_layer: Callable[..., nn.Module], *, group_size: int,
                 group_width: str = "expanded"):
        super().__init__()
        self.groups = transition_groups(cnf.input_channels, cnf.expanded_channels, cnf.out_channels, group_size,
                                        group_width=group_width)
        self.in_channels, self.out_channels = cnf.input_channels, cnf.out_channels
        self._is_cn = cnf.stride > 1
        self.block = _inverted_residual_layers(
            cnf.input_channels, cnf.expanded_channels, cnf.out_channels, kernel=cnf.kernel,
            stride=1 if cnf.dilation > 1 else cnf.stride, dilation=cnf.dilation, use_se=cnf.use_se,
            use_hs=cnf.use_hs, groups=self.groups, norm_layer=norm_layer,
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class DenseTransition(nn.Module):
    r"""A MobileNetV3 stage transition as in the authors' released MGIC MobileNet code: a dense
    (``groups=1``) 1x1 convolution ``c_in -> c_out`` with the block's stride (1 when the block is
    dilated, as torchvision's ``InvertedResidual`` does) and batch norm, no activation, followed by
    the block at ``c_out`` as an :class:`MGICInvertedResidual` (stride 1, ``c_out -> c_out``, the
    block's expanded width, kernel, squeeze-excitation, activation and dilation).

    Args:
        cnf (InvertedResidualConfig): the width- or stride-changing block.
        norm_layer (callable): ``norm_layer(channels) -> nn.Module``, for the transition's norm and
            inside the MGIC block.
        mgic (MGICConfig): the MGIC settings of the block that follows the transition.
        group_width (str): the plan rule of that block (:class:`MGICInvertedResidual`).
            (default: ``"expanded"``)

    Shapes:
        - **input:** :math:`(B, C_{in}, H, W)`
        - **output:** :math:`(B, C_{out}, H / s, W / s)`
    """

    def __init__(self, cnf: InvertedResidualConfig, norm_layer: Callable[..., nn.Module], *, mgic: MGICConfig,
                 group_width: str = "expanded"):
        super().__init__()
        self.in_channels, self.out_channels = cnf.input_channels, cnf.out_channels
        self._is_cn = cnf.stride > 1  # read by torchvision's LR-ASPP builder (stage ends)
        self.transition = Conv2dNormActivation(cnf.input_channels, cnf.out_channels, kernel_size=1,
                                               stride=1 if cnf.dilation > 1 else cnf.stride,
                                               norm_layer=norm_layer, activation_layer=None)
        block_cnf = copy.copy(cnf)  # InvertedResidualConfig is a plain class, not a dataclass
        block_cnf.input_channels, block_cnf.stride = cnf.out_channels, 1
        self.block = MGICInvertedResidual(block_cnf, norm_layer, mgic=mgic, group_width=group_width)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(self.transition(x))


def check_width_mult(width_mult) -> float:
    """Return ``width_mult`` as a float if it is a finite positive number, else raise ``ValueError``."""
    if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or not math.isfinite(width_mult) \
            or width_mult <= 0:
        raise ValueError(f"`width_mult` must be a positive finite number, got {width_mult!r}")
    return float(width_mult)


def mobilenetv3_config(arch: str, width_mult: float = 1.0, *, reduced_tail: bool = False, dilated: bool = False):
    """torchvision's ``(inverted_residual_setting, last_channel)`` for ``arch`` in ``{"large", "small"}``,
    after checking ``width_mult``."""
    if arch not in ARCHS:
        raise ValueError(f"`arch` must be one of {sorted(ARCHS)}, got {arch!r}")
    width_mult = check_width_mult(width_mult)
    return _mobilenet_v3_conf(ARCHS[arch], width_mult=width_mult, reduced_tail=reduced_tail, dilated=dilated)


def mgic_block_factory(mgic: MGICConfig | dict, *, group_width: str = "expanded", transition: str = "grouped"):
    """A ``block(cnf, norm_layer)`` for :class:`~torchvision.models.MobileNetV3`: channel-preserving
    blocks become :class:`MGICInvertedResidual`, the others :class:`GroupedInvertedResidual`
    (``transition="grouped"``) or :class:`DenseTransition` (``transition="dense"``); ``group_width``
    as in :func:`build_mobilenetv3`."""
    mgic = MGICConfig.coerce(mgic, default=MGIC_MOBILENETV3)
    check_choice("group_width", group_width, GROUP_WIDTHS)
    check_choice("transition", transition, TRANSITIONS)

    def block(cnf: InvertedResidualConfig, norm_layer: Callable[..., nn.Module]) -> nn.Module:
        if cnf.stride == 1 and cnf.input_channels == cnf.out_channels:
            return MGICInvertedResidual(cnf, norm_layer, mgic=mgic, group_width=group_width)
        if transition == "dense":
            return DenseTransition(cnf, norm_layer, mgic=mgic, group_width=group_width)
        return GroupedInvertedResidual(cnf, norm_layer, group_size=mgic.group_size, group_width=group_width)

    return block


def build_mobilenetv3(arch: str, *, num_classes: int = 1000, width_mult: float = 1.0,
                      norm_layer: Callable[..., nn.Module] | None = None, dropout: float = 0.2,
                      mgic: MGICConfig | dict | None = None, reduced_tail: bool = False, dilated: bool = False,
                      bn_momentum: float = 0.01, group_width: str = "expanded",
                      transition: str = "grouped") -> MobileNetV3:
    """Build torchvision's :class:`~torchvision.models.MobileNetV3`, plain or MGIC.

    Args:
        arch (str): ``"large"`` or ``"small"``.
        num_classes (int): output classes. (default: ``1000``)
        width_mult (float): torchvision's width multiplier. (default: ``1.0``)
        norm_layer (callable, optional): ``norm_layer(channels) -> nn.Module``.
            (default: :func:`default_norm_layer` with ``bn_momentum``)
        dropout (float): dropout before the last linear layer. (default: ``0.2``)
        mgic (MGICConfig or dict, optional): build the MGIC network with these settings (a dict
            of changes to ``MGIC_MOBILENETV3``); ``None`` builds torchvision's plain network.
            (default: ``None``)
        reduced_tail (bool): halve the last stage (torchvision's option). (default: ``False``)
        dilated (bool): dilate the last stage (torchvision's option). (default: ``False``)
        bn_momentum (float): momentum of the default batch norm. (default: ``0.01``)
        group_width (str): MGIC only. The width the plans and transition groups are counted on:
            ``"expanded"`` (each block's expanded width) or ``"input"`` (its input width, the
            paper's text); see the module docstring. (default: ``"expanded"``)
        transition (str): MGIC only. Width- and stride-changing blocks as ``"grouped"`` inverted
            residuals (:class:`GroupedInvertedResidual`) or ``"dense"`` 1x1 transitions followed
            by an MGIC block (:class:`DenseTransition`, the authors' released code).
            (default: ``"grouped"``)
    """
    check_int("num_classes", num_classes)
    check_choice("group_width", group_width, GROUP_WIDTHS)
    check_choice("transition", transition, TRANSITIONS)
    if mgic is None and (group_width, transition) != (GROUP_WIDTHS[0], TRANSITIONS[0]):
        raise ValueError(f"`group_width` and `transition` apply to the MGIC networks only (give `mgic`), got "
                         f"group_width={group_width!r}, transition={transition!r} for the plain network")
    setting, last_channel = mobilenetv3_config(arch, width_mult, reduced_tail=reduced_tail, dilated=dilated)
    block = mgic_block_factory(mgic, group_width=group_width, transition=transition) if mgic is not None else None
    model = MobileNetV3(setting, last_channel, num_classes=num_classes, block=block,
                        norm_layer=norm_layer or default_norm_layer(bn_momentum), dropout=dropout)
    for module in model.modules():  # torchvision's init loop reset BN scales; re-apply MGIC's own
        if isinstance(module, MGICBlock):
            module.init_corrections()
    return model


# The Args of the MGIC builders' docstrings for their two options (the rest: build_mobilenetv3).
# Appended to the MGIC builders' docstrings ({build}: the function that takes the other arguments).
MGIC_OPTIONS_DOC = """

Args:
    group_width (str): ``"expanded"`` (plans and transition groups counted on each block's expanded
        width) or ``"input"`` (on its input width, the paper's text). (default: ``"expanded"``)
    transition (str): ``"grouped"`` (grouped inverted residual transitions) or ``"dense"`` (dense 1x1
        transition + MGIC block, the authors' released code). (default: ``"grouped"``)

The other arguments are :func:`~{build}`'s."""


def register_mobilenet_builders(table: dict[str, tuple], defaults: dict, build: Callable[..., nn.Module], *,
                                module: str) -> dict[str, Callable]:
    """:func:`~mgic_geo.models.registry.register_builders` for rows ``name -> (docstring, arch,
    default MGIC config or None)`` of MobileNetV3-based networks: the MGIC rows also take (and
    document) ``group_width`` and ``transition``, the plain rows do not."""
    options_doc = MGIC_OPTIONS_DOC.format(build=f"{build.__module__}.{build.__name__}")
    return register_builders(
        {name: (doc, defaults, arch, None) if mgic is None else
         (doc + options_doc, defaults | MGIC_BUILDER_DEFAULTS, arch, mgic)
         for name, (doc, arch, mgic) in table.items()},
        build, module=module)


# name -> (docstring, architecture, default MGIC config or None for the plain network)
BUILDERS = {
    "mobilenetv3_large": ("MobileNetV3-Large (torchvision's, no weights): 5,483,032 parameters at 1000 classes.",
                          "large", None),
    "mobilenetv3_small": ("MobileNetV3-Small (torchvision's, no weights).", "small", None),
    "mgic_mobilenetv3_large": ("MGIC-MobileNetV3-Large (paper Table 4: width 0.6 / 1.0 / 1.2, ``s_g = s_c = 64``; "
                               "``mgic`` changes them).", "large", MGIC_MOBILENETV3),
    "mgic_mobilenetv3_small": ("MGIC-MobileNetV3-Small (``s_g = s_c = 64`` by default; ``mgic`` changes them).",
                               "small", MGIC_MOBILENETV3),
}
BUILDER_DEFAULTS = {"num_classes": 1000, "width_mult": 1.0, "norm_layer": None, "dropout": 0.2, "bn_momentum": 0.01}

_builders = register_mobilenet_builders(BUILDERS, BUILDER_DEFAULTS, build_mobilenetv3, module=__name__)
mobilenetv3_large, mobilenetv3_small = _builders["mobilenetv3_large"], _builders["mobilenetv3_small"]
mgic_mobilenetv3_large, mgic_mobilenetv3_small = _builders["mgic_mobilenetv3_large"], _builders["mgic_mobilenetv3_small"]

"""One typed description of a multigrid-in-channels hierarchy, taken by every entry point.

:class:`MGICConfig` holds what the paper's Algorithm 1 leaves to the user: the group size
:math:`s_g`, the coarsest width :math:`s_c`, the level rule (:mod:`mgic_geo.core.plan`), how the
transfer operators start (:class:`~mgic_geo.core.transfer.TransferOperator`) and how the
coarse-grid corrections start. It is validated once, when it is made, so the layers and models
that take it never check the same values again.

:class:`~mgic_geo.MGICBlock`, :class:`~mgic_geo.nn.MGICConv`, the model builders
(``mgic_resnet56``, ``mgic_diffgcn``, ``mgic_mobilenetv3_large``, ...) and :func:`~mgic_geo.mgicify`
take it as ``mgic=``. A mapping (what a YAML config holds) works too: its keys replace the
defaults of the entry point, which differ by model as the paper's tables do (ResNet-56 ``s_g = 8,
s_c = 16``; ResNet-50 ``32, 64``; MobileNetV3 ``64, 64``)::

    model:
      init_args:
        model: mgic_resnet56
        model_kwargs:
          mgic: {group_size: 16, coarsest: 32}
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from mgic_geo.core.plan import LEVEL_RULES, ChannelHierarchy
from mgic_geo.core.transfer import TRANSFER_INITS
from mgic_geo.validation import check_int


@dataclass(frozen=True)
class MGICConfig:
    r"""The settings of an MGIC channel hierarchy.

    Args:
        group_size (int): :math:`s_g`, channels per group on the fine levels. (default: ``8``)
        coarsest (int): :math:`s_c`, the coarsest width: the levels halve the width while it stays
            at or above ``coarsest`` (``"paper"``; see :mod:`mgic_geo.core.plan`), so the coarsest
            level is ``coarsest`` wide when the finest is ``coarsest`` times a power of two.
            (default: ``16``)
        level_rule (str): ``"paper"`` (Algorithm 1's level count), ``"official"`` (the authors'
            released code) or ``"at_most"`` (the paper's Sec. 4.1: coarsest width at most
            ``coarsest``); see :mod:`mgic_geo.core.plan`.
            (default: ``"paper"``)
        transfer_init (str): ``"average"`` (the paper's: positive rows summing to 1) or
            ``"kaiming"`` (what the authors' released models ended up with).
            (default: ``"average"``)
        zero_init_correction (bool): start the scale of every coarse-grid correction norm
            :math:`N_j` at zero, so each block starts as its finest level alone and the corrections
            open during training, as zero-initialised last norms of residual blocks do. The paper
            leaves this open and the authors' code uses the norm's default scale 1;
            ``docs/results.md`` shows the two compared on the real training splits.
            (default: ``True``)

    Example::

        >>> from mgic_geo.core import MGICConfig
        >>> config = MGICConfig(group_size=16, coarsest=32)
        >>> config.hierarchy(256).widths
        (256, 128, 64, 32)
        >>> MGICConfig.coerce({"coarsest": 64}, default=config)
        MGICConfig(group_size=16, coarsest=64, level_rule='paper', transfer_init='average', zero_init_correction=True)
    """

    group_size: int = 8
    coarsest: int = 16
    level_rule: str = "paper"
    transfer_init: str = "average"
    zero_init_correction: bool = True

    def __post_init__(self):
        check_int("group_size", self.group_size)
        check_int("coarsest", self.coarsest)
        if self.level_rule not in LEVEL_RULES:
            raise ValueError(f"`level_rule` must be one of {LEVEL_RULES}, got {self.level_rule!r}")
        if self.transfer_init not in TRANSFER_INITS:
            raise ValueError(f"`transfer_init` must be one of {TRANSFER_INITS}, got {self.transfer_init!r}")
        if not isinstance(self.zero_init_correction, bool):
            raise ValueError(f"`zero_init_correction` must be True or False, got {self.zero_init_correction!r}")

    @classmethod
    def coerce(cls, value: "MGICConfig | Mapping | None", *, default: "MGICConfig | None" = None,
               name: str = "mgic") -> "MGICConfig":
        """``value`` as a config: a config as it is, ``None`` as ``default`` (or the class defaults),
        a mapping as ``default`` with the mapping's fields replaced. Anything else, or a mapping
        with a key that is not a field, raises ``ValueError`` naming ``name``."""
        base = default if default is not None else cls()
        if value is None:
            return base
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            return base.replace(name=name, **value)
        raise ValueError(f"`{name}` must be an MGICConfig or a mapping of its fields, got {value!r}")

    def replace(self, *, name: str = "mgic", **changes) -> "MGICConfig":
        """A copy with ``changes`` applied (validated like a new config)."""
        fields = [field.name for field in dataclasses.fields(self)]
        unknown = sorted(str(key) for key in changes if key not in fields)
        if unknown:
            raise ValueError(f"`{name}` has unknown field(s) {', '.join(unknown)}; MGICConfig fields are "
                             f"{', '.join(fields)}")
        return dataclasses.replace(self, **changes)

    def hierarchy(self, channels: int, *, group_width=None) -> ChannelHierarchy:
        """The level plan of a block of ``channels`` channels (:class:`~mgic_geo.core.plan.ChannelHierarchy`)."""
        return ChannelHierarchy.build(channels, group_size=self.group_size, coarsest=self.coarsest,
                                      level_rule=self.level_rule, group_width=group_width)

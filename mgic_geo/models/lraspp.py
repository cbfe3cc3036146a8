"""LR-ASPP segmentation on (MGIC-)MobileNetV3 backbones (paper Sec. 5.3, Table 5).

As in the MobileNetV3 paper and the MGIC paper: the backbone's last stage is dilated (output stride
16) and its last block halved ("reduced tail", torchvision's ``_mobilenet_v3_conf(...,
reduced_tail=True, dilated=True)``), and the head is torchvision's LR-ASPP with 128 inter channels
on the stride-8 ("low") and last ("high") features. The network is torchvision's
:class:`~torchvision.models.segmentation.LRASPP`, built by torchvision's own
``_lraspp_mobilenetv3``, with randomly initialised weights (nothing is downloaded). It follows
torchvision's output convention: ``model(x)`` returns ``{"out": logits}``, logits of shape
``[B, num_classes, H, W]`` at the input resolution.

The MGIC backbones are those of :mod:`mgic_geo.models.mobilenetv3` (MGIC inside the inverted
residual blocks only, plans computed on the expanded widths); the head is the same as for the plain
backbones. ``mgic-geo table 5`` prints their params and MACs at 1024x2048 with 19 classes
(Cityscapes) beside the paper's Table 5. The reduced tail's blocks (80 channels, 480 expanded) get
widths ``[80, 40, 20]`` and groups ``[5, 2, 1]`` in the Large backbone. The MGIC builders take the
MGIC backbones' two options, ``group_width`` and ``transition`` (the readings of the paper described
in :mod:`mgic_geo.models.mobilenetv3`); the plain ones do not.
"""
from __future__ import annotations

from typing import Callable

from torch import nn
from torchvision.models.segmentation.lraspp import LRASPP, _lraspp_mobilenetv3

from mgic_geo.core.config import MGICConfig  # noqa: F401  (build_lraspp's annotation)
from mgic_geo.models.mobilenetv3 import (
    GROUP_WIDTHS,
    MGIC_MOBILENETV3,
    TRANSITIONS,
    build_mobilenetv3,
    register_mobilenet_builders,
)
from mgic_geo.validation import check_int

__all__ = [
    "lraspp_mobilenetv3_large",
    "lraspp_mobilenetv3_small",
    "lraspp_mgic_mobilenetv3_large",
    "lraspp_mgic_mobilenetv3_small",
]


def build_lraspp(arch: str, *, num_classes: int = 21, width_mult: float = 1.0,
                 norm_layer: Callable[..., nn.Module] | None = None, mgic: MGICConfig | dict | None = None,
                 bn_momentum: float = 0.01, group_width: str = GROUP_WIDTHS[0],
                 transition: str = TRANSITIONS[0]) -> LRASPP:
    """LR-ASPP (128 inter channels) on a dilated, reduced-tail (MGIC-)MobileNetV3 ``arch``.

    Args:
        arch (str): ``"large"`` or ``"small"``.
        num_classes (int): output classes. (default: ``21``)
        width_mult (float): torchvision's width multiplier of the backbone. (default: ``1.0``)
        norm_layer (callable, optional): ``norm_layer(channels) -> nn.Module`` of the backbone.
            (default: MobileNetV3's batch norm with ``bn_momentum``)
        mgic (MGICConfig or dict, optional): MGIC backbone with these settings; ``None`` for the
            plain backbone. (default: ``None``)
        bn_momentum (float): momentum of the backbone's default batch norm. (default: ``0.01``)
        group_width (str): MGIC only; ``"expanded"`` or ``"input"``, the width the backbone's plans
            and transition groups are counted on
            (:func:`~mgic_geo.models.mobilenetv3.build_mobilenetv3`). (default: ``"expanded"``)
        transition (str): MGIC only; ``"grouped"`` or ``"dense"``, the backbone's width- and
            stride-changing blocks (:func:`~mgic_geo.models.mobilenetv3.build_mobilenetv3`).
            (default: ``"grouped"``)
    """
    check_int("num_classes", num_classes)
    backbone = build_mobilenetv3(arch, width_mult=width_mult, norm_layer=norm_layer, mgic=mgic,
                                 reduced_tail=True, dilated=True, bn_momentum=bn_momentum,
                                 group_width=group_width, transition=transition)
    return _lraspp_mobilenetv3(backbone, num_classes)


# name -> (docstring, backbone architecture, default MGIC config or None for the plain backbone)
BUILDERS = {
    "lraspp_mobilenetv3_large": ("LR-ASPP on MobileNetV3-Large (torchvision's ``lraspp_mobilenet_v3_large`` without "
                                 "weights).", "large", None),
    "lraspp_mobilenetv3_small": ("LR-ASPP on MobileNetV3-Small.", "small", None),
    "lraspp_mgic_mobilenetv3_large": ("LR-ASPP on MGIC-MobileNetV3-Large (paper Table 5, \"MGIC-Large\").", "large",
                                      MGIC_MOBILENETV3),
    "lraspp_mgic_mobilenetv3_small": ("LR-ASPP on MGIC-MobileNetV3-Small (paper Table 5, \"MGIC-Small\").", "small",
                                      MGIC_MOBILENETV3),
}
BUILDER_DEFAULTS = {"num_classes": 21, "width_mult": 1.0, "norm_layer": None, "bn_momentum": 0.01}

_builders = register_mobilenet_builders(BUILDERS, BUILDER_DEFAULTS, build_lraspp, module=__name__)
lraspp_mobilenetv3_large, lraspp_mobilenetv3_small = _builders["lraspp_mobilenetv3_large"], _builders["lraspp_mobilenetv3_small"]
lraspp_mgic_mobilenetv3_large = _builders["lraspp_mgic_mobilenetv3_large"]
lraspp_mgic_mobilenetv3_small = _builders["lraspp_mgic_mobilenetv3_small"]

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
backbones. Measured with :func:`mgic_geo.complexity.profile` at 1024x2048 with 19 classes
(Cityscapes; the paper's Table 5 in brackets): Large 1.747 M params / 9.915 G MACs plain,
1.524 M / 6.634 G MGIC (1.67 M / 9.62 G); Small 0.516 M / 2.832 G plain, 0.527 M / 2.489 G MGIC
(0.48 M / 2.73 G). The reduced tail's blocks (80 channels, 480 expanded) get widths ``[80, 40, 20]``
and groups ``[5, 2, 1]`` in the Large backbone.
"""
from __future__ import annotations

from typing import Callable

from torch import nn
from torchvision.models.segmentation.lraspp import LRASPP, _lraspp_mobilenetv3

from mgic_geo.models.mobilenetv3 import build_mobilenetv3
from mgic_geo.models.registry import register_model
from mgic_geo.validation import check_int

__all__ = [
    "lraspp_mobilenetv3_large",
    "lraspp_mobilenetv3_small",
    "lraspp_mgic_mobilenetv3_large",
    "lraspp_mgic_mobilenetv3_small",
]


def build_lraspp(arch: str, *, num_classes: int = 21, width_mult: float = 1.0,
                 norm_layer: Callable[..., nn.Module] | None = None, mgic: dict | None = None,
                 bn_momentum: float = 0.01) -> LRASPP:
    """LR-ASPP (128 inter channels) on a dilated, reduced-tail (MGIC-)MobileNetV3 ``arch``."""
    check_int("num_classes", num_classes)
    backbone = build_mobilenetv3(arch, width_mult=width_mult, norm_layer=norm_layer, mgic=mgic,
                                 reduced_tail=True, dilated=True, bn_momentum=bn_momentum)
    return _lraspp_mobilenetv3(backbone, num_classes)


@register_model
def lraspp_mobilenetv3_large(*, num_classes: int = 21, width_mult: float = 1.0,
                             norm_layer: Callable[..., nn.Module] | None = None,
                             bn_momentum: float = 0.01) -> LRASPP:
    """LR-ASPP on MobileNetV3-Large (torchvision's ``lraspp_mobilenet_v3_large`` without weights)."""
    return build_lraspp("large", num_classes=num_classes, width_mult=width_mult, norm_layer=norm_layer,
                        bn_momentum=bn_momentum)


@register_model
def lraspp_mobilenetv3_small(*, num_classes: int = 21, width_mult: float = 1.0,
                             norm_layer: Callable[..., nn.Module] | None = None,
                             bn_momentum: float = 0.01) -> LRASPP:
    """LR-ASPP on MobileNetV3-Small."""
    return build_lraspp("small", num_classes=num_classes, width_mult=width_mult, norm_layer=norm_layer,
                        bn_momentum=bn_momentum)


@register_model
def lraspp_mgic_mobilenetv3_large(*, num_classes: int = 21, width_mult: float = 1.0, group_size: int = 64,
                                  coarsest: int = 64, level_rule: str = "paper",
                                  norm_layer: Callable[..., nn.Module] | None = None,
                             bn_momentum: float = 0.01) -> LRASPP:
    """LR-ASPP on MGIC-MobileNetV3-Large (paper Table 5, "MGIC-Large")."""
    return build_lraspp("large", num_classes=num_classes, width_mult=width_mult, norm_layer=norm_layer,
                        bn_momentum=bn_momentum, mgic={"group_size": group_size, "coarsest": coarsest, "level_rule": level_rule})


@register_model
def lraspp_mgic_mobilenetv3_small(*, num_classes: int = 21, width_mult: float = 1.0, group_size: int = 64,
                                  coarsest: int = 64, level_rule: str = "paper",
                                  norm_layer: Callable[..., nn.Module] | None = None,
                             bn_momentum: float = 0.01) -> LRASPP:
    """LR-ASPP on MGIC-MobileNetV3-Small (paper Table 5, "MGIC-Small")."""
    return build_lraspp("small", num_classes=num_classes, width_mult=width_mult, norm_layer=norm_layer,
                        bn_momentum=bn_momentum, mgic={"group_size": group_size, "coarsest": coarsest, "level_rule": level_rule})

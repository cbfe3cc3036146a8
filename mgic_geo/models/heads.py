"""Pieces shared by the point-cloud networks: argument checks, point-wise channel maps, the classifier head."""
from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

from torch import nn

from mgic_geo.core.config import MGICConfig
from mgic_geo.core.plan import largest_group_count
from mgic_geo.core.transfer import GroupedChannelMap
from mgic_geo.validation import check_int


# The paper's setting for the point-cloud networks (Table 6); builders take changes to it.
MGIC_POINT_CLOUD = MGICConfig(group_size=8, coarsest=16)


def check_network_args(*, num_classes: int, k: int, num_points: int | None) -> None:
    """The arguments every point-cloud network takes, checked the same way."""
    check_int("num_classes", num_classes)
    check_int("k", k)
    if num_points is not None:
        check_int("num_points", num_points)


def widening_groups(in_channels: int, out_channels: int, group_size: int) -> int:
    """Groups of ``group_size`` input channels for a widening map between MGIC stages
    (:func:`~mgic_geo.core.plan.largest_group_count` of both widths, at most ``in // group_size``)."""
    return largest_group_count(in_channels // group_size, in_channels, out_channels)


NormLayer = Callable[[int], nn.Module]
ActLayer = Callable[[], nn.Module]
LEAKY_RELU = partial(nn.LeakyReLU, 0.2)  # DGCNN's activation


def check_layer_args(*, norm_layer: NormLayer | None, act_layer: ActLayer | None) -> None:
    """``norm_layer`` / ``act_layer`` of a network: a callable or ``None``."""
    for name, value in (("norm_layer", norm_layer), ("act_layer", act_layer)):
        if value is not None and not callable(value):
            raise ValueError(f"`{name}` must be a callable or None, got {value!r}")


def pointwise(in_channels: int, out_channels: int, *, groups: int = 1, norm_layer: NormLayer | None = None,
              act_layer: ActLayer | None = None) -> nn.Sequential:
    """A bias-free (grouped) 1x1 map of node features, ``norm_layer(out_channels)`` and ``act_layer()``
    (default: BatchNorm1d and ReLU)."""
    return nn.Sequential(
        GroupedChannelMap(in_channels, out_channels, groups),
        (norm_layer or nn.BatchNorm1d)(out_channels),
        (act_layer or nn.ReLU)(),
    )


def classifier(in_features: int, hidden: Sequence[int], num_classes: int, *, dropout: float,
               norm_layer: NormLayer | None = None, act_layer: ActLayer | None = None) -> nn.Sequential:
    """DGCNN's head: (Linear without bias, norm, activation, Dropout) per hidden width, then a Linear
    (default norm and activation: BatchNorm1d and LeakyReLU(0.2))."""
    norm_layer, act_layer = norm_layer or nn.BatchNorm1d, act_layer or LEAKY_RELU
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width, bias=False), norm_layer(width), act_layer(), nn.Dropout(dropout)]
        in_features = width
    layers.append(nn.Linear(in_features, num_classes))
    return nn.Sequential(*layers)

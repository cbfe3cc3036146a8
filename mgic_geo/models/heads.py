"""Pieces shared by the point-cloud networks: argument checks, point-wise channel maps, the classifier head."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from mgic_geo.core.transfer import GroupedChannelMap
from mgic_geo.validation import check_int


def check_network_args(*, num_classes: int, k: int, num_points: int | None,
                       group_size: int | None = None, coarsest: int | None = None) -> None:
    """The arguments every point-cloud network takes, checked the same way."""
    check_int("num_classes", num_classes)
    check_int("k", k)
    if num_points is not None:
        check_int("num_points", num_points)
    if (group_size is None) != (coarsest is None):
        raise ValueError("`group_size` and `coarsest` go together: give both (MGIC) or neither")


def widening_groups(in_channels: int, out_channels: int, group_size: int) -> int:
    """Groups of ``group_size`` input channels for a widening map, as many as divide both widths."""
    groups = max(1, in_channels // group_size)
    while in_channels % groups or out_channels % groups:
        groups -= 1
    return groups


def pointwise(in_channels: int, out_channels: int, *, groups: int = 1, act: nn.Module | None = None) -> nn.Sequential:
    """A bias-free (grouped) 1x1 map of node features, BatchNorm and an activation."""
    return nn.Sequential(
        GroupedChannelMap(in_channels, out_channels, groups),
        nn.BatchNorm1d(out_channels),
        act if act is not None else nn.ReLU(),
    )


def classifier(in_features: int, hidden: Sequence[int], num_classes: int, *, dropout: float) -> nn.Sequential:
    """DGCNN's head: (Linear without bias, BN, LeakyReLU(0.2), Dropout) per hidden width, then a Linear."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width, bias=False), nn.BatchNorm1d(width), nn.LeakyReLU(0.2), nn.Dropout(dropout)]
        in_features = width
    layers.append(nn.Linear(in_features, num_classes))
    return nn.Sequential(*layers)

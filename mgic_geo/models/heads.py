"""Pieces shared by the point-cloud networks: point-wise channel maps and the classifier head."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from mgic_geo.core.transfer import GroupedChannelMap


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

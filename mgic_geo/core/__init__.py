"""The channel hierarchy shared by the graph and image sides of the package."""
from mgic_geo.core.block import MGICBlock
from mgic_geo.core.grouped import grouped_channel_map
from mgic_geo.core.init import init_weights
from mgic_geo.core.norm import ChannelBatchNorm
from mgic_geo.core.plan import ChannelHierarchy, level_groups, level_widths
from mgic_geo.core.transfer import GroupedChannelMap, TransferOperator

__all__ = [
    "MGICBlock",
    "ChannelHierarchy",
    "ChannelBatchNorm",
    "GroupedChannelMap",
    "TransferOperator",
    "grouped_channel_map",
    "init_weights",
    "level_groups",
    "level_widths",
]

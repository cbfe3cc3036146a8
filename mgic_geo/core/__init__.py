"""The channel hierarchy shared by the graph and image sides of the package."""
from mgic_geo.core.block import MGICBlock
from mgic_geo.core.config import MGICConfig
from mgic_geo.core.grouped import grouped_channel_map
from mgic_geo.core.init import init_weights
from mgic_geo.core.norm import ChannelBatchNorm
from mgic_geo.core.plan import ChannelHierarchy, largest_group_count, level_groups, level_widths
from mgic_geo.core.transfer import GroupedChannelMap, TransferOperator

__all__ = [
    "MGICBlock",
    "MGICConfig",
    "ChannelHierarchy",
    "ChannelBatchNorm",
    "GroupedChannelMap",
    "TransferOperator",
    "grouped_channel_map",
    "init_weights",
    "largest_group_count",
    "level_groups",
    "level_widths",
]

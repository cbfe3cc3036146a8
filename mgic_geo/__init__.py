"""mgic_geo: Multigrid-in-Channels for PyTorch Geometric point-cloud networks and image CNNs."""
from mgic_geo.core import ChannelHierarchy, MGICBlock, MGICConfig, init_weights
from mgic_geo.mgicify import BlockConversion, MGICifyReport, mgicify

__version__ = "0.1.0"
__all__ = ["MGICBlock", "MGICConfig", "ChannelHierarchy", "BlockConversion", "MGICifyReport", "init_weights", "mgicify", "__version__"]

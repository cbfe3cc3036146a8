"""Graph layers and utilities in PyG conventions."""
from mgic_geo.nn.diffgcn import DiffGCNConv
from mgic_geo.nn.edgeconv import EdgeConv
from mgic_geo.nn.knn import knn_graph

__all__ = ["DiffGCNConv", "EdgeConv", "knn_graph"]

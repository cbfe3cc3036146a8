"""Graph layers and utilities in PyG conventions."""
from mgic_geo.nn.diffgcn import DiffGCNConv
from mgic_geo.nn.edgeconv import EdgeConv
from mgic_geo.nn.graph_operator import DiffGCNOperator
from mgic_geo.nn.knn import knn_graph
from mgic_geo.nn.mgic_conv import DiffGCNNormAct, DynamicEdgeConv, DynamicMGICConv, MGICConv

__all__ = ["DiffGCNConv", "DiffGCNNormAct", "DiffGCNOperator", "DynamicEdgeConv", "DynamicMGICConv", "EdgeConv", "MGICConv", "knn_graph"]

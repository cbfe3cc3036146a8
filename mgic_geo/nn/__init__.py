"""Graph layers and utilities in PyG conventions."""
from mgic_geo.nn.diffgcn import DiffGCNConv
from mgic_geo.nn.edgeconv import EdgeConvNormAct
from mgic_geo.nn.graph_operator import DiffGCNOperator
from mgic_geo.nn.knn import knn_graph
from mgic_geo.nn.mgic_conv import DiffGCNNormAct, DynamicEdgeConvNormAct, DynamicMGICConv, MGICConv

__all__ = ["DiffGCNConv", "DiffGCNNormAct", "DiffGCNOperator", "DynamicEdgeConvNormAct", "DynamicMGICConv",
           "EdgeConvNormAct", "MGICConv", "knn_graph"]

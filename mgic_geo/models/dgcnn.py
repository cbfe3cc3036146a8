"""DGCNN-style point-cloud classifiers: the paper's small DGCNN, its MGIC version, and PyG's example.

The paper's network (Table 6, "a smaller version of DGCNN whose last three classifier layers
(1024, 512, 256) become 64 each")::

    EdgeConv 3->64, 64->64, 64->128, 128->256     (kNN, k = 10: on coordinates, then on features)
    concat 512 -> 64 per point                     (DGCNN's embedding, 1024 in the original)
    max || mean over the cloud -> 128 -> 64 -> 64 -> classes

``mgic_dgcnn`` keeps that skeleton and replaces the channel-preserving work by MGIC blocks of
EdgeConvs: ``EdgeConv 3->64``, ``MGIC(64)``, grouped ``64->128`` + ``MGIC(128)``, grouped
``128->256`` + ``MGIC(256)``. Each MGIC block builds one kNN graph on its input features, shared by
its levels.

``diffgcn_dgcnn`` and ``mgic_diffgcn_dgcnn`` are the paper's own description of its diffGCN rows
("we replace the GCN block with each of the backbones listed in Tab. 6"): the same skeleton on all
1,024 points, each EdgeConv replaced by a diffGCN layer (``conv="diffgcn"``), or, for MGIC, by a
grouped widening map and an MGIC block of diffGCN layers as ``mgic_dgcnn`` has them. diffGCN's
operators need the offsets between points, so one kNN graph on the positions (k = 10) and its
diffGCN operator serve every layer. Table 6 (``mgic-geo table 6``) prints their counts beside the
package's pooled diffGCN networks (:mod:`mgic_geo.models.diffgcn`).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from mgic_geo.models.clouds import Clouds
from mgic_geo.core.config import MGICConfig
from mgic_geo.models.heads import (LEAKY_RELU, MGIC_POINT_CLOUD, ActLayer, NormLayer, check_layer_args, check_network_args,
                                   classifier, pointwise, widening_groups)
from mgic_geo.models.registry import default_mgic, register_model
from mgic_geo.nn import DiffGCNNormAct, DynamicEdgeConvNormAct, DynamicMGICConv, MGICConv, knn_graph
from mgic_geo.validation import check_int


CONVS = ("edge", "diffgcn")


class DGCNN(nn.Module):
    r"""DGCNN (Wang et al. 2019) with the per-node EdgeConv, optionally with MGIC blocks.

    Args:
        num_classes (int): output classes. (default: ``10``)
        widths (sequence of int): EdgeConv output widths. (default: ``(64, 64, 128, 256)``)
        embedding (int): per-point embedding width after the concatenation. (default: ``64``)
        hidden (sequence of int): hidden widths of the classifier. (default: ``(64, 64)``)
        k (int): neighbours of the kNN graphs. (default: ``10``)
        dropout (float): classifier dropout. (default: ``0.5``)
        mgic (MGICConfig or dict, optional): build the MGIC version with these settings
            (:class:`~mgic_geo.core.config.MGICConfig`). (default: ``None``, plain EdgeConvs)
        conv (str): the graph layer of every block: ``"edge"`` (EdgeConv, dynamic kNN graphs on the
            features, DGCNN's) or ``"diffgcn"`` (diffGCN layers on one kNN graph of the positions,
            shared by every layer with its operator; module docstring). (default: ``"edge"``)
        num_points (int, optional): every cloud of a batch has this many points; the forward then
            makes no host synchronisation, and ``torch.compile(fullgraph=True)`` sees no graph
            break. (default: ``None``, read from ``batch``)
        norm_layer (callable, optional): ``norm_layer(channels) -> nn.Module``, every norm of the
            network (EdgeConvs, MGIC corrections, point-wise maps, classifier).
            (default: :class:`torch.nn.BatchNorm1d`; :class:`~mgic_geo.core.norm.ChannelBatchNorm`
            for the MGIC corrections)
        act_layer (callable, optional): ``act_layer() -> nn.Module``, every activation of the
            network. (default: :class:`torch.nn.LeakyReLU` with slope 0.2)

    Shapes:
        - **input:** positions :math:`(N, 3)`, batch :math:`(N,)` (sorted)
        - **output:** logits :math:`(B, \text{num_classes})`

    ``pos`` must be floating point in the network's dtype and on its device (any dtype under
    ``torch.autocast``), with at least one point: anything else raises a ``ValueError`` naming the
    network (:mod:`mgic_geo.nn.inputs`).
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        widths: Sequence[int] = (64, 64, 128, 256),
        embedding: int = 64,
        hidden: Sequence[int] = (64, 64),
        k: int = 10,
        dropout: float = 0.5,
        mgic: MGICConfig | dict | None = None,
        conv: str = "edge",
        num_points: int | None = None,
        norm_layer: NormLayer | None = None,
        act_layer: ActLayer | None = None,
    ):
        super().__init__()
        check_network_args(num_classes=num_classes, k=k, num_points=num_points)
        if conv not in CONVS:
            raise ValueError(f"`conv` must be one of {CONVS}, got {conv!r}")
        self.conv = conv
        check_layer_args(norm_layer=norm_layer, act_layer=act_layer)
        layers = dict(norm_layer=norm_layer, act_layer=act_layer)
        point_layers = dict(norm_layer=norm_layer, act_layer=act_layer or LEAKY_RELU)
        mgic = MGICConfig.coerce(mgic) if mgic is not None else None
        check_int("embedding", embedding)
        self.num_points, self.k = num_points, k
        self.layers = nn.ModuleList()
        in_channels = 3
        for width in widths:
            check_int("widths", width)
            if (mgic is None or in_channels == 3) and conv == "diffgcn":
                self.layers.append(DiffGCNNormAct(in_channels, width, **layers))
            elif mgic is None or in_channels == 3:
                self.layers.append(DynamicEdgeConvNormAct(in_channels, width, k=k, **layers))
            else:
                block = (MGICConv(width, conv="diffgcn", mgic=mgic, **layers) if conv == "diffgcn"
                         else DynamicMGICConv(width, conv="edge", k=k, mgic=mgic, **layers))
                layer = nn.ModuleDict({"block": block})
                if width != in_channels:
                    layer["widen"] = pointwise(in_channels, width, groups=widening_groups(in_channels, width, mgic.group_size),
                                               **point_layers)
                self.layers.append(layer)
            in_channels = width
        self.embed = pointwise(sum(widths), embedding, **point_layers)
        self.head = classifier(2 * embedding, hidden, num_classes, dropout=dropout, **layers)

    def forward(self, pos: Tensor, batch: Tensor | None = None) -> Tensor:
        clouds = Clouds.of(pos, batch, self.num_points, model=self)
        if self.conv == "diffgcn":
            return self._head(clouds, self._diffgcn_features(pos, clouds))
        x, features = pos, []
        for layer in self.layers:
            if isinstance(layer, DynamicEdgeConvNormAct):
                x = layer(x, clouds.batch, cloud_size=clouds.size)
            else:
                if "widen" in layer:
                    x = layer["widen"](x)
                x = layer["block"](x, None, clouds.batch, cloud_size=clouds.size)
            features.append(x)
        return self._head(clouds, features)

    def _diffgcn_features(self, pos: Tensor, clouds: Clouds) -> list[Tensor]:
        """Every block's output, the blocks on one kNN graph of the positions and its diffGCN operator."""
        graph, degree = clouds.knn(pos, self.k), clouds.regular_degree(self.k)
        operator = clouds.diffgcn_operator(pos, graph, self.k)
        x, features = pos, []
        for layer in self.layers:
            if isinstance(layer, DiffGCNNormAct):
                x = layer(x, pos, graph, k=degree, operator=operator)
            else:
                if "widen" in layer:
                    x = layer["widen"](x)
                x = layer["block"](x, pos, graph, k=degree, operator=operator)
            features.append(x)
        return features

    def _head(self, clouds: Clouds, features: list[Tensor]) -> Tensor:
        return self.head(clouds.global_pool(self.embed(torch.cat(features, dim=1))))


class PyGExampleDGCNN(nn.Module):
    r"""The network of PyG's ``examples/dgcnn_classification.py`` (k = 20), the throughput
    baseline: PyG's ``EdgeConv`` over materialised per-edge features with MLPs
    ``[6, 64, 64, 64]`` and ``[128, 128]``, ``Linear(192, 1024)``, a global max pool and an MLP
    ``[1024, 512, 256, classes]`` with dropout 0.5. The kNN graphs come from
    :func:`~mgic_geo.nn.knn_graph` (PyG's ``DynamicEdgeConv`` needs pyg-lib). Returns logits (the
    example returns log-probabilities).

    Shapes:
        - **input:** positions :math:`(N, 3)`, batch :math:`(N,)`
        - **output:** logits :math:`(B, \text{num_classes})`
    """

    def __init__(self, *, num_classes: int = 10, k: int = 20, num_points: int | None = None):
        super().__init__()
        from torch_geometric.nn import MLP, EdgeConv

        check_network_args(num_classes=num_classes, k=k, num_points=num_points)
        self.k, self.num_points = k, num_points
        self.conv1 = EdgeConv(MLP([2 * 3, 64, 64, 64]), aggr="max")
        self.conv2 = EdgeConv(MLP([2 * 64, 128]), aggr="max")
        self.lin1 = nn.Linear(128 + 64, 1024)
        self.mlp = MLP([1024, 512, 256, num_classes], dropout=0.5, norm=None)

    def forward(self, pos: Tensor, batch: Tensor | None = None) -> Tensor:
        clouds = Clouds.of(pos, batch, self.num_points, model=self)
        x1 = self.conv1(pos, knn_graph(pos, self.k, clouds.batch, cloud_size=clouds.size))
        x2 = self.conv2(x1, knn_graph(x1, self.k, clouds.batch, cloud_size=clouds.size))
        out = self.lin1(torch.cat([x1, x2], dim=1))
        return self.mlp(clouds.pool(out, "max"))


@register_model
def dgcnn(*, num_classes: int = 10, k: int = 10, num_points: int | None = None, dropout: float = 0.5) -> DGCNN:
    """The paper's small DGCNN (Table 6 row 1; paper: 0.16 M params, 125 M FLOPs, 91.6 %)."""
    return DGCNN(num_classes=num_classes, k=k, num_points=num_points, dropout=dropout)


@register_model
@default_mgic(MGIC_POINT_CLOUD)
def mgic_dgcnn(*, num_classes: int = 10, k: int = 10, mgic: MGICConfig | dict | None = None,
               num_points: int | None = None, dropout: float = 0.5) -> DGCNN:
    """The small DGCNN with MGIC blocks of EdgeConvs (not in the paper's table); ``mgic`` defaults to
    ``MGICConfig(group_size=8, coarsest=16)``."""
    return DGCNN(num_classes=num_classes, k=k, mgic=mgic, num_points=num_points, dropout=dropout)


@register_model
def dgcnn_pyg_example(*, num_classes: int = 10, k: int = 20, num_points: int | None = None) -> PyGExampleDGCNN:
    """PyG's example DGCNN (0.88 M params at 10 classes), the throughput baseline."""
    return PyGExampleDGCNN(num_classes=num_classes, k=k, num_points=num_points)


@register_model
def diffgcn_dgcnn(*, num_classes: int = 10, k: int = 10, num_points: int | None = None,
                  dropout: float = 0.5) -> DGCNN:
    """diffGCN in the paper's DGCNN skeleton (Table 6 row 2 as the paper describes it: every EdgeConv
    replaced by a diffGCN layer, all 1,024 points; paper: 0.57 M params, 64 M FLOPs)."""
    return DGCNN(num_classes=num_classes, k=k, num_points=num_points, dropout=dropout, conv="diffgcn")


@register_model
@default_mgic(MGIC_POINT_CLOUD)
def mgic_diffgcn_dgcnn(*, num_classes: int = 10, k: int = 10, mgic: MGICConfig | dict | None = None,
                       num_points: int | None = None, dropout: float = 0.5) -> DGCNN:
    """MGIC-diffGCN in the paper's DGCNN skeleton (Table 6 row 3 as the paper describes it; paper:
    0.11 M params, 13.7 M FLOPs); ``mgic`` defaults to ``MGICConfig(group_size=8, coarsest=16)``."""
    return DGCNN(num_classes=num_classes, k=k, mgic=mgic, num_points=num_points, dropout=dropout, conv="diffgcn")


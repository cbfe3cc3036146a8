"""diffGCN point-cloud classifiers: plain (``diffgcn``) and with MGIC blocks (``mgic_diffgcn``).

No public code defines the paper's Table-6 diffGCN networks, so the package does; the architecture
is data (``STAGES``). The MAC budget decides the shape: 13.7 M MACs at 1024
points leave about 13 k MACs per point, so the networks shrink the point set between stages::

    stage   points   width   block
    0       1024     32      DiffGCN 3->32 (stem), then the stage block
    1        512     64      widen 32->64, then the stage block
    2        256    128      widen 64->128, then the stage block
    3        128    256      widen 128->256, then the stage block
    max || mean over the cloud -> 64 -> 64 -> classes

The stage block is ``DiffGCN(c -> c) + BN + ReLU`` in ``diffgcn`` and ``MGICConv(c, "diffgcn")``
in ``mgic_diffgcn``, whose widening maps are grouped (groups of ``group_size`` input channels; the
MGIC block that follows couples all channels).

Graphs (``graph``): diffGCN's gradient and Laplacian are differential operators on the sampled
surface, so by default (``graph="static"``) each stage builds one kNN graph (k = 10) on its point
positions and every layer of the stage uses it: the stem and the first stage block share the graph of
the 1024 input points, and each later stage builds one on its kept positions, 4 graphs per cloud in
all, each on 3-D points. ``graph="dynamic"`` is DGCNN's dynamic graph instead: every stage block
builds its own graph on its input features (after the widening map; the levels of an MGIC block
share it), and the stem, whose input features are the positions, keeps the positional graph; the
operators still weight by the position offsets. Per 1024-point cloud the dynamic graphs cost 68.5 M
distance MACs against 5.57 M for the static ones (:func:`mgic_geo.complexity.profile`): five times
the 13.4 M MACs of ``mgic_diffgcn``'s learned maps.

Pooling between stages (a documented substitute for diffGCN's algebraic-multigrid pooling, whose
graph matching needs torch-cluster): keep a random-looking half of every cloud chosen by a hash of
the point coordinates (:meth:`~mgic_geo.models.clouds.Clouds.subsample`: independent of the point
order, new every training step as augmentation moves the points), give each kept point the mean
features of its fine-graph neighbourhood (itself and its k neighbours), keep its position, and
build a new kNN graph on the kept positions. The head pools first and then maps to 64 (the
original embeds every point first; at 128 points that alone would cost 2 M MACs).
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from mgic_geo.models.clouds import Clouds, neighbourhood_mean
from mgic_geo.core.config import MGICConfig
from mgic_geo.models.heads import (MGIC_POINT_CLOUD, ActLayer, NormLayer, check_layer_args, check_network_args, classifier,
                                   pointwise, widening_groups)
from mgic_geo.models.registry import default_mgic, register_model
from mgic_geo.nn import DiffGCNNormAct, MGICConv
from mgic_geo.validation import check_int

STAGES = (32, 64, 128, 256)  # widths; every stage after the first halves the points
GRAPHS = ("static", "dynamic")


class DiffGCNNet(nn.Module):
    r"""A diffGCN classifier over ``len(widths)`` stages of halving point sets (module docstring).

    Args:
        num_classes (int): output classes. (default: ``10``)
        widths (sequence of int): stage widths. (default: :data:`STAGES`)
        hidden (sequence of int): hidden widths of the classifier. (default: ``(64, 64)``)
        k (int): neighbours of the kNN graphs. (default: ``10``)
        dropout (float): classifier dropout. (default: ``0.5``)
        mgic (MGICConfig or dict, optional): use MGIC stage blocks with these settings
            (:class:`~mgic_geo.core.config.MGICConfig`). (default: ``None``, dense diffGCN blocks)
        num_points (int, optional): every cloud of a batch has this many points; the forward then
            makes no host synchronisation, and ``torch.compile(fullgraph=True)`` sees no graph
            break. (default: ``None``, read from ``batch``)
        graph (str): ``"static"``, one kNN graph per stage on the positions, shared by the stage's
            layers; or ``"dynamic"``, one per stage block on its input features (module
            docstring). (default: ``"static"``)
        operator_scale (str): the diffGCN layers' gradient scale, ``"spacing"`` or ``"derivative"``
            (:mod:`mgic_geo.nn.diffgcn`). (default: ``"spacing"``)
        norm_layer (callable, optional): ``norm_layer(channels) -> nn.Module``, every norm of the
            network (diffGCN layers, MGIC corrections, widening maps, classifier).
            (default: :class:`torch.nn.BatchNorm1d`; :class:`~mgic_geo.core.norm.ChannelBatchNorm`
            for the MGIC corrections)
        act_layer (callable, optional): ``act_layer() -> nn.Module``, every activation of the
            network. (default: :class:`torch.nn.ReLU`; LeakyReLU(0.2) in the classifier)

    Shapes:
        - **input:** positions :math:`(N, 3)`, batch :math:`(N,)` (sorted)
        - **output:** logits :math:`(B, \text{num_classes})`

    The inputs are checked as :class:`~mgic_geo.models.dgcnn.DGCNN` checks them
    (:mod:`mgic_geo.nn.inputs`).
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        widths: Sequence[int] = STAGES,
        hidden: Sequence[int] = (64, 64),
        k: int = 10,
        dropout: float = 0.5,
        mgic: MGICConfig | dict | None = None,
        num_points: int | None = None,
        graph: str = "static",
        operator_scale: str = "spacing",
        norm_layer: NormLayer | None = None,
        act_layer: ActLayer | None = None,
    ):
        super().__init__()
        check_network_args(num_classes=num_classes, k=k, num_points=num_points)
        check_layer_args(norm_layer=norm_layer, act_layer=act_layer)
        layers = dict(norm_layer=norm_layer, act_layer=act_layer)
        mgic = MGICConfig.coerce(mgic) if mgic is not None else None
        if not widths:
            raise ValueError("`widths` must list at least one stage width")
        if graph not in GRAPHS:
            raise ValueError(f"`graph` must be one of {GRAPHS}, got {graph!r}")
        self.k, self.num_points, self.graph, self.operator_scale = k, num_points, graph, operator_scale
        self.stem = DiffGCNNormAct(3, widths[0], operator_scale=operator_scale, **layers)
        self.widen, self.blocks = nn.ModuleList(), nn.ModuleList()
        in_channels = widths[0]
        for width in widths:
            check_int("widths", width)
            if mgic is None:
                self.widen.append(pointwise(in_channels, width, **layers) if width != in_channels else nn.Identity())
                self.blocks.append(DiffGCNNormAct(width, width, operator_scale=operator_scale, **layers))
            else:
                groups = widening_groups(in_channels, width, mgic.group_size)
                self.widen.append(pointwise(in_channels, width, groups=groups, **layers) if width != in_channels else nn.Identity())
                self.blocks.append(MGICConv(width, conv="diffgcn", mgic=mgic, operator_scale=operator_scale, **layers))
            in_channels = width
        self.head = classifier(2 * widths[-1], hidden, num_classes, dropout=dropout, **layers)

    def forward(self, pos: Tensor, batch: Tensor | None = None) -> Tensor:
        clouds = Clouds.of(pos, batch, self.num_points, model=self)
        graph = clouds.knn(pos, self.k)
        # shared by the stem and the first stage's block
        operator = clouds.diffgcn_operator(pos, graph, self.k, self.operator_scale)
        x = self.stem(pos, pos, graph, k=clouds.regular_degree(self.k), operator=operator)
        for stage, (widen, block) in enumerate(zip(self.widen, self.blocks)):
            if stage:
                degree = clouds.regular_degree(self.k)  # of the graph the last block used
                index, clouds = clouds.subsample(pos)
                x, pos = neighbourhood_mean(x, graph, index, degree), pos[index]
                if self.graph == "static":
                    graph = clouds.knn(pos, self.k)
                    operator = clouds.diffgcn_operator(pos, graph, self.k, self.operator_scale)
            x = widen(x)
            if self.graph == "dynamic":
                graph = clouds.knn(x, self.k)
                operator = clouds.diffgcn_operator(pos, graph, self.k, self.operator_scale)
            x = block(x, pos, graph, k=clouds.regular_degree(self.k), operator=operator)
        return self.head(clouds.global_pool(x))

    def extra_repr(self) -> str:
        return f"k={self.k}, graph={self.graph!r}, num_points={self.num_points}"


@register_model
def diffgcn(*, num_classes: int = 10, k: int = 10, num_points: int | None = None, dropout: float = 0.5,
            graph: str = "static", operator_scale: str = "spacing") -> DiffGCNNet:
    """diffGCN with dense stage blocks (Table 6 row 2; paper: 0.57 M params, 64 M FLOPs, 92.5 %)."""
    return DiffGCNNet(num_classes=num_classes, k=k, num_points=num_points, dropout=dropout, graph=graph,
                      operator_scale=operator_scale)


@register_model
@default_mgic(MGIC_POINT_CLOUD)
def mgic_diffgcn(*, num_classes: int = 10, k: int = 10, mgic: MGICConfig | dict | None = None,
                 num_points: int | None = None, dropout: float = 0.5, graph: str = "static",
                 operator_scale: str = "spacing") -> DiffGCNNet:
    """diffGCN with MGIC stage blocks (Table 6 row 3; paper: 0.11 M params, 13.7 M FLOPs, 92.9 %);
    ``mgic`` defaults to the paper's ``MGICConfig(group_size=8, coarsest=16)``."""
    return DiffGCNNet(num_classes=num_classes, k=k, mgic=mgic,
                      num_points=num_points, dropout=dropout, graph=graph, operator_scale=operator_scale)

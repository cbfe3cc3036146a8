r"""The MGIC block of graph convolutions: :class:`MGICConv` and :class:`DynamicMGICConv`.

Both wrap the one hierarchy implementation, :class:`~mgic_geo.core.block.MGICBlock` (Algorithm 1),
with graph level blocks:

* ``conv="diffgcn"``: :class:`DiffGCNNormAct`, ``ReLU(BN(DiffGCNConv(x, pos, edge_index)))``
  with the 1x1 mixing grouped on the fine levels;
* ``conv="edge"``: :class:`~mgic_geo.nn.EdgeConv` (EdgeConv + BN + LeakyReLU) with grouped
  linear parts on the fine levels.

Every level uses the same graph: the differential operators and the neighbourhoods act channel by
channel, so a coarser channel level needs no coarser graph. The dynamic variant builds that graph
once per block, on the positions (``"diffgcn"``, whose operators need offsets between points) or on
the block's input features (``"edge"``, DGCNN's dynamic graph).
"""
from __future__ import annotations

from functools import partial

from torch import Tensor, nn

from mgic_geo.core.block import MGICBlock
from mgic_geo.nn.diffgcn import DiffGCNConv, check_operator, check_operator_scale
from mgic_geo.nn.edgeconv import EdgeConv
from mgic_geo.nn.graph_operator import DiffGCNOperator, operator_applies
from mgic_geo.nn.knn import knn_graph, regular_degree
from mgic_geo.validation import check_int

CONVS = ("diffgcn", "edge")


class DiffGCNNormAct(nn.Module):
    r"""``ReLU(BN(DiffGCNConv(x, pos, edge_index)))``: a diffGCN layer as networks use it.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        groups (int): groups of the conv's 1x1 mixing. (default: ``1``)
        operator_scale (str): :class:`~mgic_geo.nn.DiffGCNConv`'s. (default: ``"spacing"``)

    Shapes:
        - **input:** node features :math:`(N, C_{in})`, positions :math:`(N, 3)`, edge indices :math:`(2, E)`
        - **output:** node features :math:`(N, C_{out})`
    """

    def __init__(self, in_channels: int, out_channels: int, *, groups: int = 1, operator_scale: str = "spacing"):
        super().__init__()
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.conv = DiffGCNConv(in_channels, out_channels, groups=groups, bias=False, operator_scale=operator_scale)
        self.norm = nn.BatchNorm1d(out_channels)
        self.act = nn.ReLU()

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()
        self.norm.reset_parameters()

    def forward(self, x: Tensor, pos: Tensor, edge_index: Tensor, *, k: int | None = None,
                operator: DiffGCNOperator | None = None) -> Tensor:
        return self.act(self.norm(self.conv(x, pos, edge_index, k=k, operator=operator)))

    def __repr__(self) -> str:
        groups = f", groups={self.groups}" if self.groups > 1 else ""
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}{groups})"


def _check_conv(conv: str) -> None:
    if conv not in CONVS:
        raise ValueError(f"`conv` must be one of {CONVS}, got {conv!r}")


class MGICConv(nn.Module):
    r"""A channel-preserving graph convolution replaced by its multigrid-in-channels V-cycle over
    widths ``channels, channels/2, ..., coarsest``: grouped convs (groups of ``group_size``
    channels) on the fine levels, one fully coupled conv on the coarsest, learned grouped 1x1
    transfers in between. Parameters and MACs grow linearly with ``channels``.

    Args:
        channels (int): input and output channels :math:`C`.
        conv (str): the level block, ``"diffgcn"`` or ``"edge"`` (module docstring).
            (default: ``"diffgcn"``)
        group_size (int): :math:`s_g`, channels per group on the fine levels. (default: ``8``)
        coarsest (int): :math:`s_c`, the coarsest width. (default: ``16``)
        level_rule (str): ``"paper"`` or ``"official"`` (:mod:`mgic_geo.core.plan`).
        transfer_init (str): ``"average"`` or ``"kaiming"``.
        operator_scale (str): the diffGCN levels' (:class:`~mgic_geo.nn.DiffGCNConv`); ignored by
            ``conv="edge"``. (default: ``"spacing"``)
        zero_init_correction (bool): start the coarse-grid corrections ``N_j`` at zero scale.
            Measured with ``mgic_diffgcn`` on synthetic ModelNet-10 data (256 points, Adam 0.01,
            5 epochs): 20 % test accuracy with scale 1 (near chance: 10-20 % over 8 epochs), 46 % with 0.
            (default: ``True``)

    ``forward(x, pos, edge_index, *, k=None, operator=None)``: ``k`` as :class:`~mgic_geo.nn.DiffGCNConv`
    (the graph lists exactly ``k`` edges per node, node by node: faster neighbour reductions);
    ``operator``, a :class:`~mgic_geo.nn.graph_operator.DiffGCNOperator` of the same graph, shared
    with other layers on it (``conv="diffgcn"``; built once per call otherwise and shared by the levels).

    Shapes:
        - **input:** node features :math:`(N, C)`, positions :math:`(N, 3)` (``None`` allowed for
          ``conv="edge"``), edge indices :math:`(2, E)` (source, target)
        - **output:** node features :math:`(N, C)`

    Example::

        >>> import torch
        >>> from mgic_geo.nn import MGICConv, knn_graph
        >>> pos, x = torch.randn(100, 3), torch.randn(100, 64)
        >>> conv = MGICConv(64, conv="diffgcn", group_size=8, coarsest=16)
        >>> conv.widths, conv.groups
        ([64, 32, 16], [8, 4, 1])
        >>> conv(x, pos, knn_graph(pos, k=10)).shape
        torch.Size([100, 64])
    """

    def __init__(
        self,
        channels: int,
        *,
        conv: str = "diffgcn",
        group_size: int = 8,
        coarsest: int = 16,
        level_rule: str = "paper",
        transfer_init: str = "average",
        zero_init_correction: bool = True,
        operator_scale: str = "spacing",
    ):
        super().__init__()
        _check_conv(conv)
        check_operator_scale(operator_scale)
        self.in_channels = self.out_channels = channels
        self.conv, self.group_size, self.coarsest = conv, group_size, coarsest
        self.operator_scale = operator_scale
        if conv == "diffgcn":
            level = partial(DiffGCNNormAct, operator_scale=operator_scale)
        else:
            level = EdgeConv
        self.block = MGICBlock(
            channels,
            lambda width, groups: level(width, width, groups=groups),
            group_size=group_size,
            coarsest=coarsest,
            level_rule=level_rule,
            transfer_init=transfer_init,
            zero_init_correction=zero_init_correction,
        )

    @property
    def widths(self) -> list[int]:
        return self.block.widths

    @property
    def groups(self) -> list[int]:
        return self.block.groups

    def reset_parameters(self) -> None:
        self.block.reset_parameters()

    def forward(self, x: Tensor, pos: Tensor | None, edge_index: Tensor, *, k: int | None = None,
                operator: DiffGCNOperator | None = None) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected node features [N, {self.in_channels}], got {tuple(x.shape)}")
        if self.conv == "edge":
            return self.block(x, edge_index, k=k)
        if pos is None:
            raise ValueError("`pos` is required by conv='diffgcn' (its operators use the offsets between points)")
        if operator_applies(pos):  # one operator for every level (mgic_geo.nn.graph_operator)
            if operator is None:
                operator = DiffGCNOperator.build(pos, edge_index, k=k, operator_scale=self.operator_scale)
            check_operator(operator, x.shape[0], self.operator_scale)
            return self.block(x, pos, edge_index, k=k, operator=operator)
        return self.block(x, pos, edge_index, k=k)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, conv={self.conv!r}, "
                f"group_size={self.group_size}, coarsest={self.coarsest})")


class DynamicMGICConv(MGICConv):
    r""":class:`MGICConv` that builds its own ``k``-nearest-neighbour graph, once per call, on
    the positions (``conv="diffgcn"``) or on the input features (``conv="edge"``, DGCNN's dynamic
    graph), per cloud of ``batch``.

    Args:
        channels (int): input and output channels :math:`C`.
        k (int): neighbours per point. (default: ``10``)
        **kwargs: as :class:`MGICConv`.

    ``forward(x, pos, batch=None, *, cloud_size=None)``: with ``cloud_size`` (every cloud has that
    many points, as in a ModelNet batch) the graph is built without host synchronisation and
    ``torch.compile`` sees no graph break (:func:`~mgic_geo.nn.knn_graph`).

    Shapes:
        - **input:** node features :math:`(N, C)`, positions :math:`(N, 3)`, batch :math:`(N,)`
        - **output:** node features :math:`(N, C)`
    """

    def __init__(self, channels: int, *, k: int = 10, **kwargs):
        check_int("k", k)
        super().__init__(channels, **kwargs)
        self.k = k

    def forward(self, x: Tensor, pos: Tensor | None, batch: Tensor | None = None, *,
                cloud_size: int | None = None) -> Tensor:
        if self.conv == "diffgcn" and pos is None:
            raise ValueError("`pos` is required by conv='diffgcn' (its operators use the offsets between points)")
        graph_on = pos if self.conv == "diffgcn" else x
        edge_index = knn_graph(graph_on, self.k, batch, cloud_size=cloud_size)
        return super().forward(x, pos, edge_index, k=regular_degree(self.k, cloud_size))

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", k={self.k})"


class DynamicEdgeConv(EdgeConv):
    r""":class:`~mgic_geo.nn.EdgeConv` on the ``k``-nearest-neighbour graph of its input features,
    rebuilt on every call (DGCNN's dynamic graph; PyG's ``DynamicEdgeConv`` needs pyg-lib).

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        k (int): neighbours per point. (default: ``10``)
        **kwargs: as :class:`~mgic_geo.nn.EdgeConv`.

    ``forward(x, batch=None, *, cloud_size=None)``, ``cloud_size`` as :class:`DynamicMGICConv`.

    Shapes:
        - **input:** node features :math:`(N, C_{in})`, batch :math:`(N,)`
        - **output:** node features :math:`(N, C_{out})`
    """

    def __init__(self, in_channels: int, out_channels: int, *, k: int = 10, **kwargs):
        check_int("k", k)
        super().__init__(in_channels, out_channels, **kwargs)
        self.k = k

    def forward(self, x: Tensor, batch: Tensor | None = None, *, cloud_size: int | None = None) -> Tensor:
        edge_index = knn_graph(x, self.k, batch, cloud_size=cloud_size)
        return super().forward(x, edge_index, k=regular_degree(self.k, cloud_size))

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", k={self.k})"

r"""The MGIC block of graph convolutions: :class:`MGICConv` and :class:`DynamicMGICConv` (siblings
on one base: the first takes a graph, the second builds its own), and the dynamic-graph EdgeConv
:class:`DynamicEdgeConvNormAct`.

Both MGIC layers wrap the one hierarchy implementation, :class:`~mgic_geo.core.block.MGICBlock` (Algorithm 1),
with graph level blocks:

* ``conv="diffgcn"``: :class:`DiffGCNNormAct`, ``ReLU(BN(DiffGCNConv(x, pos, edge_index)))``
  with the 1x1 mixing grouped on the fine levels;
* ``conv="edge"``: :class:`~mgic_geo.nn.EdgeConvNormAct` (EdgeConv + BN + LeakyReLU) with grouped
  linear parts on the fine levels;
* a callable ``conv(width, groups) -> nn.Module``, as :class:`~mgic_geo.MGICBlock`'s ``block``:
  any channel-preserving graph layer called as ``layer(x, pos, edge_index, k=k)``.

Every level uses the same graph: the differential operators and the neighbourhoods act channel by
channel, so a coarser channel level needs no coarser graph. The dynamic variant builds that graph
once per block, on the positions (``"diffgcn"``, whose operators need offsets between points) or on
the block's input features (``"edge"``, DGCNN's dynamic graph).

Inputs (:mod:`mgic_geo.nn.inputs`, every layer here): ``x`` floating point in the layer's dtype and
on its device (any dtype under ``torch.autocast``), ``pos`` any floating-point dtype on ``x``'s
device, at least one node; a given ``edge_index`` holds node indices in ``[0, N)`` (checked once
per tensor: :mod:`mgic_geo.nn.adjacency`). Anything else raises a ``ValueError`` naming the layer.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

from torch import Tensor, nn

from mgic_geo.core.block import MGICBlock
from mgic_geo.core.config import MGICConfig
from mgic_geo.nn.adjacency import as_edge_index
from mgic_geo.nn.diffgcn import DiffGCNConv, check_operator, check_operator_scale
from mgic_geo.nn.edgeconv import EDGE_CONV_ARGS_DOC, EdgeConvNormAct, _EdgeConvNormActBase
from mgic_geo.nn.graph_operator import DiffGCNOperator, operator_applies
from mgic_geo.nn.inputs import check_features, check_positions
from mgic_geo.nn.knn import knn_graph, regular_degree
from mgic_geo.validation import check_int

CONVS = ("diffgcn", "edge")
GRAPH_ON = ("pos", "x")


class DiffGCNNormAct(nn.Module):
    r"""``act(norm(DiffGCNConv(x, pos, edge_index)))``: a diffGCN layer as networks use it
    (BatchNorm and ReLU by default).

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        groups (int): groups of the conv's 1x1 mixing. (default: ``1``)
        operator_scale (str): :class:`~mgic_geo.nn.DiffGCNConv`'s. (default: ``"spacing"``)
        norm_layer (callable, optional): ``norm_layer(out_channels) -> nn.Module``.
            (default: :class:`torch.nn.BatchNorm1d`)
        act_layer (callable, optional): ``act_layer() -> nn.Module``. (default: :class:`torch.nn.ReLU`)

    ``forward(x, pos, edge_index, *, k=None, operator=None)``: ``k`` and ``operator`` as
    :class:`~mgic_geo.nn.DiffGCNConv`'s.

    Shapes:
        - **input:** node features :math:`(N, C_{in})`, positions :math:`(N, 3)`, edge indices :math:`(2, E)`
        - **output:** node features :math:`(N, C_{out})`
    """

    def __init__(self, in_channels: int, out_channels: int, *, groups: int = 1, operator_scale: str = "spacing",
                 norm_layer: Callable[[int], nn.Module] | None = None,
                 act_layer: Callable[[], nn.Module] | None = None):
        super().__init__()
        _check_layers(norm_layer, act_layer)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.conv = DiffGCNConv(in_channels, out_channels, groups=groups, bias=False, operator_scale=operator_scale)
        self.norm = (norm_layer or nn.BatchNorm1d)(out_channels)
        self.act = (act_layer or nn.ReLU)()

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()
        if hasattr(self.norm, "reset_parameters"):
            self.norm.reset_parameters()

    def forward(self, x: Tensor, pos: Tensor, edge_index: Tensor, *, k: int | None = None,
                operator: DiffGCNOperator | None = None) -> Tensor:
        if x.dim() == 2:  # the conv checks the shapes
            check_features(type(self).__name__, "x", x, self)
        return self.act(self.norm(self.conv(x, pos, edge_index, k=k, operator=operator)))

    def __repr__(self) -> str:
        groups = f", groups={self.groups}" if self.groups > 1 else ""
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}{groups})"


def _check_layers(norm_layer, act_layer) -> None:
    for name, value in (("norm_layer", norm_layer), ("act_layer", act_layer)):
        if value is not None and not callable(value):
            raise ValueError(f"`{name}` must be a callable or None, got {value!r}")


def _check_conv(conv) -> None:
    if not callable(conv) and conv not in CONVS:
        raise ValueError(f"`conv` must be one of {CONVS}, got {conv!r} (or a callable conv(width, groups) -> nn.Module)")


def _conv_name(conv) -> str:
    return repr(conv) if isinstance(conv, str) else getattr(conv, "__name__", type(conv).__name__)


class _MGICConvBase(nn.Module):
    """What :class:`MGICConv` and :class:`DynamicMGICConv` share: the hierarchy of level blocks and
    the V-cycle on a given graph; they differ in where the graph comes from."""

    def __init__(
        self,
        channels: int,
        *,
        conv: str | Callable[[int, int], nn.Module] = "diffgcn",
        mgic: MGICConfig | dict | None = None,
        operator_scale: str = "spacing",
        norm_layer: Callable[[int], nn.Module] | None = None,
        act_layer: Callable[[], nn.Module] | None = None,
    ):
        super().__init__()
        check_int("channels", channels)
        _check_conv(conv)
        _check_layers(norm_layer, act_layer)
        check_operator_scale(operator_scale)
        self.in_channels = self.out_channels = channels
        self.conv = conv
        self.operator_scale = operator_scale
        if conv == "diffgcn":
            layer = partial(DiffGCNNormAct, operator_scale=operator_scale, norm_layer=norm_layer, act_layer=act_layer)
            level = lambda width, groups: layer(width, width, groups=groups)  # noqa: E731
        elif conv == "edge":
            layer = partial(EdgeConvNormAct, norm_layer=norm_layer, act_layer=act_layer)
            level = lambda width, groups: layer(width, width, groups=groups)  # noqa: E731
        else:
            level = conv
        self.block = MGICBlock(channels, level, mgic, norm=norm_layer)

    @property
    def widths(self) -> list[int]:
        return self.block.widths

    @property
    def groups(self) -> list[int]:
        return self.block.groups

    def reset_parameters(self) -> None:
        self.block.reset_parameters()

    def _check_inputs(self, x: Tensor, pos: Tensor | None) -> None:
        if x.dim() != 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected node features [N, {self.in_channels}], got {tuple(x.shape)}")
        check_features(type(self).__name__, "x", x, self)
        if pos is not None:
            check_positions(type(self).__name__, pos, x)

    def _cycle(self, x: Tensor, pos: Tensor | None, edge_index: Tensor, k: int | None,
               operator: DiffGCNOperator | None) -> Tensor:
        self._check_inputs(x, pos)
        edge_index = as_edge_index(edge_index, x.shape[0], layer=type(self).__name__)  # once for every level
        if self.conv == "edge":
            return self.block(x, edge_index, k=k)
        if self.conv != "diffgcn":  # a callable's levels
            return self.block(x, pos, edge_index, k=k)
        if pos is None:
            raise ValueError("`pos` is required by conv='diffgcn' (its operators use the offsets between points)")
        if operator_applies(pos):  # one operator for every level (mgic_geo.nn.graph_operator)
            if operator is None:
                operator = DiffGCNOperator.build(pos, edge_index, k=k, operator_scale=self.operator_scale)
            check_operator(operator, x.shape[0], self.operator_scale)
            return self.block(x, pos, edge_index, k=k, operator=operator)
        return self.block(x, pos, edge_index, k=k)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, conv={_conv_name(self.conv)}, "
                f"group_size={self.block.mgic.group_size}, coarsest={self.block.mgic.coarsest}{self._extra_repr_args()})")

    def _extra_repr_args(self) -> str:
        return ""


_MGIC_ARGS_DOC = r"""
        channels (int): input and output channels :math:`C`.
        conv (str or callable): the level block: ``"diffgcn"``, ``"edge"`` (module docstring) or
            ``conv(width, groups) -> nn.Module`` building a channel-preserving graph layer with
            ``groups`` channel groups, called as ``layer(x, pos, edge_index, k=k)``.
            (default: ``"diffgcn"``)
        mgic (MGICConfig or dict, optional): group size, coarsest width, level rule, transfer and
            correction init (:class:`~mgic_geo.core.config.MGICConfig`; a dict replaces some of its
            defaults). (default: ``MGICConfig()``: ``s_g = 8``, ``s_c = 16``)
        operator_scale (str): the diffGCN levels' (:class:`~mgic_geo.nn.DiffGCNConv`); ignored by
            the other convs. (default: ``"spacing"``)
        norm_layer (callable, optional): ``norm_layer(width) -> nn.Module``, the norm of the
            ``"diffgcn"`` / ``"edge"`` levels and of the coarse-grid corrections.
            (default: the levels' BatchNorm, :class:`~mgic_geo.core.norm.ChannelBatchNorm` for the
            corrections)
        act_layer (callable, optional): ``act_layer() -> nn.Module``, the activation of the
            ``"diffgcn"`` / ``"edge"`` levels. (default: their ReLU / LeakyReLU(0.2))"""


class MGICConv(_MGICConvBase):
    __doc__ = r"""A channel-preserving graph convolution replaced by its multigrid-in-channels V-cycle over
    widths ``channels, channels/2, ..., coarsest``: grouped convs (groups of ``group_size``
    channels) on the fine levels, one fully coupled conv on the coarsest, learned grouped 1x1
    transfers in between. Parameters and MACs grow linearly with ``channels``.

    Args:""" + _MGIC_ARGS_DOC + r"""

    ``forward(x, pos, edge_index, *, k=None, operator=None)``: ``k`` as :class:`~mgic_geo.nn.DiffGCNConv`
    (the graph lists exactly ``k`` edges per node, node by node: faster neighbour reductions);
    ``operator``, a :class:`~mgic_geo.nn.graph_operator.DiffGCNOperator` of the same graph, shared
    with other layers on it (``conv="diffgcn"``; built once per call otherwise and shared by the levels).
    Given a graph, nothing here synchronises with the host: ``torch.compile(fullgraph=True)``
    works as it is (it runs the gather formulation, :mod:`mgic_geo.nn.graph_operator`).

    Shapes:
        - **input:** node features :math:`(N, C)`, positions :math:`(N, 3)` (``None`` allowed for
          ``conv="edge"``), edge indices :math:`(2, E)` (source, target)
        - **output:** node features :math:`(N, C)`

    Example::

        >>> import torch
        >>> from mgic_geo import MGICConfig
        >>> from mgic_geo.nn import MGICConv, knn_graph
        >>> pos, x = torch.randn(100, 3), torch.randn(100, 64)
        >>> conv = MGICConv(64, conv="diffgcn", mgic=MGICConfig(group_size=8, coarsest=16))
        >>> conv.widths, conv.groups
        ([64, 32, 16], [8, 4, 1])
        >>> conv(x, pos, knn_graph(pos, k=10)).shape
        torch.Size([100, 64])
    """

    def forward(self, x: Tensor, pos: Tensor | None, edge_index: Tensor, *, k: int | None = None,
                operator: DiffGCNOperator | None = None) -> Tensor:
        return self._cycle(x, pos, edge_index, k, operator)


class DynamicMGICConv(_MGICConvBase):
    __doc__ = r"""The V-cycle of :class:`MGICConv` on a ``k``-nearest-neighbour graph it builds
    itself, once per call and shared by its levels, per cloud of ``batch``: on the positions
    (``graph_on="pos"``, the default of ``conv="diffgcn"``, whose operators need offsets between
    points) or on the input features (``graph_on="x"``, DGCNN's dynamic graph, the default of the
    other convs).

    Args:""" + _MGIC_ARGS_DOC + r"""
        k (int): neighbours per point. (default: ``10``)
        graph_on (str, optional): ``"pos"`` or ``"x"``, what the graph is built on.
            (default: ``"pos"`` for ``conv="diffgcn"``, else ``"x"``)

    ``forward(x, pos, batch=None, *, cloud_size=None)``: ``batch`` as PyG's (sorted cloud index per
    point). Pass ``cloud_size`` when every cloud has that many points (a ModelNet batch): the graph
    is then built without host synchronisation and ``torch.compile(fullgraph=True)`` sees no graph
    break; without it the cloud sizes are read from ``batch`` (:func:`~mgic_geo.nn.knn_graph`).

    Shapes:
        - **input:** node features :math:`(N, C)`, positions :math:`(N, 3)` (``None`` allowed when
          the graph is on ``x`` and the conv needs no positions), batch :math:`(N,)`
        - **output:** node features :math:`(N, C)`
    """

    def __init__(self, channels: int, *, k: int = 10, graph_on: str | None = None, **kwargs):
        check_int("k", k)
        if graph_on is not None and graph_on not in GRAPH_ON:
            raise ValueError(f"`graph_on` must be one of {GRAPH_ON} or None, got {graph_on!r}")
        super().__init__(channels, **kwargs)
        self.k = k
        self.graph_on = graph_on or ("pos" if self.conv == "diffgcn" else "x")

    def forward(self, x: Tensor, pos: Tensor | None, batch: Tensor | None = None, *,
                cloud_size: int | None = None) -> Tensor:
        if self.conv == "diffgcn" and pos is None:
            raise ValueError("`pos` is required by conv='diffgcn' (its operators use the offsets between points)")
        if self.graph_on == "pos" and pos is None:
            raise ValueError("`pos` is required by graph_on='pos'")
        self._check_inputs(x, pos)  # before the search, whose errors would not name the layer
        edge_index = knn_graph(pos if self.graph_on == "pos" else x, self.k, batch, cloud_size=cloud_size)
        return self._cycle(x, pos, edge_index, regular_degree(self.k, cloud_size), None)

    def _extra_repr_args(self) -> str:
        default = "pos" if self.conv == "diffgcn" else "x"
        graph_on = "" if self.graph_on == default else f", graph_on={self.graph_on!r}"
        return f", k={self.k}{graph_on}"


class DynamicEdgeConvNormAct(_EdgeConvNormActBase):
    __doc__ = r""":class:`~mgic_geo.nn.EdgeConvNormAct` on the ``k``-nearest-neighbour graph of its
    input features, rebuilt on every call (DGCNN's dynamic graph); a sibling of it, not a
    subclass. Not :class:`torch_geometric.nn.conv.DynamicEdgeConv`, which takes an ``nn`` (see
    :class:`~mgic_geo.nn.EdgeConvNormAct`) and needs pyg-lib or torch-cluster.

    Args:""" + EDGE_CONV_ARGS_DOC + r"""
        k (int): neighbours per point. (default: ``10``)

    ``forward(x, batch=None, *, cloud_size=None)``: ``batch`` as PyG's (sorted cloud index per
    point). Pass ``cloud_size`` when every cloud has that many points (a ModelNet batch): the graph
    is then built without host synchronisation and ``torch.compile(fullgraph=True)`` sees no graph
    break; without it the cloud sizes are read from ``batch`` (:func:`~mgic_geo.nn.knn_graph`).

    Shapes:
        - **input:** node features :math:`(N, C_{in})`, batch :math:`(N,)`
        - **output:** node features :math:`(N, C_{out})`
    """

    def __init__(self, in_channels: int, out_channels: int, *, k: int = 10, **kwargs):
        check_int("k", k)
        super().__init__(in_channels, out_channels, **kwargs)
        self.k = k

    def forward(self, x: Tensor, batch: Tensor | None = None, *, cloud_size: int | None = None) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected node features [N, {self.in_channels}], got {tuple(x.shape)}")
        check_features(type(self).__name__, "x", x, self)
        edge_index = knn_graph(x, self.k, batch, cloud_size=cloud_size)
        return self._propagate(x, edge_index, regular_degree(self.k, cloud_size))

    def _extra_repr_args(self) -> str:
        return f", k={self.k}"

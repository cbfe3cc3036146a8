r"""The diffGCN convolution (Eliasof & Treister 2020) with optional grouped channel mixing.

For a node :math:`i` with neighbours :math:`j \in \mathcal{N}(i)` (the sources of the edges into
``i``), offsets :math:`d_{ij} = p_j - p_i` and differences :math:`\delta_{ij} = x_j - x_i`, every
input channel gets five features

.. math::
    \underbrace{x_i}_{\text{mass}}, \qquad
    \underbrace{\frac{3}{|\mathcal{N}(i)|} \sum_j \delta_{ij}\,
        \frac{d_{ij}}{\lVert d_{ij} \rVert^2 + \epsilon}}_{\text{gradient}, \; 3 \text{ components}},
    \qquad
    \underbrace{\frac{1}{|\mathcal{N}(i)|} \sum_j \delta_{ij}}_{\text{Laplacian-like}}

and one learned 1x1 map mixes them into the output channels. The gradient normalisation: for a
linear field :math:`x = a \cdot p` the summand is :math:`(a \cdot \hat d)\,\hat d`, whose mean over
directions spread evenly on the sphere is :math:`a / 3`; the factor 3 makes the estimate unbiased
for such neighbourhoods.

Operator scale (``operator_scale``): with ``"spacing"`` (the default) the gradient is multiplied by
the node's local spacing :math:`h_i`, the mean of :math:`\lVert d_{ij} \rVert` over its
neighbours, so every feature has the units of :math:`x` itself (:math:`h_i \nabla x`, a difference
across one neighbourhood), whatever the cloud's units and density; ``"derivative"`` leaves the
gradient as the estimate of :math:`\nabla x` above. Why the default: a feature that varies from
point to point (any feature after a learned map and a ReLU) has differences :math:`\delta_{ij}` as
large as itself, so its derivative estimate is about :math:`1/h` times larger (about 20x on a
1,024-point cloud in the unit sphere). Mixed with the mass term, that sampling noise swamps the
features, and the pooled features of a freshly initialised network carry little of the shape, so
diffGCN networks learned far more slowly than DGCNN on real ModelNet-10 clouds
(``docs/results.md`` has the measurements and the commands). The
differential operators act channel by channel; with ``groups > 1`` only the mixing is grouped:
each group of ``in_channels / groups`` channels mixes its own ``[mass | grad_x | grad_y | grad_z |
lap]`` features (the features are laid out channel by channel, so a group is a contiguous slice).

The sums use the per-node decomposition :math:`\sum_j (x_j - x_i) w_{ij} = \sum_j x_j w_{ij} - x_i
\sum_j w_{ij}`: four ``index_add_`` passes over the gathered neighbour features, never a
``[E, C, 5]`` edge tensor. Isolated nodes get zero gradient and Laplacian.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from mgic_geo.core.grouped import grouped_maps_by_supergroup
from mgic_geo.core.transfer import GroupedChannelMap
from mgic_geo.nn import cost
from mgic_geo.nn.adjacency import as_edge_index
from mgic_geo.nn.graph_operator import (
    OPERATOR_SCALES,
    DiffGCNOperator,
    check_operator_scale,
    edge_weights,
    operator_applies,
)
from mgic_geo.nn.inputs import check_features, check_positions
from mgic_geo.nn.knn import check_knn_layout
from mgic_geo.validation import check_int

FEATURES_PER_CHANNEL = 5  # mass, three gradient components, Laplacian


def differential_features(x: Tensor, pos: Tensor, edge_index: Tensor, k: int | None = None, *,
                          operator_scale: str = "spacing") -> Tensor:
    """``[N, C]`` features -> ``[N, 5 C]``: per channel ``[mass, grad_x, grad_y, grad_z, lap]``,
    the gradient scaled by ``operator_scale`` (module docstring).

    With ``k`` (the graph lists ``k`` edges per node, node by node: :func:`~mgic_geo.nn.knn.check_knn_layout`)
    the sums are one batched product over ``[N, k]`` neighbourhoods instead of scatters."""
    check_operator_scale(operator_scale)
    if k is not None:
        check_knn_layout(edge_index, x.shape[0], k)
        return _regular_features(x, pos, edge_index, k, operator_scale)
    source, target = edge_index[0], edge_index[1]
    degree = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    neighbours = x[source]  # [E, C]
    # Under mixed precision x is half or bf16 while pos stays float32; index_add_ needs one dtype.
    weights = edge_weights(pos, edge_index, None, operator_scale).to(x.dtype)  # [E, 4]
    features = [x]
    for column in range(4):
        weight = weights[:, column]
        weighted_sum = torch.zeros_like(x).index_add_(0, target, neighbours * weight[:, None])
        weight_sum = torch.zeros_like(degree).index_add_(0, target, weight)
        features.append(weighted_sum - x * weight_sum[:, None])
    return torch.stack(features, dim=-1).flatten(1)


def _regular_features(x: Tensor, pos: Tensor, edge_index: Tensor, k: int, operator_scale: str) -> Tensor:
    nodes, channels = x.shape
    weights = edge_weights(pos, edge_index, k, operator_scale).to(x.dtype)  # [N, k, 4]
    neighbours = x.index_select(0, edge_index[0]).view(nodes, k, channels)
    weighted_sums = torch.bmm(neighbours.transpose(1, 2), weights)  # [N, C, 4]
    cost.report("graph operators", nodes * channels * k * 4)
    features = weighted_sums - x[:, :, None] * weights.sum(1)[:, None, :]
    return torch.cat([x[:, :, None], features], dim=2).flatten(1)


def check_operator(operator: DiffGCNOperator, num_nodes: int, operator_scale: str) -> None:
    if not isinstance(operator, DiffGCNOperator):
        raise ValueError(f"`operator` must be a DiffGCNOperator (DiffGCNOperator.build), got {type(operator).__name__}")
    if operator.num_nodes != num_nodes:
        raise ValueError(f"`operator` was built for {operator.num_nodes} nodes, but the features have {num_nodes}")
    if operator.operator_scale != operator_scale:
        raise ValueError(f"`operator` was built with operator_scale={operator.operator_scale!r}, "
                         f"but the layer uses {operator_scale!r}")


class DiffGCNConv(nn.Module):
    r"""The diffGCN operator: mass, gradient and Laplacian features of every channel on the graph
    ``edge_index`` over the points ``pos``, mixed by one (optionally grouped) 1x1 map. See the
    module docstring for the formulas and the normalisation.

    Not a :class:`~torch_geometric.nn.conv.MessagePassing`: its sums run as one batched or sparse
    product over all five features (:mod:`mgic_geo.nn.graph_operator`), not as a message /
    aggregate pair. PyG's conventions hold: ``edge_index`` is :math:`(2, E)` with
    ``flow="source_to_target"`` (row 0 the neighbour :math:`j`, row 1 the centre :math:`i`), or a
    sparse adjacency ``adj_t`` (:mod:`mgic_geo.nn.adjacency`), mean aggregation,
    ``reset_parameters()``. What does not apply: PyG's propagate hooks and explainers, other
    ``aggr`` choices (the gradient and Laplacian are weighted means by definition), and bipartite
    ``(x_src, x_dst)`` inputs (the operators need one point set with positions).

    Args:
        in_channels (int): input channels :math:`C_{in}`.
        out_channels (int): output channels :math:`C_{out}`.
        groups (int): groups of the 1x1 mixing; must divide both widths. (default: ``1``)
        bias (bool): learn an additive bias. (default: ``True``)
        operator_scale (str): ``"spacing"`` (gradient times the local point spacing) or
            ``"derivative"`` (module docstring). (default: ``"spacing"``)

    Shapes:
        - **input:** node features :math:`(N, C_{in})`, positions :math:`(N, 3)`,
          edge indices :math:`(2, E)` (source, target)
        - **output:** node features :math:`(N, C_{out})`

    Inputs (:mod:`mgic_geo.nn.inputs`): ``x`` floating point in the layer's dtype and on its device
    (any dtype under ``torch.autocast``), ``pos`` any floating-point dtype, :math:`N \ge 1`;
    ``edge_index`` node indices in ``[0, N)`` (checked once per tensor, :mod:`mgic_geo.nn.adjacency`).
    Anything else raises a ``ValueError`` naming the layer.

    ``forward(x, pos, edge_index, *, k=None, operator=None)``: pass ``k`` when ``edge_index`` lists
    exactly ``k`` edges per node, node by node (:func:`~mgic_geo.nn.knn_graph`'s output when every
    cloud has more than ``k`` points; the layout is checked without a host synchronisation), and
    ``operator``, a :class:`~mgic_geo.nn.DiffGCNOperator` of the same graph, to share it with other
    layers on that graph; without it the layer builds one per call. The sums then run as one sparse
    product (:mod:`mgic_geo.nn.graph_operator`); positions that need a gradient, ``torch.compile``
    and MAC counting use the gather formulation of :func:`differential_features`.
    """

    def __init__(self, in_channels: int, out_channels: int, *, groups: int = 1, bias: bool = True,
                 operator_scale: str = "spacing"):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            check_int(name, value)
        check_operator_scale(operator_scale)
        self.operator_scale = operator_scale
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"`groups`={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.mix = GroupedChannelMap(FEATURES_PER_CHANNEL * in_channels, out_channels, groups, bias=bias)

    def reset_parameters(self) -> None:
        self.mix.reset_parameters()

    def forward(self, x: Tensor, pos: Tensor, edge_index: Tensor, *, k: int | None = None,
                operator: DiffGCNOperator | None = None) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected node features [N, {self.in_channels}], got {tuple(x.shape)}")
        if pos.shape != (x.shape[0], 3):
            raise ValueError(f"expected positions [{x.shape[0]}, 3], got {tuple(pos.shape)}")
        check_features(type(self).__name__, "x", x, self)
        check_positions(type(self).__name__, pos, x)
        if operator is not None:
            check_operator(operator, x.shape[0], self.operator_scale)
        edge_index = as_edge_index(edge_index, x.shape[0], layer=type(self).__name__)
        if not operator_applies(pos):
            return self.mix(differential_features(x, pos, edge_index, k, operator_scale=self.operator_scale))
        if operator is None:
            operator = DiffGCNOperator.build(pos, edge_index, k=k, operator_scale=self.operator_scale)
        # The sparse product runs over C_out channels after the mix, or over 5 C_in before it.
        if FEATURES_PER_CHANNEL * self.in_channels < self.out_channels:
            return self.mix(self._features(x, operator))
        return self._mix_then_operate(x, operator)

    @staticmethod
    def _features(x: Tensor, operator: DiffGCNOperator) -> Tensor:
        """``[N, C]`` -> ``[N, 5 C]`` laid out (channel, feature), as :func:`differential_features`:
        one product of the operator with ``x`` placed in each feature's block (``[N, 5, 5 C]``,
        block-diagonal), cheap for the few input channels of a stem."""
        nodes, channels = x.shape
        eye = torch.eye(FEATURES_PER_CHANNEL, dtype=x.dtype, device=x.device)
        spread = (x[:, None, None, :] * eye[None, :, :, None]).reshape(nodes, FEATURES_PER_CHANNEL, -1)
        features = operator(spread)  # [N, 5 C] laid out (feature, channel)
        return features.view(nodes, FEATURES_PER_CHANNEL, channels).transpose(1, 2).reshape(nodes, -1)

    def _mix_then_operate(self, x: Tensor, operator: DiffGCNOperator) -> Tensor:
        """``mix([x | S_1 x | ... | S_4 x]) = M_0 x + sum_f S_f (M_f x)``: the node operators and
        the channel maps commute (:mod:`mgic_geo.nn.graph_operator`)."""
        groups, out_per_group, features = self.mix.weight.shape
        in_per_group = features // FEATURES_PER_CHANNEL
        # The mix's input channels are laid out (channel, feature): one grouped map per feature,
        # stacked as [groups, feature, out, in].
        weight = self.mix.weight.view(groups, out_per_group, in_per_group, FEATURES_PER_CHANNEL).permute(0, 3, 1, 2)
        if groups == 1:
            out = operator((x @ weight.reshape(FEATURES_PER_CHANNEL * out_per_group, in_per_group).t()).view(
                x.shape[0], FEATURES_PER_CHANNEL, self.out_channels))
        else:  # one product per super-group of output channels: no transposed copy of the five maps
            out = operator(grouped_maps_by_supergroup(x, weight))  # from [supergroups, N, feature, width]
        return out if self.mix.bias is None else out + self.mix.bias

    def __repr__(self) -> str:
        scale = "" if self.operator_scale == "spacing" else f", operator_scale={self.operator_scale!r}"
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, groups={self.groups}{scale})"

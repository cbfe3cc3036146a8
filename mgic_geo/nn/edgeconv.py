r"""DGCNN's EdgeConv with batch norm and activation, computed per node instead of per edge.

The layer is :math:`y_i = \max_{j \in \mathcal{N}(i)} \sigma(\mathrm{BN}(W_a x_i + W_b (x_j - x_i)))`
(DGCNN's :math:`h(x_i \,\|\, x_j - x_i)` with a bias-free linear :math:`h`, a BatchNorm over the
edges and a LeakyReLU). Three identities make every step per node:

* the linear part splits: :math:`W_a x_i + W_b (x_j - x_i) = a_i + b_j` with
  :math:`a = (W_a - W_b) x` and :math:`b = W_b x`, two products over nodes, none over edges. The
  layer learns those two maps directly (``centre`` :math:`= W_a - W_b` and ``offset``
  :math:`= W_b`), the same function class; with ``groups > 1`` both are grouped 1x1 maps, so
  output group :math:`g` sees only input group :math:`g` of :math:`x_i` and of :math:`x_j - x_i`
  (the level block of :class:`~mgic_geo.nn.MGICConv`);
* BatchNorm's batch statistics over the edges follow from per-node sums: the mean of
  :math:`a_i + b_j` over edges needs :math:`\sum_i \deg_i a_i` and :math:`\sum_i S_i` with
  :math:`S_i = \sum_{j \to i} b_j`, the mean square adds :math:`\sum_i \deg_i a_i^2 + 2 a_i S_i +
  Q_i` with :math:`Q_i = \sum_{j \to i} b_j^2`;
* BatchNorm is monotone per channel (increasing where its scale :math:`\gamma \ge 0`, decreasing
  where it is negative) and the activation is increasing, so
  :math:`\max_j \sigma(\mathrm{BN}(a_i + b_j)) = \sigma(\mathrm{BN}(a_i + \max_j b_j))` where
  :math:`\gamma \ge 0` and the same with :math:`\min_j b_j` elsewhere.

The result equals the per-edge computation (a test checks values, gradients and running
statistics). No ``[E, 2 C_in]`` edge features are built and nothing is normalised or activated per
edge; the only per-edge tensors are gathered ``[E, C_out]`` values of ``b`` for the sums and the
extremes. A node without incoming edges gets the activation of BN applied to :math:`a_i` alone
(its max over an empty set is taken as 0).

The identities need a batch norm and an increasing activation: with ``norm_layer`` building
:class:`torch.nn.BatchNorm1d` or :class:`torch.nn.SyncBatchNorm` (the latter after
:meth:`torch.nn.SyncBatchNorm.convert_sync_batchnorm`: the per-node sums are then all-reduced over
its process group) and ``act_layer`` one of :data:`INCREASING_ACTIVATIONS`, the layer runs per
node; any other norm or activation (``nn.GroupNorm``, ``nn.GELU``, ...) runs per edge: the
``[E, C_out]`` values :math:`a_i + b_j` are normalised, activated and max-reduced per node (a
node without incoming edges then gets 0).
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from torch import Tensor, nn

from mgic_geo.core.transfer import GroupedChannelMap
from mgic_geo.nn.adjacency import as_edge_index
from mgic_geo.nn.inputs import check_features
from mgic_geo.nn.knn import check_knn_layout
from mgic_geo.validation import check_int


class _NeighbourExtremes(torch.autograd.Function):
    """Per node and channel, the largest and the smallest ``b_j`` over its incoming edges.

    ``scatter_reduce``'s own backward for amax/amin re-gathers and compares every edge (most of a
    training step here); this one remembers the winning source node of every (node, channel) in
    the forward and sends the gradient straight there with one ``[N, C]`` scatter."""

    @staticmethod
    def forward(ctx, b: Tensor, source: Tensor, target: Tensor):
        edges = source.numel()
        neighbours = b[source]
        index = target[:, None].expand_as(neighbours)
        edge_ids = torch.arange(edges, device=b.device)[:, None]
        results, winners = [], []
        for reduce in ("amax", "amin"):
            extreme = torch.zeros_like(b).scatter_reduce_(0, index, neighbours, reduce, include_self=False)
            candidates = torch.where(neighbours == extreme[target], edge_ids, edges)
            first = torch.full_like(extreme, edges, dtype=torch.long).scatter_reduce_(0, index, candidates, "amin")
            results.append(extreme)
            winners.append(first)
        padded_source = torch.cat([source, source.new_zeros(1)])  # edge id E: no incoming edge
        ctx.save_for_backward(*(padded_source[w] for w in winners), *(w < edges for w in winners))
        return tuple(results)

    @staticmethod
    def backward(ctx, grad_largest: Tensor, grad_smallest: Tensor):
        source_of_largest, source_of_smallest, has_largest, has_smallest = ctx.saved_tensors
        grad_b = torch.zeros_like(grad_largest)
        grad_b.scatter_add_(0, source_of_largest, grad_largest * has_largest)
        grad_b.scatter_add_(0, source_of_smallest, grad_smallest * has_smallest)
        return grad_b, None, None


class _RegularNeighbourExtremes(torch.autograd.Function):
    """:class:`_NeighbourExtremes` for a graph with ``k`` edges per node, node by node: the
    extremes are reductions over ``[N, k, C]`` blocks, no scatters."""

    @staticmethod
    def forward(ctx, b: Tensor, source: Tensor, k: int):
        nodes, channels = b.shape
        neighbours = b.index_select(0, source).view(nodes, k, channels)
        largest, where_largest = neighbours.max(dim=1)
        smallest, where_smallest = neighbours.min(dim=1)
        sources = source.view(nodes, k)
        ctx.save_for_backward(sources.gather(1, where_largest), sources.gather(1, where_smallest))
        return largest, smallest

    @staticmethod
    def backward(ctx, grad_largest: Tensor, grad_smallest: Tensor):
        source_of_largest, source_of_smallest = ctx.saved_tensors
        grad_b = torch.zeros_like(grad_largest)
        grad_b.scatter_add_(0, source_of_largest, grad_largest)
        grad_b.scatter_add_(0, source_of_smallest, grad_smallest)
        return grad_b, None, None


# Activations that never decrease: max_j act(v_j) = act(max_j v_j). Exact types (a subclass may
# change forward); LeakyReLU and ELU only with a non-negative slope / alpha (checked per layer).
INCREASING_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Identity)
_BATCH_NORMS = (nn.BatchNorm1d, nn.SyncBatchNorm)
_NORM_KEYS = ("weight", "bias", "running_mean", "running_var")


def _norm_tensor(name: str) -> property:
    """A read-only view of the layer's norm's ``name`` (``None`` where that norm has none)."""
    return property(lambda self: getattr(self.norm, name, None), doc=f"``self.norm.{name}``")


def _is_increasing(act: nn.Module) -> bool:
    if type(act) not in INCREASING_ACTIVATIONS:
        return False
    if isinstance(act, nn.LeakyReLU):
        return act.negative_slope >= 0
    if isinstance(act, nn.ELU):
        return act.alpha >= 0
    return True


def _sync_group(norm: nn.Module):
    """The process group a SyncBatchNorm reduces over, or None when there is nothing to reduce."""
    if not isinstance(norm, nn.SyncBatchNorm) or not torch.distributed.is_available() \
            or not torch.distributed.is_initialized():
        return None
    group = norm.process_group or torch.distributed.group.WORLD
    return group if torch.distributed.get_world_size(group) > 1 else None


class _EdgeConvNormActBase(nn.Module):
    """What :class:`EdgeConvNormAct` and :class:`DynamicEdgeConvNormAct` share: parameters, init and
    the computation on a given graph; they differ in where the graph comes from."""

    def __init__(self, in_channels: int, out_channels: int, *, negative_slope: float = 0.2, eps: float = 1e-5,
                 momentum: float | None = 0.1, groups: int = 1,
                 norm_layer: Callable[[int], nn.Module] | None = None,
                 act_layer: Callable[[], nn.Module] | None = None):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            check_int(name, value)
        for name, value in (("norm_layer", norm_layer), ("act_layer", act_layer)):
            if value is not None and not callable(value):
                raise ValueError(f"`{name}` must be a callable or None, got {value!r}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.negative_slope = negative_slope
        self.centre = GroupedChannelMap(in_channels, out_channels, groups)  # W_a - W_b, applied to x_i
        self.offset = GroupedChannelMap(in_channels, out_channels, groups)  # W_b, applied to x_j
        norm_layer = norm_layer or partial(nn.BatchNorm1d, eps=eps, momentum=momentum)
        act_layer = act_layer or partial(nn.LeakyReLU, negative_slope)
        self.norm = norm_layer(out_channels)
        self.act = act_layer()
        self.reset_parameters()

    # The batch norm's tensors under the names this layer had before it held an nn.BatchNorm1d.
    weight, bias, running_mean, running_var = (_norm_tensor(name) for name in _NORM_KEYS)

    @property
    def per_node(self) -> bool:
        """Whether the forward runs per node (batch norm and increasing activation, module docstring)."""
        return type(self.norm) in _BATCH_NORMS and _is_increasing(self.act)

    def reset_parameters(self) -> None:
        # DGCNN's h(x_i || x_j - x_i) draws W_a and W_b from U(+-1/sqrt(2 C_in)): the same for
        # W_b, and W_a - W_b from the difference of two such draws.
        bound = 1.0 / (2 * self.in_channels // self.groups) ** 0.5
        nn.init.uniform_(self.offset.weight, -bound, bound)
        with torch.no_grad():
            self.centre.weight.uniform_(-bound, bound).sub_(self.offset.weight)
        if hasattr(self.norm, "reset_parameters"):
            self.norm.reset_parameters()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before the norm was a submodule hold its tensors as weight, bias, ...
        for key in _NORM_KEYS:
            if prefix + key in state_dict and prefix + "norm." + key not in state_dict:
                state_dict[prefix + "norm." + key] = state_dict.pop(prefix + key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _propagate(self, x: Tensor, edge_index: Tensor, k: int | None) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected node features [N, {self.in_channels}], got {tuple(x.shape)}")
        check_features(type(self).__name__, "x", x, self)
        edge_index = as_edge_index(edge_index, x.shape[0], layer=type(self).__name__)
        if k is not None:
            check_knn_layout(edge_index, x.shape[0], k)
        a, b = self.centre(x), self.offset(x)  # [N, C_out]: the x_i part and the x_j part
        if self.per_node:
            return self._per_node(a, b, edge_index, k)
        return self._per_edge(a, b, edge_index, k)

    def _per_edge(self, a: Tensor, b: Tensor, edge_index: Tensor, k: int | None) -> Tensor:
        source, target = edge_index[0], edge_index[1]
        h = self.act(self.norm(a.index_select(0, target) + b.index_select(0, source)))  # [E, C_out]
        if k is not None:
            return h.view(a.shape[0], k, h.shape[1]).amax(1)
        return h.new_zeros(a.shape[0], h.shape[1]).scatter_reduce(
            0, target[:, None].expand_as(h), h, "amax", include_self=False)

    def _per_node(self, a: Tensor, b: Tensor, edge_index: Tensor, k: int | None) -> Tensor:
        norm = self.norm
        source, target = edge_index[0], edge_index[1]
        if k is not None:
            largest, smallest = _RegularNeighbourExtremes.apply(b, source, k)
        else:
            largest, smallest = _NeighbourExtremes.apply(b, source, target)

        if norm.training or norm.running_mean is None:
            # Gathered again (the extremes gather inside their autograd function, whose backward
            # must not keep an [E, C] tensor); eval mode needs none of this.
            b_neighbours = b.index_select(0, source)
            if k is not None:
                degree = torch.full_like(a[:, :1], k)
                neighbour_sum = b_neighbours.view(-1, k, b.shape[1]).sum(1)
                neighbour_square_sum = b_neighbours.square().view(-1, k, b.shape[1]).sum(1)
            else:
                degree = torch.zeros_like(a[:, 0]).index_add_(0, target, torch.ones_like(b_neighbours[:, 0]))[:, None]
                neighbour_sum = torch.zeros_like(a).index_add_(0, target, b_neighbours)
                neighbour_square_sum = torch.zeros_like(a).index_add_(0, target, b_neighbours.square())
            edges = source.numel()
            total = (degree * a).sum(0) + neighbour_sum.sum(0)
            square_total = (degree * a.square() + 2 * a * neighbour_sum + neighbour_square_sum).sum(0)
            group = _sync_group(norm) if norm.training else None
            if group is not None:  # SyncBatchNorm: statistics over the edges of every process
                from torch.distributed.nn.functional import all_reduce

                count = torch.full_like(total[:1], edges)
                reduced = all_reduce(torch.cat([total, square_total, count]), group=group)
                total, square_total, edges = reduced[:-1].chunk(2)[0], reduced[:-1].chunk(2)[1], reduced[-1]
            mean = total / edges
            mean_square = square_total / edges
            var = (mean_square - mean.square()).clamp(min=0)
            if norm.training and norm.running_mean is not None:
                with torch.no_grad():
                    factor = norm.momentum
                    if norm.num_batches_tracked is not None:
                        norm.num_batches_tracked.add_(1)
                        if factor is None:  # cumulative average, as nn.BatchNorm1d
                            factor = 1.0 / float(norm.num_batches_tracked)
                    unbiased = var * edges / (edges - 1).clamp(min=1) if isinstance(edges, Tensor) \
                        else var * edges / max(edges - 1, 1)
                    # under autocast the statistics may be bf16/half while the buffers stay float32
                    norm.running_mean.lerp_(mean.to(norm.running_mean.dtype), factor)
                    norm.running_var.lerp_(unbiased.to(norm.running_var.dtype), factor)
        else:
            mean, var = norm.running_mean, norm.running_var
        weight = norm.weight if norm.weight is not None else torch.ones_like(mean)
        extreme = torch.where(weight >= 0, largest, smallest)
        normalised = (a + extreme - mean) * torch.rsqrt(var + norm.eps) * weight
        if norm.bias is not None:
            normalised = normalised + norm.bias
        return self.act(normalised)

    def __repr__(self) -> str:
        groups = f", groups={self.groups}" if self.groups > 1 else ""
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}{groups}{self._extra_repr_args()})"

    def _extra_repr_args(self) -> str:
        return ""


EDGE_CONV_ARGS_DOC = r"""
        in_channels (int): input channels :math:`C_{in}`.
        out_channels (int): output channels :math:`C_{out}`.
        negative_slope (float): slope of the default LeakyReLU, DGCNN's 0.2. (default: ``0.2``)
        eps (float): epsilon of the default BatchNorm. (default: ``1e-5``)
        momentum (float, optional): running-statistics momentum of the default BatchNorm.
            (default: ``0.1``)
        groups (int): channel groups of the linear part; must divide both widths. (default: ``1``)
        norm_layer (callable, optional): ``norm_layer(out_channels) -> nn.Module``, the norm over
            the edges. (default: :class:`torch.nn.BatchNorm1d` with ``eps`` and ``momentum``)
        act_layer (callable, optional): ``act_layer() -> nn.Module``. (default:
            :class:`torch.nn.LeakyReLU` with ``negative_slope``)"""


class EdgeConvNormAct(_EdgeConvNormActBase):
    __doc__ = r"""EdgeConv + norm + activation (DGCNN's layer: BatchNorm and LeakyReLU(0.2) by
    default), computed per node (module docstring).

    Not :class:`torch_geometric.nn.conv.EdgeConv`: that one takes an ``nn`` applied to
    materialised ``[E, 2 C_in]`` edge features; this one has fixed widths and learns the linear
    part itself, which is what lets it avoid per-edge tensors. It is not a
    :class:`~torch_geometric.nn.conv.MessagePassing` either (its reductions are the fused
    extremes and sums of the module docstring, not a message / aggregate pair), but follows its
    conventions: ``edge_index`` is :math:`(2, E)` with ``flow="source_to_target"`` (row 0 the
    neighbour :math:`j`, row 1 the centre :math:`i`) or a sparse adjacency ``adj_t``
    (:mod:`mgic_geo.nn.adjacency`), max aggregation (DGCNN's; the per-node decomposition needs
    it, so there is no ``aggr`` choice), ``reset_parameters()``. Bipartite ``(x_src, x_dst)``
    inputs are not taken: the offsets :math:`x_j - x_i` need one feature space.

    Args:""" + EDGE_CONV_ARGS_DOC + r"""

    ``forward(x, edge_index, *, k=None)``: pass ``k`` when ``edge_index`` lists exactly ``k``
    edges per node, node by node (:func:`~mgic_geo.nn.knn_graph`'s output when every cloud has more
    than ``k`` points): the neighbour reductions then run as ``[N, k]`` blocks, without scatters.
    Nothing in it synchronises with the host but the one check of the node indices of a graph not
    built by :func:`~mgic_geo.nn.knn_graph` (once per tensor, skipped under ``torch.compile``:
    :mod:`mgic_geo.nn.adjacency`), so ``torch.compile(fullgraph=True)`` works as it is.

    Inputs (:mod:`mgic_geo.nn.inputs`): ``x`` floating point in the layer's dtype and on its device
    (any dtype under ``torch.autocast``), :math:`N \ge 1`; node indices in ``[0, N)``. Anything else
    raises a ``ValueError`` naming the layer.

    Shapes:
        - **input:** node features :math:`(N, C_{in})`, edge indices :math:`(2, E)` (source, target)
        - **output:** node features :math:`(N, C_{out})`
    """

    def forward(self, x: Tensor, edge_index: Tensor, *, k: int | None = None) -> Tensor:
        return self._propagate(x, edge_index, k)

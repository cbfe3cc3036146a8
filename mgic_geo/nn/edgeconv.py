r"""DGCNN's EdgeConv with batch norm and activation, computed per node instead of per edge.

The layer is :math:`y_i = \max_{j \in \mathcal{N}(i)} \sigma(\mathrm{BN}(W_a x_i + W_b (x_j - x_i)))`
(DGCNN's :math:`h(x_i \,\|\, x_j - x_i)` with a bias-free linear :math:`h`, a BatchNorm over the
edges and a LeakyReLU). Three identities make every step per node (DESIGN.md section 3):

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
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mgic_geo.core.transfer import GroupedChannelMap
from mgic_geo.nn.knn import check_knn_layout


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


class EdgeConv(nn.Module):
    r"""EdgeConv + BatchNorm + LeakyReLU with the per-node decomposition (module docstring).

    Args:
        in_channels (int): input channels :math:`C_{in}`.
        out_channels (int): output channels :math:`C_{out}`.
        negative_slope (float): LeakyReLU slope, DGCNN's 0.2. (default: ``0.2``)
        eps (float): BatchNorm epsilon. (default: ``1e-5``)
        momentum (float): BatchNorm running-statistics momentum. (default: ``0.1``)
        groups (int): channel groups of the linear part; must divide both widths. (default: ``1``)

    ``forward(x, edge_index, *, k=None)``: pass ``k`` when ``edge_index`` lists exactly ``k``
    edges per node, node by node (:func:`~mgic_geo.nn.knn_graph`'s output when every cloud has more
    than ``k`` points): the neighbour reductions then run as ``[N, k]`` blocks, without scatters.

    Shapes:
        - **input:** node features :math:`(N, C_{in})`, edge indices :math:`(2, E)` (source, target)
        - **output:** node features :math:`(N, C_{out})`
    """

    def __init__(self, in_channels: int, out_channels: int, *, negative_slope: float = 0.2, eps: float = 1e-5,
                 momentum: float = 0.1, groups: int = 1):
        super().__init__()
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.negative_slope, self.eps, self.momentum = negative_slope, eps, momentum
        self.centre = GroupedChannelMap(in_channels, out_channels, groups)  # W_a - W_b, applied to x_i
        self.offset = GroupedChannelMap(in_channels, out_channels, groups)  # W_b, applied to x_j
        self.weight = nn.Parameter(torch.empty(out_channels))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.register_buffer("running_mean", torch.zeros(out_channels))
        self.register_buffer("running_var", torch.ones(out_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # DGCNN's h(x_i || x_j - x_i) draws W_a and W_b from U(+-1/sqrt(2 C_in)): the same for
        # W_b, and W_a - W_b from the difference of two such draws.
        bound = 1.0 / (2 * self.in_channels // self.groups) ** 0.5
        nn.init.uniform_(self.offset.weight, -bound, bound)
        with torch.no_grad():
            self.centre.weight.uniform_(-bound, bound).sub_(self.offset.weight)
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)
        self.running_mean.zero_()
        self.running_var.fill_(1.0)

    def forward(self, x: Tensor, edge_index: Tensor, *, k: int | None = None) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected node features [N, {self.in_channels}], got {tuple(x.shape)}")
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"expected edge_index [2, E], got {tuple(edge_index.shape)}")
        source, target = edge_index[0], edge_index[1]
        a, b = self.centre(x), self.offset(x)  # [N, C_out]: the x_i part and the x_j part
        if k is not None:
            check_knn_layout(edge_index, x.shape[0], k)
            largest, smallest = _RegularNeighbourExtremes.apply(b, source, k)
        else:
            largest, smallest = _NeighbourExtremes.apply(b, source, target)

        if self.training:
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
            mean = ((degree * a).sum(0) + neighbour_sum.sum(0)) / edges
            mean_square = (degree * a.square() + 2 * a * neighbour_sum + neighbour_square_sum).sum(0) / edges
            var = (mean_square - mean.square()).clamp(min=0)
            with torch.no_grad():
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * edges / max(edges - 1, 1), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        extreme = torch.where(self.weight >= 0, largest, smallest)
        normalised = (a + extreme - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias
        return F.leaky_relu(normalised, self.negative_slope)

    def __repr__(self) -> str:
        groups = f", groups={self.groups}" if self.groups > 1 else ""
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}{groups})"

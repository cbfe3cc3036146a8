"""The clouds of a point batch: kNN graphs, subsampling and global pooling per cloud.

A batch is PyG's flat layout, ``pos [N, 3]`` with a sorted ``batch [N]``. When every cloud has the
same, known size (``cloud_size``: a ModelNet batch), everything below is reshapes of
``[clouds, size, C]`` tensors: no host synchronisation and nothing ``torch.compile`` must break on.
Otherwise the sizes are read from ``batch`` once (one host synchronisation) and the scatter
versions are used.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch_geometric.utils import scatter

from mgic_geo.nn import cost
from mgic_geo.nn.graph_operator import DiffGCNOperator, SparseMatrix, operator_applies
from mgic_geo.nn.inputs import check_features
from mgic_geo.nn.knn import knn_graph, regular_degree


@dataclass(frozen=True)
class Clouds:
    """Which point belongs to which cloud: ``count`` clouds, ``batch`` per point (``None``: one
    cloud), ``size`` points each when they are all equal (else ``None``)."""

    count: int
    batch: Tensor | None
    size: int | None
    device: torch.device

    @classmethod
    def of(cls, pos: Tensor, batch: Tensor | None, cloud_size: int | None = None, *,
           model: torch.nn.Module | None = None) -> Clouds:
        """The clouds of ``pos`` and ``batch``; with ``model``, ``pos`` is checked against its
        parameters' dtype and device too (:func:`~mgic_geo.nn.inputs.check_features`)."""
        if not isinstance(pos, Tensor) or pos.dim() != 2 or pos.shape[1] != 3:
            shape = tuple(pos.shape) if isinstance(pos, Tensor) else type(pos).__name__
            raise ValueError(f"`pos` must be a floating-point [N, 3] tensor, got {shape}")
        points = pos.shape[0]
        if points == 0:
            raise ValueError("`pos` holds no points: every cloud needs at least one")
        if model is not None:
            check_features(type(model).__name__, "pos", pos, model)
        if not pos.is_floating_point():
            raise ValueError(f"`pos` must be a floating-point [N, 3] tensor, got dtype {pos.dtype}")
        if batch is not None and (not isinstance(batch, Tensor) or batch.shape != (points,) or batch.is_floating_point()):
            shape = tuple(batch.shape) if isinstance(batch, Tensor) else type(batch).__name__
            raise ValueError(f"`batch` must be an integer vector with one entry per point ({points}), got {shape}")
        if cloud_size is not None:
            if points % cloud_size:
                raise ValueError(f"the model expects clouds of {cloud_size} points (`num_points`), "
                                 f"but the batch has {points} points, not a multiple of it")
            return cls(points // cloud_size, batch, cloud_size, pos.device)
        if batch is None:
            return cls(1, None, points, pos.device)
        sizes = torch.bincount(batch)
        if bool((sizes == 0).any()) or bool((batch[1:] < batch[:-1]).any()):
            raise ValueError("`batch` must number the clouds 0, 1, 2, ... with each cloud's points contiguous, "
                             "as PyG's DataLoader makes it")
        equal = bool((sizes == sizes[0]).all())
        return cls(sizes.numel(), batch, int(sizes[0]) if equal else None, pos.device)

    def knn(self, x: Tensor, k: int) -> Tensor:
        return knn_graph(x, k, self.batch, cloud_size=self.size)

    def regular_degree(self, k: int) -> int | None:
        """``k`` when :meth:`knn` gives every point exactly ``k`` neighbours, listed point by point."""
        return regular_degree(k, self.size)

    def diffgcn_operator(self, pos: Tensor, graph: Tensor, k: int,
                         operator_scale: str = "spacing") -> DiffGCNOperator | None:
        """The diffGCN operator of ``graph`` (:meth:`knn` with ``k``), built once for every layer on it;
        ``None`` where the layers use their gather formulation
        (:func:`~mgic_geo.nn.graph_operator.operator_applies`)."""
        if not operator_applies(pos):
            return None
        return DiffGCNOperator.build(pos, graph, k=self.regular_degree(k), operator_scale=operator_scale)

    def pool(self, x: Tensor, reduce: str) -> Tensor:
        """``[N, C]`` -> ``[clouds, C]``: ``"max"`` or ``"mean"`` over each cloud."""
        if self.size is not None:
            per_cloud = x.view(self.count, self.size, x.shape[1])
            return per_cloud.amax(1) if reduce == "max" else per_cloud.mean(1)
        if self.batch is None:
            return x.amax(0, keepdim=True) if reduce == "max" else x.mean(0, keepdim=True)
        return scatter(x, self.batch, 0, self.count, reduce)

    def global_pool(self, x: Tensor) -> Tensor:
        """``[N, C]`` -> ``[clouds, 2 C]``: max and mean over each cloud, side by side (DGCNN)."""
        return torch.cat([self.pool(x, "max"), self.pool(x, "mean")], dim=1)

    def subsample(self, pos: Tensor) -> tuple[Tensor, Clouds]:
        """Keep ``ceil(n / 2)`` points of every cloud: their indices and their clouds.

        The kept half is chosen by a hash of each point's coordinates (:func:`position_hash`): a
        random-looking half that depends on the points only, not on their order, so a network
        that subsamples stays invariant to the order of its input points, and training's
        augmentation (which moves the points) draws a new half every step."""
        score = position_hash(pos)
        if self.size is not None:
            kept = (self.size + 1) // 2
            local = torch.topk(score.view(self.count, self.size), kept, dim=1).indices.sort(dim=1).values
            index = (local + torch.arange(self.count, device=pos.device)[:, None] * self.size).flatten()
            batch = None if self.batch is None else self.batch[index]
            return index, Clouds(self.count, batch, kept, self.device)
        sizes = torch.bincount(self.batch, minlength=self.count)
        order = torch.argsort(self.batch.to(score.dtype) * 2 - score, stable=True)  # by cloud, best first
        starts = torch.cumsum(sizes, 0) - sizes
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), device=order.device) - starts[self.batch[order]]
        index = (rank < (sizes[self.batch] + 1) // 2).nonzero().flatten()
        return index, Clouds(self.count, self.batch[index], None, self.device)


def position_hash(pos: Tensor) -> Tensor:
    """A pseudo-random score in ``[0, 1)`` per point from its coordinates (the classic
    ``fract(sin(p . a) * 43758.5453)``), computed in float64 so nearby points decorrelate."""
    angle = pos.double() @ torch.tensor([12.9898, 78.233, 37.719], dtype=torch.float64, device=pos.device)
    return torch.frac(torch.sin(angle).abs() * 43758.5453)


def neighbourhood_mean(x: Tensor, edge_index: Tensor, at: Tensor | None = None, k: int | None = None) -> Tensor:
    """Mean of ``x`` over each node and the sources of its incoming edges, at the nodes ``at``
    (default: all). With ``k`` (``k`` edges per node, node by node) it is one sparse product over the
    rows of ``at`` only, differentiated as the transposed product (:class:`~mgic_geo.nn.graph_operator.SparseMatrix`)."""
    if k is not None:
        rows = x.shape[0] if at is None else at.numel()
        nodes = torch.arange(x.shape[0], device=x.device) if at is None else at
        cols = torch.cat([edge_index[0].view(-1, k)[nodes], nodes[:, None]], 1).flatten()
        if torch.compiler.is_compiling() or cost.counting_now():  # see mgic_geo.nn.graph_operator
            return x.index_select(0, cols).view(rows, k + 1, x.shape[1]).mean(1)
        with torch.no_grad():
            pooling = SparseMatrix.from_entries(
                torch.arange(rows, device=x.device).repeat_interleave(k + 1), cols,
                torch.full((cols.numel(),), 1.0 / (k + 1), dtype=x.dtype, device=x.device), (rows, x.shape[0]),
                rows_sorted=True)
        return pooling @ x
    if at is not None:
        return neighbourhood_mean(x, edge_index)[at]
    source, target = edge_index[0], edge_index[1]
    total = x.clone().index_add_(0, target, x[source])
    count = torch.ones_like(x[:, :1]).index_add_(0, target, torch.ones_like(x[source, :1]))
    return total / count

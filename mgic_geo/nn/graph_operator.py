r"""diffGCN's differential operators of one graph, built once and applied as a sparse product.

The gradient and Laplacian features of :class:`~mgic_geo.nn.DiffGCNConv` are linear in the node
features: for operator :math:`f` (three gradient components and the Laplacian) the feature of node
:math:`i` is :math:`\sum_j w^f_{ij} x_j - x_i \sum_j w^f_{ij}`, with edge weights that depend on
the graph and the positions only. :class:`DiffGCNOperator` stores the identity (the mass term) and
the four operators side by side as one sparse CSR matrix of shape ``[N, 5 N]`` (per row: one mass
entry and, per operator, ``k + 1`` entries: the neighbours and the diagonal
:math:`-\sum_j w^f_{ij}`; columns node-major), and its transpose, built at the first backward.

Why: a diffGCN layer, and every level of an MGIC V-cycle, on one graph used to gather ``[N, k, C]``
neighbour features and recompute the same edge weights; its backward scattered them back
(``index_add_``). Built once per graph, the operator is shared by every level and every layer on
that graph, and each application is one sparse-dense product (backward: the transposed product,
with nothing stored for it). Because the operators act on nodes and the learned 1x1 mix acts on
channels, they commute: :class:`~mgic_geo.nn.DiffGCNConv` first maps the input to the five feature
blocks of the output width (mass and the four operators), then applies the matrix once to them;
the output is the same sum in another order (tested to float tolerance, values and gradients), and
no ``[N, 5 C]`` feature tensor is stored for backward. A layer with few input channels (``5 C_in <
C_out``, a stem on the positions) applies it to the input's blocks before the mix instead.

What it changed is measured by ``mgic-geo bench modelnet`` (training steps of the Table-6 networks,
side by side with the networks before it in ``docs/benchmarks.md``).

Limits: positions that require a gradient (the weights would have to be differentiated),
``torch.compile`` (sparse tensors break its graphs) and MAC counting (:func:`mgic_geo.complexity.profile`
would count a sparse product as a dense one) use the gather formulation of
:func:`~mgic_geo.nn.diffgcn.differential_features` instead; layers choose by :func:`operator_applies`.
The CPU sparse kernels take float32 and float64 only, so half and bfloat16 features are multiplied
in float32 and cast back.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from mgic_geo.nn import cost
from mgic_geo.nn.knn import check_knn_layout

EPSILON = 1e-12
OPERATOR_SCALES = ("spacing", "derivative")
OPERATORS = 4  # three gradient components and the Laplacian


def check_operator_scale(operator_scale: str) -> str:
    if operator_scale not in OPERATOR_SCALES:
        raise ValueError(f"`operator_scale` must be one of {OPERATOR_SCALES}, got {operator_scale!r}")
    return operator_scale


def _direction_weights(offsets: Tensor, operator_scale: str, neighbour_dim: int | None,
                      target: Tensor | None = None, inverse_degree: Tensor | None = None) -> Tensor:
    """``d / |d|^2`` per edge, times the target's mean neighbour distance for ``"spacing"``
    (:mod:`mgic_geo.nn.diffgcn`). ``offsets`` is ``[N, k, 3]`` (``neighbour_dim=1``) or ``[E, 3]``
    with ``target`` and ``inverse_degree``."""
    squared = offsets.square().sum(-1, keepdim=True)
    direction = offsets / (squared + EPSILON)
    if operator_scale == "derivative":
        return direction
    distance = squared.sqrt()
    if neighbour_dim is not None:
        return direction * distance.mean(neighbour_dim, keepdim=True)
    spacing = torch.zeros_like(inverse_degree).index_add_(0, target, distance[:, 0]) * inverse_degree
    return direction * spacing[target, None]


def edge_weights(pos: Tensor, edge_index: Tensor, k: int | None, operator_scale: str) -> Tensor:
    """The four operators' weights of every edge: ``[N, k, 4]`` for a regular graph (``k``: ``k``
    edges per node, node by node), else ``[E, 4]``; ``3 / deg * direction`` and ``1 / deg``."""
    source, target = edge_index[0], edge_index[1]
    if k is not None:
        nodes = pos.shape[0]
        offsets = pos.index_select(0, source).view(nodes, k, 3) - pos[:, None, :]
        direction = _direction_weights(offsets, operator_scale, 1)
        return torch.cat([3.0 * direction, torch.ones_like(direction[..., :1])], dim=-1) / k
    degree = torch.zeros(pos.shape[0], dtype=pos.dtype, device=pos.device).index_add_(
        0, target, torch.ones_like(target, dtype=pos.dtype))
    inverse_degree = 1.0 / degree.clamp(min=1)
    direction = _direction_weights(pos[source] - pos[target], operator_scale, None, target, inverse_degree)
    return torch.cat([3.0 * direction, torch.ones_like(direction[:, :1])], dim=1) * inverse_degree[target, None]


def operator_applies(pos: Tensor) -> bool:
    """Whether the sparse operator may replace the gather formulation here (module docstring)."""
    if pos.requires_grad and torch.is_grad_enabled():
        return False
    return not (torch.compiler.is_compiling() or cost.counting_now())


def _csr(crow: Tensor, cols: Tensor, values: Tensor, shape: tuple[int, int], sort_columns: bool | None = None) -> Tensor:
    """A CSR tensor. Each row's columns are sorted first when ``sort_columns``, by default off the
    CPU: MKL, on the CPU, takes them in any order (tested), while this package has not verified
    that every cuSPARSE algorithm does."""
    if sort_columns is None:
        sort_columns = crow.device.type != "cpu"
    if sort_columns:
        rows = torch.repeat_interleave(torch.arange(shape[0], device=crow.device), crow.diff())
        order = torch.argsort(rows * shape[1] + cols)
        cols, values = cols[order], values[order]
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the products used here are stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, cols, values, shape, check_invariants=False)


def _counts(keys: Tensor, num_nodes: int) -> Tensor:
    """How many entries each of ``num_nodes`` nodes has in ``keys`` (no host synchronisation)."""
    return torch.zeros(num_nodes, dtype=torch.int64, device=keys.device).index_add_(0, keys, torch.ones_like(keys))


def _runs(keys: Tensor, num_nodes: int) -> tuple[Tensor, Tensor, Tensor]:
    """For sorted ``keys``: each node's entry count, where its run starts, and each entry's rank in its run."""
    counts = _counts(keys, num_nodes)
    starts = counts.cumsum(0) - counts
    return counts, starts, torch.arange(keys.numel(), device=keys.device) - starts[keys]


class SparseMatrix:
    """A constant sparse CSR matrix and its transpose, so that ``matrix @ x`` differentiates in
    ``x`` as one transposed product, with nothing else stored for backward. The transpose is
    built by ``transpose_builder`` when first needed: evaluation without gradients never builds it.
    """

    def __init__(self, matrix: Tensor, transpose_builder: Callable[[], Tensor]):
        self.matrix = matrix
        self._transpose_builder: Callable[[], Tensor] | None = transpose_builder
        self._transpose: Tensor | None = None

    @property
    def transpose(self) -> Tensor:
        if self._transpose is None:
            with torch.no_grad():
                self._transpose = self._transpose_builder()
            self._transpose_builder = None  # drop what it holds
        return self._transpose

    @classmethod
    def from_entries(cls, rows: Tensor, cols: Tensor, values: Tensor, shape: tuple[int, int], *,
                     rows_sorted: bool = False) -> SparseMatrix:
        """The matrix with ``values[e]`` at ``(rows[e], cols[e])`` (duplicates add up)."""
        matrix = _sorted_csr(rows, cols, values, shape, None if rows_sorted else torch.argsort(rows, stable=True))
        return cls(matrix, lambda: _sorted_csr(cols, rows, values, shape[::-1], torch.argsort(cols, stable=True)))

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.matrix.shape)

    def __matmul__(self, dense: Tensor) -> Tensor:
        if dense.dim() != 2 or dense.shape[0] != self.matrix.shape[1]:
            raise ValueError(f"expected a dense [{self.matrix.shape[1]}, C] operand, got {tuple(dense.shape)}")
        return _SparseProduct.apply(dense[None], self)


def _sorted_csr(rows: Tensor, cols: Tensor, values: Tensor, shape, order: Tensor | None) -> Tensor:
    if order is not None:
        rows, cols, values = rows[order], cols[order], values[order]
    counts = _counts(rows, shape[0])
    return _csr(torch.cat([counts.new_zeros(1), counts.cumsum(0)]), cols, values, tuple(shape))


def _operator_matrices(rows: Tensor, cols: Tensor, values: Tensor, num_nodes: int,
                       slots_per_node: int | None) -> SparseMatrix:
    """The CSR matrix ``[N, 5 N]`` and its transpose from the graph's slots: slot ``e`` (an edge or a
    node's diagonal) puts ``values[e, f]`` at row ``rows[e]``, column ``5 cols[e] + 1 + f`` for
    operator ``f``; column ``5 n`` of row ``n`` holds the mass term, 1. Columns are node-major, so
    ``S @ y.view(5 N, C)`` reads ``y [N, 5 C]`` (per node: mass, then the four operator blocks) as
    it is laid out. ``slots_per_node``: the slots come node by node, that many each (no sorting)."""
    device, slots = rows.device, rows.numel()
    nodes = torch.arange(num_nodes, device=device)
    operator = torch.arange(OPERATORS, device=device)
    entries = OPERATORS * slots + num_nodes
    ones = torch.ones(num_nodes, dtype=values.dtype, device=device)

    def assemble(mass_at: Tensor, mass_col: Tensor, slot_at: Tensor, slot_cols: Tensor, slot_values: Tensor):
        # two scatter_ calls: several times faster on the CPU than index assignment, and no cat
        slot_at = slot_at.flatten()
        indices = torch.empty(entries, dtype=torch.int64, device=device)
        indices.scatter_(0, mass_at, mass_col).scatter_(0, slot_at, slot_cols.flatten())
        data = torch.empty(entries, dtype=values.dtype, device=device)
        data.scatter_(0, mass_at, ones).scatter_(0, slot_at, slot_values.flatten())
        return indices, data

    # Forward: row n is [mass, then each slot's four operators], slots in order.
    if slots_per_node is not None:  # already in row order: lay the rows out directly
        per_row = 1 + OPERATORS * slots_per_node
        crow = torch.arange(0, entries + 1, per_row, device=device)
        indices = torch.cat([5 * nodes[:, None], (5 * cols.view(num_nodes, slots_per_node, 1) + 1 + operator)
                             .view(num_nodes, -1)], 1).flatten()
        data = torch.cat([ones[:, None], values.view(num_nodes, -1)], 1).flatten()
    else:
        order = torch.argsort(rows, stable=True)
        keys, others, vals = rows[order], cols[order], values[order]
        counts, starts, rank = _runs(keys, num_nodes)
        row_start = OPERATORS * starts + nodes  # each earlier row also holds one mass entry
        crow = torch.cat([row_start, row_start.new_full((1,), entries)])
        slot_at = (row_start[keys] + 1 + OPERATORS * rank)[:, None] + operator
        indices, data = assemble(row_start, 5 * nodes, slot_at, 5 * others[:, None] + 1 + operator, vals)
    matrix = _csr(crow, indices, data, (num_nodes, 5 * num_nodes))

    def transpose() -> Tensor:  # row (m, 0) is the mass entry; row (m, f) lists the slots of column m
        order = torch.argsort(cols, stable=True)
        keys, others, vals = cols[order], rows[order], values[order]
        counts, starts, rank = _runs(keys, num_nodes)
        base = OPERATORS * starts + nodes
        block_start = base[:, None] + 1 + operator * counts[:, None]  # [N, 4]
        crow_t = torch.cat([torch.cat([base[:, None], block_start], 1).flatten(), base.new_full((1,), entries)])
        slot_at = block_start[keys] + rank[:, None]
        indices, data = assemble(base, nodes, slot_at, others[:, None].expand(-1, OPERATORS), vals)
        return _csr(crow_t, indices, data, (5 * num_nodes, num_nodes))

    return SparseMatrix(matrix, transpose)


@dataclass(frozen=True, eq=False)
class DiffGCNOperator:
    r"""The four differential operators of one graph as one sparse matrix (module docstring).

    Build it with :meth:`build`; :class:`~mgic_geo.nn.DiffGCNConv`, ``DiffGCNNormAct`` and
    :class:`~mgic_geo.nn.MGICConv` take it as ``operator=`` and then use it instead of
    ``pos``/``edge_index`` (:class:`~mgic_geo.nn.MGICConv` builds one per call by itself and shares
    it between its levels).

    Attributes:
        product: the :class:`SparseMatrix` ``[N, 5 N]``; column ``5 j`` of row ``i`` is the mass
            term (1 where ``i = j``) and column ``5 j + f`` operator ``f``'s weight of node ``j``.
        num_nodes: ``N``.
        degree: edges per node counted in the MACs report (``k``, or the mean degree).

    Shapes:
        - **input of** ``__call__``: ``[N, 5, C]``, per node the mass block :math:`y_0` and the
          four operator blocks :math:`y_1 .. y_4`
        - **output:** ``[N, C]``, :math:`y_0 + \sum_f S_f y_f`
    """

    product: SparseMatrix
    num_nodes: int
    degree: float
    operator_scale: str

    @classmethod
    def build(cls, pos: Tensor, edge_index: Tensor, *, k: int | None = None,
              operator_scale: str = "spacing") -> DiffGCNOperator:
        """The operator of the graph ``edge_index`` (``[2, E]``, source and target) over the points
        ``pos`` (``[N, 3]``); ``k`` as :class:`~mgic_geo.nn.DiffGCNConv` (``k`` edges per node,
        node by node: no sort for the forward matrix)."""
        check_operator_scale(operator_scale)
        nodes = pos.shape[0]
        if k is not None:
            check_knn_layout(edge_index, nodes, k)
        with torch.no_grad():
            weights = edge_weights(pos, edge_index, k, operator_scale)  # [N, k, 4] or [E, 4]
            node_range = torch.arange(nodes, device=pos.device)
            if k is not None:  # slots node by node: k neighbours, then the diagonal
                diagonal = -weights.sum(1, keepdim=True)
                values = torch.cat([weights, diagonal], 1).flatten(0, 1)
                rows = node_range.repeat_interleave(k + 1)
                cols = torch.cat([edge_index[0].view(nodes, k), node_range[:, None]], 1).flatten()
            else:
                diagonal = torch.zeros(nodes, OPERATORS, dtype=weights.dtype, device=pos.device).index_add_(
                    0, edge_index[1], -weights)
                values = torch.cat([weights, diagonal])
                rows, cols = torch.cat([edge_index[1], node_range]), torch.cat([edge_index[0], node_range])
            product = _operator_matrices(rows, cols, values, nodes, None if k is None else k + 1)
        degree = float(k) if k is not None else edge_index.shape[1] / max(nodes, 1)
        return cls(product, nodes, degree, operator_scale)

    def __call__(self, y: Tensor) -> Tensor:
        """``[N, 5, C]`` -> ``[N, C]``; or ``[B, N, 5, w]`` (``B`` channel blocks, as a grouped map's
        super-groups leave them) -> ``[N, B w]``, the blocks side by side."""
        blocks = y[None] if y.dim() == 3 else y
        if blocks.dim() != 4 or blocks.shape[1:3] != (self.num_nodes, OPERATORS + 1):
            raise ValueError(f"expected blocks [{self.num_nodes}, {OPERATORS + 1}, C] or "
                             f"[B, {self.num_nodes}, {OPERATORS + 1}, w], got {tuple(y.shape)}")
        count, _, _, width = blocks.shape
        cost.report("graph operators", int(self.num_nodes * count * width * self.degree * OPERATORS))
        return _SparseProduct.apply(blocks.reshape(count, (OPERATORS + 1) * self.num_nodes, width), self.product)


def _multiply(matrix: Tensor, dense: Tensor, out: Tensor | None = None) -> Tensor:
    """``matrix @ dense``, into ``out`` when given. The CPU sparse kernels take float32 and float64
    only: other dtypes are multiplied in float32."""
    compute = dense if dense.dtype in (torch.float32, torch.float64) else dense.float()
    if matrix.dtype != compute.dtype:
        matrix = matrix.to(compute.dtype)
    if out is not None and out.dtype == compute.dtype:
        result = out
    else:  # addmm with beta=0 into an empty tensor: `matrix @ dense` would zero-fill its result first
        result = compute.new_empty(matrix.shape[0], compute.shape[1])
    with torch.autocast(dense.device.type, enabled=False):  # autocast would cast the product back to half
        torch.addmm(result, matrix, compute.contiguous(), beta=0, out=result)
    if out is None:
        return result.to(dense.dtype)
    if result is not out:
        out.copy_(result)
    return out


class _SparseProduct(torch.autograd.Function):
    """``S @ y_b`` for every block ``b`` of ``y`` (``[B, cols, w]``), side by side as ``[rows, B w]``;
    backward ``S^T @ grad`` block by block, straight into one ``[B, cols, w]`` gradient (no stacking
    copy). Nothing but the matrices is kept for it."""

    @staticmethod
    def forward(blocks: Tensor, sparse: SparseMatrix) -> Tensor:
        if blocks.shape[0] == 1:
            return _multiply(sparse.matrix, blocks[0])
        return torch.cat([_multiply(sparse.matrix, block) for block in blocks.unbind(0)], dim=1)

    @staticmethod
    def backward(ctx, grad: Tensor):
        transpose = ctx.sparse.transpose
        count, width = grad.shape[1] // ctx.width, ctx.width
        result = grad.new_empty(count, transpose.shape[0], width)
        for block in range(count):
            _multiply(transpose, grad[:, block * width:(block + 1) * width], out=result[block])
        return result, None

    @staticmethod
    def setup_context(ctx, inputs, output):
        blocks, sparse = inputs
        ctx.sparse, ctx.width = sparse, blocks.shape[2]

"""The graph arguments the layers accept, in PyG's conventions.

Every layer of :mod:`mgic_geo.nn` that takes a graph takes what PyG's ``MessagePassing`` layers take:

* ``edge_index``, an integer tensor :math:`(2, E)`: row 0 the source (neighbour) :math:`j`, row 1
  the target (centre) :math:`i` of each edge (``flow="source_to_target"``);
* a sparse adjacency ``adj_t`` of shape :math:`(N, N)` (a ``torch.sparse`` COO/CSR/CSC tensor, or
  a ``torch_sparse.SparseTensor`` where that package is installed), transposed as in PyG:
  ``adj_t[i, j]`` is the edge from :math:`j` to :math:`i`. Its values are ignored (the layers
  weight their edges themselves), as PyG's unweighted layers ignore them.

Node indices are checked once per graph tensor: an ``edge_index`` that a layer is given holds
indices in ``[0, N)`` for its ``N`` nodes, else :func:`as_edge_index` raises a ``ValueError``
naming the layer, the bad index and the valid range (PyG would wrap a negative index around to
another node, or raise a bare ``IndexError``). The check is one ``torch.aminmax`` and one host
synchronisation. It is skipped where it cannot change the answer: for graphs of
:func:`~mgic_geo.nn.knn_graph` (valid by construction: the dynamic layers and the networks, which
build their own graphs, never pay for it) and for a tensor already checked for at least as many
nodes, as long as it was not modified in place since (its version counter); so a fixed graph used
for many steps, or by every level of an :class:`~mgic_geo.nn.MGICConv`, is checked once. Under
``torch.compile`` and ``torch.jit`` tracing it is skipped too (it needs a host synchronisation,
i.e. a graph break): check graphs in eager mode there. Sparse adjacencies are checked against their
``[N, N]`` shape (their indices are within it by construction).
"""
from __future__ import annotations

import torch
from torch import Tensor

from mgic_geo.validation import check_int

SPARSE_LAYOUTS = (torch.sparse_coo, torch.sparse_csr, torch.sparse_csc)


# The attribute a checked (or kNN-built) edge_index carries: (node bound, version counter).
_CHECKED = "_mgic_geo_valid_below"


def as_edge_index(graph, num_nodes: int, *, layer: str = "layer") -> Tensor:
    """``graph`` (module docstring) as an ``edge_index`` :math:`(2, E)`, grouped by target where it
    was a sparse adjacency.

    Args:
        graph (torch.Tensor or SparseTensor): ``edge_index`` or ``adj_t``.
        num_nodes (int): the number of nodes :math:`N`.
        layer (str): the name errors start with. (default: ``"layer"``)

    Raises:
        ValueError: naming ``layer``, for anything but an integer ``[2, E]`` tensor or an
            ``[N, N]`` sparse adjacency, and for node indices outside ``[0, N)`` (checked once per
            tensor, not under ``torch.compile``: module docstring).
    """
    check_int("num_nodes", num_nodes, minimum=0)
    if type(graph).__name__ == "SparseTensor" and hasattr(graph, "coo"):  # torch_sparse, optional
        _check_square(tuple(graph.sizes()), num_nodes, layer)
        row, col, _ = graph.coo()
        return mark_valid(_stack(col, row), num_nodes)  # within [N, N] by construction
    if not isinstance(graph, Tensor):
        raise ValueError(f"{layer}: `edge_index` must be a [2, E] integer tensor or a sparse [N, N] adjacency, "
                         f"got {type(graph).__name__}")
    if graph.layout in SPARSE_LAYOUTS:
        _check_square(tuple(graph.shape), num_nodes, layer)
        from torch_geometric.utils import to_edge_index

        adjacency, _ = to_edge_index(graph.to_sparse_csr() if graph.layout == torch.sparse_csc else graph)
        return mark_valid(_stack(adjacency[1], adjacency[0]), num_nodes)  # within [N, N] by construction
    if graph.dim() != 2 or graph.shape[0] != 2:
        raise ValueError(f"{layer}: expected edge_index [2, E], got {tuple(graph.shape)}")
    if graph.dtype.is_floating_point or graph.dtype.is_complex or graph.dtype == torch.bool:
        raise ValueError(f"{layer}: edge_index must hold integer node indices, got dtype {graph.dtype}")
    _check_indices(graph, num_nodes, layer)
    return graph


def _skip_checks() -> bool:
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def _version(tensor: Tensor):
    return None if tensor.is_inference() else tensor._version  # inference tensors have no counter


def mark_valid(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Record that ``edge_index`` holds node indices in ``[0, num_nodes)`` (:func:`~mgic_geo.nn.knn_graph`
    does for its results), so that :func:`as_edge_index` skips the check until it is modified in
    place. Returns ``edge_index``."""
    if not _skip_checks():
        setattr(edge_index, _CHECKED, (num_nodes, _version(edge_index)))
    return edge_index


def _check_indices(edge_index: Tensor, num_nodes: int, layer: str) -> None:
    if _skip_checks():
        return
    mark = getattr(edge_index, _CHECKED, None)
    if mark is not None and mark[0] <= num_nodes and mark[1] == _version(edge_index):
        return
    high = -1
    if edge_index.numel():
        low, high = torch.stack(torch.aminmax(edge_index)).tolist()  # one host synchronisation
        bad = low if low < 0 else high if high >= num_nodes else None
        if bad is not None:
            valid = f"[0, {num_nodes - 1}]" if num_nodes else "empty (there are no nodes)"
            raise ValueError(f"{layer}: edge_index holds node index {bad}, outside the valid range {valid} "
                             f"for {num_nodes} nodes")
    mark_valid(edge_index, high + 1)


def _check_square(shape: tuple, num_nodes: int, layer: str) -> None:
    if len(shape) != 2 or shape[0] != num_nodes or shape[1] != num_nodes:
        raise ValueError(f"{layer}: a sparse adjacency must be [N, N] = [{num_nodes}, {num_nodes}] for {num_nodes} "
                         f"nodes, got {list(shape)}")


def _stack(source: Tensor, target: Tensor) -> Tensor:
    return torch.stack([source.long(), target.long()])

"""The graph arguments the layers accept, in PyG's conventions.

Every layer of :mod:`mgic_geo.nn` that takes a graph takes what PyG's ``MessagePassing`` layers take:

* ``edge_index``, an integer tensor :math:`(2, E)`: row 0 the source (neighbour) :math:`j`, row 1
  the target (centre) :math:`i` of each edge (``flow="source_to_target"``);
* a sparse adjacency ``adj_t`` of shape :math:`(N, N)` (a ``torch.sparse`` COO/CSR/CSC tensor, or
  a ``torch_sparse.SparseTensor`` where that package is installed), transposed as in PyG:
  ``adj_t[i, j]`` is the edge from :math:`j` to :math:`i`. Its values are ignored (the layers
  weight their edges themselves), as PyG's unweighted layers ignore them.
"""
from __future__ import annotations

import torch
from torch import Tensor

from mgic_geo.validation import check_int

SPARSE_LAYOUTS = (torch.sparse_coo, torch.sparse_csr, torch.sparse_csc)


def as_edge_index(graph, num_nodes: int, *, layer: str = "layer") -> Tensor:
    """``graph`` (module docstring) as an ``edge_index`` :math:`(2, E)`, grouped by target where it
    was a sparse adjacency. Raises ``ValueError`` naming ``layer`` for anything else."""
    check_int("num_nodes", num_nodes, minimum=0)
    if type(graph).__name__ == "SparseTensor" and hasattr(graph, "coo"):  # torch_sparse, optional
        _check_square(tuple(graph.sizes()), num_nodes, layer)
        row, col, _ = graph.coo()
        return _stack(col, row)
    if not isinstance(graph, Tensor):
        raise ValueError(f"{layer}: `edge_index` must be a [2, E] integer tensor or a sparse [N, N] adjacency, "
                         f"got {type(graph).__name__}")
    if graph.layout in SPARSE_LAYOUTS:
        _check_square(tuple(graph.shape), num_nodes, layer)
        from torch_geometric.utils import to_edge_index

        adjacency, _ = to_edge_index(graph.to_sparse_csr() if graph.layout == torch.sparse_csc else graph)
        return _stack(adjacency[1], adjacency[0])
    if graph.dim() != 2 or graph.shape[0] != 2:
        raise ValueError(f"{layer}: expected edge_index [2, E], got {tuple(graph.shape)}")
    if graph.dtype.is_floating_point or graph.dtype.is_complex or graph.dtype == torch.bool:
        raise ValueError(f"{layer}: edge_index must hold integer node indices, got dtype {graph.dtype}")
    return graph


def _check_square(shape: tuple, num_nodes: int, layer: str) -> None:
    if len(shape) != 2 or shape[0] != num_nodes or shape[1] != num_nodes:
        raise ValueError(f"{layer}: a sparse adjacency must be [N, N] = [{num_nodes}, {num_nodes}] for {num_nodes} "
                         f"nodes, got {list(shape)}")


def _stack(source: Tensor, target: Tensor) -> Tensor:
    return torch.stack([source.long(), target.long()])

"""Graphs as PyG layers take them: edge_index [2, E] or a sparse adjacency adj_t (mgic_geo.nn.adjacency)."""
import pytest
import torch

from mgic_geo import MGICConfig
from mgic_geo.nn import DiffGCNConv, EdgeConvNormAct, MGICConv, knn_graph
from mgic_geo.nn.adjacency import as_edge_index


def _adj_t(edge_index, nodes):
    """PyG's transposed adjacency: adj_t[target, source]."""
    values = torch.ones(edge_index.shape[1])
    return torch.sparse_coo_tensor(torch.stack([edge_index[1], edge_index[0]]), values, (nodes, nodes)).coalesce()


@pytest.mark.parametrize("layout", ["coo", "csr", "csc"])
def test_sparse_adjacency_gives_the_edges_grouped_by_target(layout):
    edge_index = torch.tensor([[1, 2, 0, 3, 0], [0, 0, 1, 2, 3]])
    adj_t = _adj_t(edge_index, 4)
    adj_t = {"coo": adj_t, "csr": adj_t.to_sparse_csr(), "csc": adj_t.to_sparse_csc()}[layout]
    assert torch.equal(as_edge_index(adj_t, 4), edge_index)


@pytest.mark.parametrize("make", [
    lambda: DiffGCNConv(8, 16),
    lambda: EdgeConvNormAct(8, 16),
    lambda: MGICConv(8, conv="diffgcn", mgic=MGICConfig(group_size=2, coarsest=2)),
    lambda: MGICConv(8, conv="edge", mgic=MGICConfig(group_size=2, coarsest=2)),
])
def test_layers_give_the_same_output_for_both_forms(make):
    torch.manual_seed(0)
    layer = make().eval()
    pos, x = torch.randn(40, 3), torch.randn(40, 8)
    edge_index = knn_graph(pos, 6, backend="torch")
    call = (lambda graph: layer(x, graph)) if isinstance(layer, EdgeConvNormAct) else (lambda graph: layer(x, pos, graph))
    with torch.no_grad():
        assert torch.allclose(call(edge_index), call(_adj_t(edge_index, 40)), atol=1e-5)


@pytest.mark.parametrize("graph, message", [
    (torch.zeros(3, 5, dtype=torch.long), r"DiffGCNConv: expected edge_index \[2, E\], got \(3, 5\)"),
    (torch.zeros(2, 5), r"DiffGCNConv: edge_index must hold integer node indices, got dtype torch.float32"),
    (torch.eye(5).to_sparse(), r"DiffGCNConv: a sparse adjacency must be \[N, N\] = \[10, 10\] for 10 nodes, got \[5, 5\]"),
    ([[0, 1], [1, 0]], r"DiffGCNConv: `edge_index` must be a \[2, E\] integer tensor or a sparse \[N, N\] adjacency, got list"),
])
def test_bad_graphs_are_named(graph, message):
    with pytest.raises(ValueError, match=message):
        DiffGCNConv(4, 4)(torch.randn(10, 4), torch.randn(10, 3), graph)

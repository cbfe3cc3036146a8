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


# --- node indices (issue 16, item 10) ------------------------------------------------------------

def _count_aminmax(monkeypatch):
    calls = []
    original = torch.aminmax

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "aminmax", counting)
    return calls


@pytest.mark.parametrize("bad, message", [
    (-5, r"DiffGCNConv: edge_index holds node index -5, outside the valid range \[0, 19\] for 20 nodes"),
    (99, r"DiffGCNConv: edge_index holds node index 99, outside the valid range \[0, 19\] for 20 nodes"),
    (20, r"DiffGCNConv: edge_index holds node index 20, outside the valid range \[0, 19\] for 20 nodes"),
])
def test_node_indices_out_of_range_are_named(bad, message):
    pos = torch.randn(20, 3)
    edge_index = knn_graph(pos, 4).clone()
    edge_index[0, 3] = bad
    with pytest.raises(ValueError, match=message):
        DiffGCNConv(4, 4)(torch.randn(20, 4), pos, edge_index)


@pytest.mark.parametrize("make, call", [
    (lambda: EdgeConvNormAct(4, 4), lambda layer, x, pos, g: layer(x, g)),
    (lambda: MGICConv(4, conv="edge", mgic=MGICConfig(group_size=2, coarsest=2)), lambda layer, x, pos, g: layer(x, pos, g)),
    (lambda: MGICConv(4, mgic=MGICConfig(group_size=2, coarsest=2)), lambda layer, x, pos, g: layer(x, pos, g)),
])
def test_every_static_layer_checks_the_indices(make, call):
    layer = make()
    edge_index = torch.tensor([[0, 1, 2, 99], [1, 2, 3, 0]])
    with pytest.raises(ValueError, match=rf"{type(layer).__name__}: edge_index holds node index 99, outside the valid "
                                         r"range \[0, 19\] for 20 nodes"):
        call(layer, torch.randn(20, 4), torch.randn(20, 3), edge_index)
    edge_index[0, 3] = -1
    with pytest.raises(ValueError, match=r"node index -1, outside the valid range \[0, 19\]"):
        call(layer, torch.randn(20, 4), torch.randn(20, 3), edge_index)


def test_a_graph_is_checked_once_until_it_is_modified_in_place(monkeypatch):
    calls = _count_aminmax(monkeypatch)
    layer = MGICConv(8, mgic=MGICConfig(group_size=2, coarsest=2))  # three levels on one graph
    pos, x = torch.randn(30, 3), torch.randn(30, 8)
    edge_index = knn_graph(pos, 4).clone()  # a clone is not known to be valid
    layer(x, pos, edge_index)
    layer(x, pos, edge_index)
    assert len(calls) == 1  # once for the tensor, not per level or per call
    layer(x[:20], pos[:20], knn_graph(pos[:20], 4)[:, :40])  # another tensor (a view of a kNN graph): checked
    assert len(calls) == 2
    edge_index[0, 0] = 29  # in place: the version counter moved, so it is checked again
    layer(x, pos, edge_index)
    assert len(calls) == 3
    edge_index[0, 0] = -5
    with pytest.raises(ValueError, match="node index -5"):
        layer(x, pos, edge_index)
    with pytest.raises(ValueError, match=r"node index 29, outside the valid range \[0, 9\] for 10 nodes"):
        as_edge_index(torch.tensor([[29], [0]]), 10, layer="MGICConv")


def test_knn_graphs_and_the_layers_that_build_their_own_pay_no_check(monkeypatch):
    from mgic_geo.models import create_model
    from mgic_geo.nn import DynamicEdgeConvNormAct, DynamicMGICConv

    calls = _count_aminmax(monkeypatch)
    pos, x = torch.randn(2 * 32, 3), torch.randn(2 * 32, 8)
    batch = torch.arange(2).repeat_interleave(32)
    DiffGCNConv(8, 8)(x, pos, knn_graph(pos, 4, batch))
    EdgeConvNormAct(8, 8)(x, knn_graph(x, 4, batch, cloud_size=32), k=4)
    EdgeConvNormAct(8, 8)(x, knn_graph(x, 4, batch, flow="target_to_source").flip(0).contiguous())  # a new tensor
    assert len(calls) == 1
    calls.clear()
    DynamicEdgeConvNormAct(8, 8, k=4)(x, batch)
    DynamicMGICConv(8, conv="edge", mgic={"group_size": 2, "coarsest": 2}, k=4)(x, pos, batch, cloud_size=32)
    DynamicMGICConv(8, mgic={"group_size": 2, "coarsest": 2}, k=4)(x, pos, batch)
    for name in ("dgcnn", "mgic_dgcnn", "diffgcn", "mgic_diffgcn"):
        create_model(name, k=4, num_points=32).eval()(pos, batch)
        create_model(name, k=4).eval()(pos, batch)
    assert calls == []


def test_the_check_is_skipped_under_compilation(monkeypatch):
    calls = _count_aminmax(monkeypatch)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    as_edge_index(torch.tensor([[0, 1], [1, 0]]), 2)
    assert calls == []


def test_a_sparse_adjacency_is_converted_once_and_not_checked_again(monkeypatch):
    torch.manual_seed(0)
    layer = MGICConv(8, conv="diffgcn", mgic=MGICConfig(group_size=2, coarsest=2)).eval()
    pos, x = torch.randn(40, 3), torch.randn(40, 8)
    adj_t = _adj_t(knn_graph(pos, 6, backend="torch"), 40)
    calls = _count_aminmax(monkeypatch)
    with torch.no_grad():
        layer(x, pos, adj_t)
    assert calls == []  # indices of an [N, N] adjacency are in range by construction: no host sync at any level

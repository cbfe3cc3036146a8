"""The scoped count of graph MACs (mgic_geo.nn.cost)."""
import threading

import torch

from mgic_geo.nn import cost, knn_graph


def test_reports_outside_a_count_go_nowhere():
    assert not cost.counting_now()
    cost.report("knn", 5)  # no count open: nothing to add to, no error
    with cost.counting() as count:
        assert cost.counting_now()
        cost.report("knn", 5)
        cost.report("knn", 2)
    assert count == {"knn": 7} and not cost.counting_now()


def test_counts_nest_and_do_not_leak_across_threads():
    seen = {}

    def other_thread():
        seen["counting"] = cost.counting_now()
        cost.report("knn", 100)

    with cost.counting() as outer:
        cost.report("graph operators", 1)
        with cost.counting() as inner:
            cost.report("knn", 3)
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
    assert outer == {"graph operators": 1} and inner == {"knn": 3} and seen == {"counting": False}


def test_knn_graph_reports_its_distance_products():
    pos = torch.rand(2 * 300, 3)
    with cost.counting() as count:
        knn_graph(pos, 10, torch.arange(2).repeat_interleave(300), backend="torch")
    assert count["knn"] == 2 * 300 * 300 * 4  # D + 1 MACs per pair

"""``mgic_geo.bench.traffic``: byte counts of known operators, views free, and the bandwidth probe."""
import torch

from mgic_geo.bench.traffic import count_traffic, measure_bandwidth


def test_an_elementwise_operator_reads_and_writes_its_tensors_once():
    x = torch.randn(64, 32)
    traffic = count_traffic(lambda: torch.relu(x))
    assert (traffic.read, traffic.written, traffic.operators) == (x.numel() * 4, x.numel() * 4, 1)
    assert traffic.total == 2 * x.numel() * 4


def test_a_matrix_multiply_counts_both_operands_and_the_result():
    a, b = torch.randn(16, 8), torch.randn(8, 4)
    traffic = count_traffic(lambda: a @ b)
    assert traffic.read == (16 * 8 + 8 * 4) * 4 and traffic.written == 16 * 4 * 4
    assert [name for name, _ in traffic.top()] == ["mm"]


def test_views_and_reshapes_move_nothing():
    x = torch.randn(8, 16)
    traffic = count_traffic(lambda: (x.t(), x.view(16, 8), x.reshape(2, 64), x.detach(), x.expand(3, 8, 16)))
    assert traffic.total == 0 and traffic.operators == 0


def test_a_broadcast_operand_counts_its_storage_not_its_shape():
    x, row = torch.randn(100, 10), torch.randn(10)
    traffic = count_traffic(lambda: x + row.expand(100, 10))
    assert traffic.read == (100 * 10 + 10) * 4 and traffic.written == 100 * 10 * 4


def test_backward_operators_are_counted_too():
    x = torch.randn(32, 8, requires_grad=True)
    forward_only = count_traffic(lambda: torch.relu(x).sum())
    both = count_traffic(lambda: torch.relu(x).sum().backward())
    assert both.total > forward_only.total
    assert "threshold_backward" in dict(both.by_operator)


def test_bandwidth_is_positive_and_finite():
    bandwidth = measure_bandwidth("cpu", mebibytes=4, repeats=2)
    assert 0 < bandwidth < float("inf")

import pytest
import torch

from mgic_geo.core.transfer import GroupedChannelMap, TransferOperator


def test_average_init_rows_are_positive_and_sum_to_one():
    for op in (TransferOperator(64, 32, groups=8), TransferOperator(32, 64, groups=8)):
        dense = op.dense_weight()
        assert (op.weight > 0).all()
        torch.testing.assert_close(dense.sum(dim=1), torch.ones(op.out_channels))


def test_constant_restricts_and_prolongs_to_the_same_constant():
    restrict, prolong = TransferOperator(64, 32, groups=8), TransferOperator(32, 64, groups=8)
    x = torch.full((5, 64, 3, 3), 2.5)
    coarse = restrict(x)
    torch.testing.assert_close(coarse, torch.full((5, 32, 3, 3), 2.5))
    torch.testing.assert_close(prolong(coarse), x)


def test_no_two_coarse_channels_start_identical():
    dense = TransferOperator(64, 32, groups=1).dense_weight()
    assert torch.cdist(dense, dense).add(torch.eye(32)).min() > 1e-3


def test_kaiming_init_is_random_and_signed():
    op = TransferOperator(64, 32, groups=8, init="kaiming")
    assert (op.weight < 0).any() and (op.weight > 0).any()
    assert not torch.allclose(op.dense_weight().sum(dim=1), torch.ones(32))


def test_grouped_channel_map_matches_its_dense_weight():
    op = GroupedChannelMap(24, 12, groups=4, bias=True)
    x = torch.randn(7, 24)
    torch.testing.assert_close(op(x), x @ op.dense_weight().T + op.bias)
    assert op.dense_weight().shape == (12, 24)
    assert op.dense_weight()[:3, 6:].abs().sum() == 0  # group 0 sees input group 0 only


def test_repr():
    assert repr(TransferOperator(64, 32, groups=8)) == "TransferOperator(64, 32, groups=8, init='average')"
    assert repr(GroupedChannelMap(16, 16, groups=2)) == "GroupedChannelMap(16, 16, groups=2, bias=False)"


@pytest.mark.parametrize(
    "args, message",
    [
        ((0, 8, 1), r"`in_channels` must be a positive integer, got 0"),
        ((8, -2, 1), r"`out_channels` must be a positive integer, got -2"),
        ((8, 8, 0), r"`groups` must be a positive integer, got 0"),
        ((10, 8, 4), r"`groups`=4 must divide in_channels=10 and out_channels=8"),
    ],
)
def test_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        GroupedChannelMap(*args)


def test_bad_init_names_the_argument():
    with pytest.raises(ValueError, match=r"`transfer_init` must be one of .*got 'zeros'"):
        TransferOperator(8, 4, init="zeros")

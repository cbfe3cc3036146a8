import pytest
import torch
from torch import nn

from mgic_geo.core.norm import ChannelBatchNorm


@pytest.mark.parametrize("shape, reference", [((32, 8), nn.BatchNorm1d), ((4, 8, 9), nn.BatchNorm1d), ((4, 8, 5, 5), nn.BatchNorm2d)])
def test_matches_torch_batch_norm_of_the_same_rank(shape, reference):
    ours, theirs = ChannelBatchNorm(8), reference(8)
    x = torch.randn(shape)
    torch.testing.assert_close(ours(x), theirs(x))
    torch.testing.assert_close(ours.running_mean, theirs.running_mean)
    ours.eval(), theirs.eval()
    torch.testing.assert_close(ours(x), theirs(x))


def test_rejects_a_tensor_without_channel_dimension():
    with pytest.raises(ValueError, match="expected a tensor with a channel dimension"):
        ChannelBatchNorm(8)(torch.randn(8))

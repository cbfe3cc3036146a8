import pytest
import torch
from torch import nn

from mgic_geo.core.grouped import is_channel_major, to_channel_major
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


@pytest.mark.parametrize("training", [True, False])
def test_channel_major_node_features_match_the_row_major_path(training):
    torch.manual_seed(0)
    ours, theirs = ChannelBatchNorm(8).double(), nn.BatchNorm1d(8).double()
    ours.weight.data.uniform_(0.5, 2), ours.bias.data.normal_()
    ours.running_mean.normal_(), ours.running_var.uniform_(0.5, 2)
    theirs.load_state_dict(ours.state_dict())
    ours.train(training), theirs.train(training)
    x = torch.randn(30, 8, dtype=torch.float64)
    x1, x2 = to_channel_major(x).requires_grad_(), x.clone().requires_grad_()
    y1, y2 = ours(x1), theirs(x2)
    assert is_channel_major(y1)
    torch.testing.assert_close(y1, y2)
    grad = torch.randn_like(y2)
    y1.backward(grad), y2.backward(grad)
    torch.testing.assert_close(x1.grad, x2.grad)
    for a, b in ((ours.weight, theirs.weight), (ours.bias, theirs.bias)):
        torch.testing.assert_close(a.grad, b.grad)
    torch.testing.assert_close(ours.running_mean, theirs.running_mean)
    torch.testing.assert_close(ours.running_var, theirs.running_var)

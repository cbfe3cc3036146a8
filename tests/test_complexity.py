import pytest
import torch
from torch import nn

from mgic_geo import MGICBlock
from mgic_geo.complexity import count_parameters, profile
from mgic_geo.layers import ChannelMixNormAct, ConvNormAct
from mgic_geo.core.config import MGICConfig


class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False) if stride > 1 else nn.Identity()

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


def conv_macs(c_in, c_out, k, size, groups=1):
    return c_out * (c_in // groups) * k * k * size * size


def test_resnet_style_conv_stack_gives_its_analytic_macs():
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        BasicBlock(16, 16, 1), BasicBlock(16, 32, 2), BasicBlock(32, 32, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )
    expected = (
        conv_macs(3, 16, 3, 32)
        + 2 * conv_macs(16, 16, 3, 32)
        + conv_macs(16, 32, 3, 16) + conv_macs(32, 32, 3, 16) + conv_macs(16, 32, 1, 16)
        + 2 * conv_macs(32, 32, 3, 16)
        + 32 * 10
    )
    result = profile(model, torch.randn(1, 3, 32, 32))
    assert result.macs == expected
    assert result.params == sum(p.numel() for p in model.parameters())


def test_batch_of_inputs_scales_macs_linearly():
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False)
    assert profile(conv, torch.randn(3, 8, 10, 10)).macs == 3 * conv_macs(8, 8, 3, 10, groups=4)


@pytest.mark.parametrize("shape", [(10, 256), (2, 256, 3, 3)])
def test_mgic_block_macs_count_the_true_grouped_work(shape):
    block = MGICBlock(256, lambda w, g: ChannelMixNormAct(w, g), mgic=MGICConfig(group_size=8, coarsest=16))
    points = shape[0] * (shape[2] * shape[3] if len(shape) == 4 else 1)
    level_blocks = sum(w * (w // g) for w, g in zip(block.widths, block.groups))  # 1x1 grouped mixes
    transfers = 2 * sum(w * (w // 2) // g for w, g in zip(block.widths[:-1], block.groups[:-1]))
    result = profile(block, torch.randn(shape))
    assert result.macs == points * (level_blocks + transfers)
    assert result.macs_by_op == {"mgic_geo.grouped_channel_map": result.macs}


def test_channels_last_images_count_the_same_as_nchw():
    block = MGICBlock(64, lambda w, g: ConvNormAct(w, g), mgic=MGICConfig(group_size=8, coarsest=16))
    x = torch.randn(2, 64, 6, 6)
    assert profile(block, x).macs == profile(block, x.contiguous(memory_format=torch.channels_last)).macs


def test_formulas_for_ops_the_counter_misses():
    class Ops(nn.Module):
        def forward(self, points, matrix, vector):
            return torch.cdist(points, points), matrix @ vector, vector @ vector

    result = profile(Ops(), torch.randn(2, 100, 3), torch.randn(7, 5), torch.randn(5))
    assert result.macs_by_op["aten._euclidean_dist"] == 2 * 100 * 100 * 3
    assert result.macs_by_op["aten.mv"] == 35
    assert result.macs_by_op["aten.dot"] == 5


def test_profile_leaves_the_model_untouched():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    profile(model, torch.randn(8, 4) * 5 + 3)
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_meta_device_counts_without_computing():
    with torch.device("meta"):
        conv = nn.Conv2d(512, 512, 3, padding=1, bias=False)
        x = torch.empty(1, 512, 32, 32)
    assert profile(conv, x).macs == conv_macs(512, 512, 3, 32)


def test_shared_parameters_count_once():
    linear = nn.Linear(3, 3)
    assert count_parameters(nn.Sequential(linear, linear)) == 12


def test_not_a_module_is_a_clear_error():
    with pytest.raises(ValueError, match="`model` must be an nn.Module, got function"):
        profile(lambda x: x, torch.randn(1))

"""MobileNetV3 and MGIC-MobileNetV3 (mgic_geo.models.mobilenetv3)."""
import pytest
import torch
import torchvision
from torch import nn

from mgic_geo.core import MGICBlock, TransferOperator
from mgic_geo.models import create_model
from mgic_geo.models.mobilenetv3 import (
    GroupedInvertedResidual,
    InvertedResidualLevel,
    MGICInvertedResidual,
    mgic_mobilenetv3_large,
    mobilenetv3_large,
    transition_groups,
)

NAMES = ["mobilenetv3_large", "mobilenetv3_small", "mgic_mobilenetv3_large", "mgic_mobilenetv3_small"]

# Measured with mgic_geo.complexity.profile (1000 classes); pinned so architecture changes are deliberate.
PARAMS = {
    ("mobilenetv3_large", 1.0): 5_483_032,
    ("mobilenetv3_small", 1.0): 2_542_856,
    ("mgic_mobilenetv3_large", 0.6): 2_311_608,
    ("mgic_mobilenetv3_large", 1.0): 5_615_432,
    ("mgic_mobilenetv3_large", 1.2): 7_499_968,
    ("mgic_mobilenetv3_small", 1.0): 2_542_856,
}


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name, width_mult", sorted(PARAMS))
def test_pinned_parameter_counts(name, width_mult):
    assert n_params(create_model(name, width_mult=width_mult)) == PARAMS[name, width_mult]


def test_plain_large_is_torchvisions():
    ours = mobilenetv3_large()
    theirs = torchvision.models.mobilenet_v3_large(weights=None)
    assert n_params(ours) == n_params(theirs) == 5_483_032
    assert [tuple(p.shape) for p in ours.parameters()] == [tuple(p.shape) for p in theirs.parameters()]


def test_official_level_rule_coarsens_every_block():
    model = mgic_mobilenetv3_large(level_rule="official")
    assert n_params(model) == 5_794_352
    assert all(len(m.widths) >= 2 for m in model.modules() if isinstance(m, MGICBlock))


@pytest.mark.parametrize("name", NAMES)
def test_output_shape(name):
    model = create_model(name, num_classes=7)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["mgic_mobilenetv3_large", "mgic_mobilenetv3_small"])
def test_mgic_variants_put_mgic_blocks_in_the_residual_blocks(name):
    model = create_model(name)
    wrapped = [m for m in model.modules() if isinstance(m, MGICInvertedResidual)]
    assert wrapped and len(wrapped) == sum(isinstance(m, MGICBlock) for m in model.modules())
    # every stride-1, channel-preserving block became MGIC; the others are grouped transitions
    for block in model.features[1:-1]:
        assert isinstance(block, (MGICInvertedResidual, GroupedInvertedResidual))


def test_large_plan_coarsens_the_160_channel_blocks():
    plans = [(m.mgic.widths, m.mgic.groups) for m in mgic_mobilenetv3_large().modules()
             if isinstance(m, MGICInvertedResidual)]
    assert plans[-2:] == [([160, 80], [2, 1])] * 2
    assert all(len(widths) == 1 for widths, _ in plans[:-2])  # narrower than 2 * s_c: one full level


def test_transfer_operators_keep_their_averaging_init():
    model = mgic_mobilenetv3_large()
    transfers = [m for m in model.modules() if isinstance(m, TransferOperator)]
    assert transfers
    for op in transfers:
        assert (op.weight > 0).all()
        torch.testing.assert_close(op.weight.sum(-1), torch.ones_like(op.weight.sum(-1)))


def _zero_branches(block: MGICInvertedResidual):
    """Zero the last batch norm of every level's inverted-residual branch: each level is then z -> z."""
    for level in block.mgic.blocks:
        assert isinstance(level, InvertedResidualLevel)
        project_norm = level.block[-1][1]
        assert isinstance(project_norm, nn.BatchNorm2d)
        nn.init.zeros_(project_norm.weight)
        nn.init.zeros_(project_norm.bias)


def test_residual_is_added_once():
    model = mgic_mobilenetv3_large().eval()
    block = [m for m in model.modules() if isinstance(m, MGICInvertedResidual) and len(m.mgic.widths) > 1][0]
    _zero_branches(block)
    x = torch.randn(2, block.in_channels, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(block(x), x)  # twice would give 2x
        # and each level adds its residual exactly once: level(z) == z + branch(z)
        level = block.mgic.blocks[0]
        nn.init.ones_(level.block[-1][1].weight)
        torch.testing.assert_close(level(x), x + level.block(x))


def test_transitions_are_grouped_where_widths_allow():
    assert transition_groups(128, 768, 256, 64) == 2
    assert transition_groups(112, 672, 160, 64) == 1
    assert transition_groups(24, 72, 40, 8) == 2  # 3 = 24 // 8 does not divide 40, 2 does
    model = mgic_mobilenetv3_large(group_size=16)
    transitions = [m for m in model.modules() if isinstance(m, GroupedInvertedResidual)]
    assert max(block.groups for block in transitions) > 1
    for block in transitions:
        expand, project = block.block[0][0], block.block[-1][0]
        assert expand.kernel_size == project.kernel_size == (1, 1)
        assert expand.groups == project.groups == block.groups


@pytest.mark.parametrize("builder", [mgic_mobilenetv3_large, mobilenetv3_large])
@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "1.0", True, None])
def test_bad_width_mult_is_rejected(builder, bad):
    with pytest.raises(ValueError, match="width_mult"):
        builder(width_mult=bad)


@pytest.mark.parametrize("argument", ["group_size", "coarsest"])
@pytest.mark.parametrize("bad", [0, -64, 1.5, "64"])
def test_bad_group_size_or_coarsest_is_rejected(argument, bad):
    with pytest.raises(ValueError, match=argument):
        mgic_mobilenetv3_large(**{argument: bad})


def test_bad_level_rule_and_num_classes_are_rejected():
    with pytest.raises(ValueError, match="level_rule"):
        mgic_mobilenetv3_large(level_rule="fast")
    with pytest.raises(ValueError, match="num_classes"):
        mobilenetv3_large(num_classes=0)


@pytest.mark.parametrize("name", NAMES)
def test_create_model_builds_every_name(name):
    assert isinstance(create_model(name), torchvision.models.MobileNetV3)

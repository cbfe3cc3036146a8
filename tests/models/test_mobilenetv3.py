"""MobileNetV3 and MGIC-MobileNetV3 (mgic_geo.models.mobilenetv3)."""
import contextlib

import pytest
import torch
import torchvision
from torch import nn

from mgic_geo.complexity import profile
from mgic_geo.core import MGICBlock, TransferOperator
from mgic_geo.models import create_model
from mgic_geo.core.config import MGICConfig
from mgic_geo.models.registry import model_builder
from mgic_geo.models.mobilenetv3 import (
    DenseTransition,
    GroupedInvertedResidual,
    InvertedResidualLevel,
    MGICInvertedResidual,
    build_mobilenetv3,
    expanded_width,
    mgic_mobilenetv3_large,
    mobilenetv3_large,
    mobilenetv3_config,
    transition_groups,
)

NAMES = ["mobilenetv3_large", "mobilenetv3_small", "mgic_mobilenetv3_large", "mgic_mobilenetv3_small"]

# Measured with mgic_geo.complexity.profile (1000 classes); pinned so architecture changes are deliberate.
PARAMS = {
    ("mobilenetv3_large", 1.0): 5_483_032,
    ("mobilenetv3_small", 1.0): 2_542_856,
    ("mgic_mobilenetv3_large", 0.6): 2_214_632,
    ("mgic_mobilenetv3_large", 1.0): 5_079_496,
    ("mgic_mobilenetv3_large", 1.2): 6_918_410,
    ("mgic_mobilenetv3_small", 1.0): 2_509_200,
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
    model = mgic_mobilenetv3_large(mgic={"level_rule": "official"})
    assert n_params(model) == 5_097_644
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


def test_large_plan_is_computed_on_the_expanded_width():
    plans = [(m.mgic.widths, m.mgic.group_widths, m.mgic.groups) for m in mgic_mobilenetv3_large().modules()
             if isinstance(m, MGICInvertedResidual)]
    assert plans == [
        ([16], [16], [1]),
        ([24], [72], [1]),  # expanded width < 2 * s_c: one full level
        ([40], [120], [1]),
        ([40], [120], [1]),
        ([80, 40], [200, 100], [2, 1]),
        ([80, 40], [184, 92], [2, 1]),
        ([80, 40], [184, 92], [2, 1]),
        ([112, 56, 28, 14], [672, 336, 168, 84], [8, 4, 2, 1]),
        ([160, 80, 40, 20], [960, 480, 240, 120], [10, 5, 2, 1]),
        ([160, 80, 40, 20], [960, 480, 240, 120], [10, 5, 2, 1]),
    ]
    transitions = [m.groups for m in mgic_mobilenetv3_large().modules() if isinstance(m, GroupedInvertedResidual)]
    assert transitions == [1, 1, 2, 4, 8]  # 16->24 (e 64), 24->40 (72), 40->80 (240), 80->112 (480), 112->160 (672)


def test_group_rule_on_the_112_channel_block():
    """(112 -> 672 -> 112, k=3, SE): L = floor(log2(672 / 64)) = 3; g_j is the largest count
    <= e_j / 64 dividing w_j, w_{j+1} and e_j; every level's grouped 1x1 maps use it."""
    setting, _ = mobilenetv3_config("large")
    cnf = setting[11]
    assert (cnf.input_channels, cnf.expanded_channels, cnf.out_channels, cnf.stride) == (112, 672, 112, 1)
    block = MGICInvertedResidual(cnf, nn.BatchNorm2d, mgic=MGICConfig(group_size=64, coarsest=64))
    assert block.mgic.widths == [112, 56, 28, 14]
    assert block.mgic.group_widths == [expanded_width(w, cnf) for w in block.mgic.widths] == [672, 336, 168, 84]
    assert block.mgic.groups == [8, 4, 2, 1]  # 672 // 64 = 10 and 9 do not divide 112; 8 does
    for level, width, expanded, groups in zip(block.mgic.blocks, block.mgic.widths, block.mgic.group_widths,
                                              block.mgic.groups):
        expand, depthwise, project = level.block[0][0], level.block[1][0], level.block[-1][0]
        assert (expand.in_channels, expand.out_channels, expand.groups) == (width, expanded, groups)
        assert (project.in_channels, project.out_channels, project.groups) == (expanded, width, groups)
        assert depthwise.groups == expanded and level.expanded_channels == expanded
    assert [(r.in_channels, r.out_channels, r.groups) for r in block.mgic.restrictions] == [
        (112, 56, 8), (56, 28, 4), (28, 14, 2)
    ]
    x = torch.randn(2, 112, 4, 4)
    assert block(x).shape == x.shape


def test_expanded_width_scales_the_block_ratio():
    setting, _ = mobilenetv3_config("large")
    assert [expanded_width(w, setting[8]) for w in (80, 40, 20, 7)] == [184, 92, 46, 16]  # 2.3 x, half up
    assert [expanded_width(w, setting[0]) for w in (16, 8, 1)] == [16, 8, 1]  # no expand layer (e == c)


@pytest.mark.parametrize("width_mult", [0.6, 1.0, 1.2])
def test_mgic_large_is_cheaper_than_plain_at_the_papers_setting(width_mult):
    """At s_g = s_c = 64 (paper Table 4) every MGIC-Large width has fewer params and MACs than the plain
    network at the same width_mult (224 x 224, 1000 classes)."""
    measured = {}
    for name in ("mobilenetv3_large", "mgic_mobilenetv3_large"):
        with torch.device("meta"):
            kwargs = {"group_size": 64, "coarsest": 64} if name.startswith("mgic") else {}
            measured[name] = profile(create_model(name, width_mult=width_mult, **kwargs), torch.empty(1, 3, 224, 224))
    plain, mgic = measured["mobilenetv3_large"], measured["mgic_mobilenetv3_large"]
    assert mgic.params < plain.params
    assert mgic.macs < 0.8 * plain.macs


@pytest.mark.parametrize("width_mult", [0.35, 0.75, 1.3])
@pytest.mark.parametrize("name", ["mgic_mobilenetv3_large", "mgic_mobilenetv3_small"])
def test_odd_widths_build_and_run(name, width_mult):
    model = create_model(name, width_mult=width_mult, num_classes=3)
    for block in model.modules():
        if isinstance(block, MGICBlock):
            for fine, coarse, expanded, groups in zip(block.widths, block.widths[1:] + [None], block.group_widths,
                                                      block.groups):
                assert fine % groups == 0 and expanded % groups == 0 and (coarse is None or coarse % groups == 0)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)


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


def test_transitions_are_grouped_on_their_expanded_width():
    assert transition_groups(112, 672, 160, 64) == 8  # <= 672 // 64 = 10; 10 and 9 do not divide 112 and 160
    assert transition_groups(80, 480, 112, 64) == 4  # <= 7; 7, 6 and 5 do not divide all three
    assert transition_groups(24, 72, 40, 8) == 8  # 9 = 72 // 8 does not divide 24, 8 does
    assert transition_groups(16, 64, 24, 64) == 1
    assert transition_groups(7, 13, 5, 1) == 1  # coprime widths: one group, never an error
    model = mgic_mobilenetv3_large()
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
        mgic_mobilenetv3_large(mgic={argument: bad})


def test_bad_level_rule_and_num_classes_are_rejected():
    with pytest.raises(ValueError, match="level_rule"):
        mgic_mobilenetv3_large(mgic={"level_rule": "fast"})
    with pytest.raises(ValueError, match="num_classes"):
        mobilenetv3_large(num_classes=0)


@pytest.mark.parametrize("name", NAMES)
def test_create_model_builds_every_name(name):
    assert isinstance(create_model(name), torchvision.models.MobileNetV3)


# ---- the two readings of the paper: group_width="input" and transition="dense" ---------------------------

def _meta_params(name, **kwargs):
    with torch.device("meta"):
        return n_params(create_model(name, **kwargs))


def test_default_options_are_the_expanded_grouped_design():
    assert _meta_params("mgic_mobilenetv3_large") == PARAMS["mgic_mobilenetv3_large", 1.0]
    assert _meta_params("mgic_mobilenetv3_large", group_width="expanded", transition="grouped") \
        == PARAMS["mgic_mobilenetv3_large", 1.0]


def test_input_group_width_plans_on_the_input_width():
    """s_g = s_c = 64 on the block's input width: 112 < 128 stays one level, 160 coarsens once."""
    with torch.device("meta"):
        model = create_model("mgic_mobilenetv3_large", width_mult=1.0, group_width="input")
    plans = {tuple(m.mgic.widths): (m.mgic.groups, m.mgic.group_widths) for m in model.modules()
             if isinstance(m, MGICInvertedResidual)}
    assert plans[(112,)] == ([1], [112])
    assert plans[(160, 80)] == ([2, 1], [160, 80])  # groups counted on 160 / 64, not on 960 / 64
    assert not any(len(widths) > 1 for widths in plans if widths[0] != 160)
    # transitions: g <= c_in // 64 dividing c_in, e and c_out: only 112 -> 160 could have more than one, and
    # 112 // 64 = 1
    transitions = [m for m in model.modules() if isinstance(m, GroupedInvertedResidual)]
    assert [m.groups for m in transitions] == [1, 1, 1, 1, 1]
    assert transition_groups(128, 768, 192, 64, group_width="input") == 2  # <= 128 // 64
    assert transition_groups(128, 768, 192, 64) == 8  # <= 768 // 64 = 12; 12, 11, 10, 9 do not divide 128
    assert transition_groups(112, 672, 160, 64, group_width="expanded") == 8
    with pytest.raises(ValueError, match="`group_width` must be one of 'expanded', 'input', got 'output'"):
        transition_groups(112, 672, 160, 64, group_width="output")


def test_input_group_width_levels_get_expanded_widths_their_groups_divide():
    model = create_model("mgic_mobilenetv3_large", width_mult=1.2, group_width="input", num_classes=3).eval()
    for block in model.modules():
        if isinstance(block, MGICInvertedResidual):
            for level, groups in zip(block.mgic.blocks, block.mgic.groups):
                assert level.expanded_channels % groups == 0
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


@pytest.mark.parametrize("arch", ["large", "small"])
@pytest.mark.parametrize("group_width", ["expanded", "input"])
def test_dense_transitions_replace_every_grouped_one(arch, group_width):
    setting, _ = mobilenetv3_config(arch, 1.0)
    expected = [cnf for cnf in setting if cnf.stride != 1 or cnf.input_channels != cnf.out_channels]
    with torch.device("meta"):
        model = create_model(f"mgic_mobilenetv3_{arch}", transition="dense", group_width=group_width)
    assert not any(isinstance(m, GroupedInvertedResidual) for m in model.modules())
    transitions = [m for m in model.features if isinstance(m, DenseTransition)]
    assert len(transitions) == len(expected) > 0
    for block, cnf in zip(transitions, expected):
        conv = block.transition[0]
        assert (conv.in_channels, conv.out_channels, conv.groups) == (cnf.input_channels, cnf.out_channels, 1)
        assert conv.kernel_size == (1, 1) and conv.stride == (cnf.stride, cnf.stride)
        assert isinstance(block.transition[1], nn.BatchNorm2d) and len(block.transition) == 2  # no activation
        assert (block.in_channels, block.out_channels, block._is_cn) == (cnf.input_channels, cnf.out_channels,
                                                                         cnf.stride > 1)
        inner = block.block
        assert isinstance(inner, MGICInvertedResidual) and inner.in_channels == inner.out_channels == cnf.out_channels
        depthwise = inner.mgic.blocks[0].block[1 if cnf.expanded_channels != cnf.out_channels else 0][0]
        assert depthwise.kernel_size == (cnf.kernel, cnf.kernel) and depthwise.stride == (1, 1)
        assert inner.mgic.blocks[0].expanded_channels == cnf.expanded_channels
    # the shell is untouched: every other block is an MGIC residual block
    for block in model.features[1:-1]:
        assert isinstance(block, (MGICInvertedResidual, DenseTransition))


def test_dense_transition_of_the_112_to_160_block():
    setting, _ = mobilenetv3_config("large")
    cnf = setting[12]
    assert (cnf.input_channels, cnf.expanded_channels, cnf.out_channels, cnf.stride) == (112, 672, 160, 2)
    block = DenseTransition(cnf, nn.BatchNorm2d, mgic=MGICConfig(group_size=64, coarsest=64))
    assert block.block.mgic.widths == [160, 80, 40, 20] and block.block.mgic.group_widths == [672, 336, 168, 84]
    assert (cnf.input_channels, cnf.stride) == (112, 2)  # the block's own config is not changed
    x = torch.randn(2, 112, 8, 8)
    assert block(x).shape == (2, 160, 4, 4)


@pytest.mark.parametrize("name", ["mgic_mobilenetv3_large", "mgic_mobilenetv3_small"])
@pytest.mark.parametrize("group_width", ["expanded", "input"])
def test_dense_transition_networks_run(name, group_width):
    model = create_model(name, width_mult=0.35, num_classes=5, transition="dense", group_width=group_width).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 5) and torch.isfinite(out).all()


@pytest.mark.parametrize("width_mult", [0.6, 1.0, 1.2])
def test_the_options_change_the_network(width_mult):
    counts = {(g, t): _meta_params("mgic_mobilenetv3_large", width_mult=width_mult, group_width=g, transition=t)
              for g in ("expanded", "input") for t in ("grouped", "dense")}
    assert counts["expanded", "grouped"] == PARAMS["mgic_mobilenetv3_large", width_mult]
    assert len(set(counts.values())) == 4
    # fewer groups on the input width: more parameters than on the expanded width
    assert counts["input", "grouped"] > counts["expanded", "grouped"]
    assert counts["input", "dense"] > counts["expanded", "dense"]


@pytest.mark.parametrize("kwargs, message", [
    ({"group_width": "output"}, "`group_width` must be one of 'expanded', 'input', got 'output'"),
    ({"group_width": None}, "`group_width` must be one of 'expanded', 'input', got None"),
    ({"transition": "strided"}, "`transition` must be one of 'grouped', 'dense', got 'strided'"),
    ({"transition": 1}, "`transition` must be one of 'grouped', 'dense', got 1"),
])
def test_bad_options_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mgic_mobilenetv3_large(**kwargs)
    with pytest.raises(ValueError, match=message):
        create_model("mgic_mobilenetv3_small", **kwargs)


@pytest.mark.parametrize("name", ["mobilenetv3_large", "mobilenetv3_small"])
@pytest.mark.parametrize("kwargs", [{"group_width": "input"}, {"transition": "dense"}, {"group_width": "expanded"}])
def test_plain_builders_do_not_take_the_options(name, kwargs):
    argument = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"model '{name}' takes no argument\\(s\\) '{argument}'"):
        create_model(name, **kwargs)
    with pytest.raises(TypeError, match=argument):
        model_builder(name)(**kwargs)
    with pytest.raises(ValueError, match="apply to the MGIC networks only") if kwargs != {"group_width": "expanded"} \
            else contextlib.nullcontext():
        build_mobilenetv3(name.rsplit("_", 1)[1], **kwargs)

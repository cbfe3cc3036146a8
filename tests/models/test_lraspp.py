"""LR-ASPP on (MGIC-)MobileNetV3 backbones (mgic_geo.models.lraspp)."""
import pytest
import torch
from torchvision.models.segmentation import LRASPP

from mgic_geo.core import MGICBlock
from mgic_geo.models import create_model
from mgic_geo.models.lraspp import build_lraspp, lraspp_mgic_mobilenetv3_large, lraspp_mobilenetv3_large
from mgic_geo.models.mobilenetv3 import DenseTransition, GroupedInvertedResidual, MGICInvertedResidual

NAMES = ["lraspp_mobilenetv3_large", "lraspp_mobilenetv3_small",
         "lraspp_mgic_mobilenetv3_large", "lraspp_mgic_mobilenetv3_small"]

# Measured (21 classes). The MGIC plans are computed on the expanded widths (s_g = s_c = 64): the
# Large backbone gets smaller (grouped 1x1 maps in its wide blocks), the Small one a little larger
# (its squeeze-excitations stay dense on every level).
PARAMS = {
    "lraspp_mobilenetv3_large": 1_747_218,
    "lraspp_mobilenetv3_small": 515_922,
    "lraspp_mgic_mobilenetv3_large": 1_524_562,
    "lraspp_mgic_mobilenetv3_small": 527_626,
}
OFFICIAL_RULE_PARAMS = {"lraspp_mgic_mobilenetv3_large": 1_542_710, "lraspp_mgic_mobilenetv3_small": 529_902}


@pytest.mark.parametrize("name", NAMES)
def test_output_is_torchvisions_dict_at_input_resolution(name):
    model = create_model(name, num_classes=5)
    assert isinstance(model, LRASPP)
    out = model(torch.randn(2, 3, 40, 32))
    assert list(out) == ["out"] and out["out"].shape == (2, 5, 40, 32)


@pytest.mark.parametrize("name", NAMES)
def test_pinned_parameter_counts(name):
    assert sum(p.numel() for p in create_model(name).parameters()) == PARAMS[name]


@pytest.mark.parametrize("name", sorted(OFFICIAL_RULE_PARAMS))
def test_official_level_rule_coarsens(name):
    model = create_model(name, level_rule="official")
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_RULE_PARAMS[name]
    assert all(len(m.widths) >= 2 for m in model.modules() if isinstance(m, MGICBlock))


def test_backbone_is_dilated_with_a_reduced_tail_and_128_inter_channels():
    model = lraspp_mobilenetv3_large()
    features = model.backbone(torch.randn(1, 3, 64, 64))
    assert features["low"].shape == (1, 40, 8, 8)  # output stride 8
    assert features["high"].shape == (1, 480, 4, 4)  # output stride 16; 960 / 2 (reduced tail)
    assert model.classifier.cbr[0].out_channels == 128


def test_mgic_backbone_holds_mgic_blocks():
    model = lraspp_mgic_mobilenetv3_large()
    assert any(isinstance(m, MGICBlock) for m in model.modules())
    assert not any(isinstance(m, MGICBlock) for m in lraspp_mobilenetv3_large().modules())


def test_reduced_tail_blocks_are_planned_on_their_expanded_width():
    plans = [(m.widths, m.group_widths, m.groups) for m in lraspp_mgic_mobilenetv3_large().modules()
             if isinstance(m, MGICBlock)]
    assert plans[-2:] == [([80, 40, 20], [480, 240, 120], [5, 2, 1])] * 2  # 160 / 2 channels, 960 / 2 expanded


@pytest.mark.parametrize("kwargs, argument", [({"width_mult": 0}, "width_mult"), ({"mgic": {"group_size": 0}}, "group_size"),
                                              ({"num_classes": 0}, "num_classes")])
def test_bad_arguments_are_rejected(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        lraspp_mgic_mobilenetv3_large(**kwargs)


@pytest.mark.parametrize("name", ["lraspp_mgic_mobilenetv3_large", "lraspp_mgic_mobilenetv3_small"])
def test_default_options_are_the_expanded_grouped_design(name):
    with torch.device("meta"):
        model = create_model(name, group_width="expanded", transition="grouped")
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]


@pytest.mark.parametrize("name", ["lraspp_mgic_mobilenetv3_large", "lraspp_mgic_mobilenetv3_small"])
@pytest.mark.parametrize("group_width", ["expanded", "input"])
def test_dense_transitions_build_and_run(name, group_width):
    model = create_model(name, num_classes=3, width_mult=0.5, transition="dense", group_width=group_width).eval()
    transitions = [m for m in model.backbone.values() if isinstance(m, DenseTransition)]  # an nn.ModuleDict
    assert transitions and not any(isinstance(m, GroupedInvertedResidual) for m in model.modules())
    # the dilated stage's transition keeps stride 1 (output stride 16) but still marks a stage end
    last = transitions[-1]
    assert last._is_cn and last.transition[0].stride == (1, 1) and last.transition[0].groups == 1
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 48))["out"]
    assert out.shape == (1, 3, 64, 48) and torch.isfinite(out).all()


def test_dense_transitions_keep_the_feature_taps():
    """torchvision's LR-ASPP builder finds the stride-8 and last features through `_is_cn`."""
    model = create_model("lraspp_mgic_mobilenetv3_large", transition="dense").eval()
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, 64, 64))
    assert features["low"].shape == (1, 40, 8, 8) and features["high"].shape == (1, 480, 4, 4)


def test_input_group_width_reaches_the_backbone():
    with torch.device("meta"):
        model = create_model("lraspp_mgic_mobilenetv3_large", group_width="input")
    plans = [m.mgic.widths for m in model.modules() if isinstance(m, MGICInvertedResidual)]
    assert plans[-2:] == [[80]] * 2  # the reduced tail: 80 < 2 * 64 on the input width
    assert not any(len(widths) > 1 for widths in plans)


@pytest.mark.parametrize("kwargs, message", [
    ({"group_width": "output"}, "`group_width` must be one of 'expanded', 'input', got 'output'"),
    ({"transition": "strided"}, "`transition` must be one of 'grouped', 'dense', got 'strided'"),
])
def test_bad_options_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        lraspp_mgic_mobilenetv3_large(**kwargs)


@pytest.mark.parametrize("name", ["lraspp_mobilenetv3_large", "lraspp_mobilenetv3_small"])
@pytest.mark.parametrize("argument, value", [("group_width", "input"), ("transition", "dense")])
def test_plain_builders_do_not_take_the_options(name, argument, value):
    with pytest.raises(ValueError, match=f"model '{name}' takes no argument\\(s\\) '{argument}'"):
        create_model(name, **{argument: value})
    with pytest.raises(ValueError, match="apply to the MGIC networks only"):
        build_lraspp(name.rsplit("_", 1)[1], **{argument: value})

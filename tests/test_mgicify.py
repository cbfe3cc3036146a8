import copy
import doctest
import importlib
import warnings

import pytest
import torch
from torch import nn

import mgic_geo
from mgic_geo import MGICBlock, mgicify
from mgic_geo.mgicify import block_diagonal_part
from mgic_geo.complexity import count_parameters
from mgic_geo.models.resnet import BasicBlock, Bottleneck, mgic_resnet56, resnet56
from mgic_geo.core.config import MGICConfig

torchvision = pytest.importorskip("torchvision")
# the weight-reuse warning is checked where it is the subject; elsewhere it is expected noise
pytestmark = pytest.mark.filterwarnings("ignore:mgicify:UserWarning")


def test_exported():
    assert mgic_geo.mgicify is mgicify
    assert "mgicify" in mgic_geo.__all__


def test_docstring_example():
    result = doctest.testmod(importlib.import_module("mgic_geo.mgicify"))
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize(
    "builder, replaced, kept, level_type",
    [
        ("resnet18", ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"], 3, BasicBlock),
        ("resnet50", ["layer1.1", "layer1.2", "layer2.1", "layer2.2", "layer2.3", "layer3.1", "layer3.2", "layer3.3",
                      "layer3.4", "layer3.5", "layer4.1", "layer4.2"], 4, Bottleneck),
    ],
)
def test_torchvision_resnets(builder, replaced, kept, level_type):
    torch.manual_seed(0)
    model = getattr(torchvision.models, builder)(num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    before = count_parameters(model)
    report = mgicify(model, mgic=MGICConfig(group_size=16, coarsest=32))
    assert report.replaced == replaced and len(report.kept) == kept
    assert report.params_before == before and report.params_after == count_parameters(model) < before
    for name in replaced:
        block = model.get_submodule(name)
        assert isinstance(block, MGICBlock)
        assert all(type(level) is level_type for level in block.blocks)
        assert not block.training
    for name in report.kept:
        assert not isinstance(model.get_submodule(name), MGICBlock)
    assert model(x).shape == (2, 10)


def test_bottleneck_groups_count_bottleneck_channels():
    model = torchvision.models.resnet50()
    mgicify(model, mgic=MGICConfig(group_size=32, coarsest=64))
    block = model.layer4[1]  # 2048 channels, bottleneck width 512
    assert block.widths == [2048, 1024, 512, 256] and block.groups == [16, 8, 4, 1]


def test_own_resnet_and_idempotence():
    model = resnet56()
    report = mgicify(model, mgic=MGICConfig(group_size=8, coarsest=16))
    assert len(report.replaced) == 25 and len(report.kept) == 2
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(ValueError, match="nothing to convert in ResNet"):
        mgicify(model, mgic=MGICConfig(group_size=8, coarsest=16))  # everything convertible already is
    with pytest.raises(ValueError, match="nothing to convert"):
        mgicify(mgic_resnet56(), mgic=MGICConfig(group_size=8, coarsest=16))


def test_nothing_convertible():
    with pytest.raises(ValueError, match="nothing to convert in Sequential"):
        mgicify(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), mgic=MGICConfig(group_size=4, coarsest=8))


def test_unknown_block_type_is_named():
    class Custom(nn.Module):
        def forward(self, x):
            return x

    model = torchvision.models.resnet18()
    model.layer2[1] = Custom()
    before = count_parameters(model)
    with pytest.raises(ValueError, match=r"unknown block type Custom at layer2\.1"):
        mgicify(model, mgic=MGICConfig(group_size=16, coarsest=32))
    assert count_parameters(model) == before  # untouched


def test_widened_bottleneck_is_refused_by_name():
    with pytest.raises(ValueError, match=r"layer1\.1 is a grouped or widened bottleneck"):
        mgicify(torchvision.models.wide_resnet50_2(), mgic=MGICConfig(group_size=32, coarsest=64))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"group_size": 24, "coarsest": 32}, r"`group_size` \(24\) does not divide the width 64 of layer1\.0"),
        ({"group_size": 0, "coarsest": 32}, "`group_size` must be a positive integer"),
        ({"group_size": 16, "coarsest": -1}, "`coarsest` must be a positive integer"),
    ],
)
def test_bad_arguments(kwargs, match):
    model = torchvision.models.resnet18()
    with pytest.raises(ValueError, match=match):
        mgicify(model, kwargs)
    assert not any(isinstance(m, MGICBlock) for m in model.modules())


def test_not_a_module():
    with pytest.raises(ValueError, match="`model` must be an nn.Module"):
        mgicify("resnet18", mgic=MGICConfig(group_size=16, coarsest=32))



def _pruned(model: nn.Module, names: list[str], groups: dict[str, int]) -> nn.Module:
    """``model`` with every conv of the named blocks holding only its block-diagonal part."""
    with torch.no_grad():
        for name in names:
            for conv in (m for m in model.get_submodule(name).modules() if isinstance(m, nn.Conv2d)):
                out_channels, in_channels = conv.weight.shape[:2]
                g = groups[name]
                mask = torch.block_diag(*[torch.ones(out_channels // g, in_channels // g)] * g)
                conv.weight.mul_(mask[:, :, None, None])
    return model


@pytest.mark.parametrize("builder", ["resnet18", "resnet50"])
def test_finest_levels_start_from_the_block_diagonal_part_of_the_replaced_blocks(builder):
    torch.manual_seed(0)
    model = getattr(torchvision.models, builder)(num_classes=10)
    with torch.no_grad():
        for module in model.modules():  # non-trivial norms, so copying them is visible
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
    model.eval()
    original = copy.deepcopy(model)
    with pytest.warns(UserWarning, match=r"mgicify: \d+ blocks replaced; their finest levels start from the "
                                         r"block-diagonal part .* fine-tune before use"):
        report = mgicify(model, {"group_size": 16, "coarsest": 32})
    groups = {name: model.get_submodule(name).groups[0] for name in report.replaced}
    # corrections start at zero, so each new block computes its finest level alone at first: the
    # replaced block with its off-diagonal weights zeroed
    reference = _pruned(original, report.replaced, groups)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-4, rtol=1e-4)
    first = report.conversions[0]
    assert first.name == report.replaced[0]
    assert "blocks.0.conv1.weight" in first.block_diagonal and "blocks.0.bn1.running_var" in first.kept
    assert 0 < first.fraction_kept < 1 and first.new_parameters > 0
    assert "parameters kept" in str(report)


def test_reuse_weights_false_initialises_anew_without_a_warning():
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    dense = model.layer1[0].conv1.weight.detach().clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = mgicify(model, {"group_size": 16, "coarsest": 32}, reuse_weights=False)
    kept = block_diagonal_part(dense, model.layer1[0].blocks[0].conv1.groups)
    assert not torch.equal(model.layer1[0].blocks[0].conv1.weight, kept)
    assert all(c.weights_kept == 0 and not c.block_diagonal for c in report.conversions)


def test_block_diagonal_part_is_what_a_grouped_conv_can_hold():
    torch.manual_seed(0)
    dense = nn.Conv2d(12, 6, 3, padding=1, bias=False)
    grouped = nn.Conv2d(12, 6, 3, padding=1, groups=3, bias=False)
    with torch.no_grad():
        grouped.weight.copy_(block_diagonal_part(dense.weight, 3))
        mask = torch.block_diag(*[torch.ones(2, 4)] * 3)
        dense.weight.mul_(mask[:, :, None, None])
    x = torch.randn(2, 12, 5, 5)
    assert torch.allclose(grouped(x), dense(x), atol=1e-6)
    with pytest.raises(ValueError, match=r"`groups`=5 must divide both widths of a \(6, 12, 3, 3\) convolution"):
        block_diagonal_part(dense.weight, 5)

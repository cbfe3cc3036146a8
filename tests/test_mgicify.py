import doctest
import importlib

import pytest
import torch
from torch import nn

import mgic_geo
from mgic_geo import MGICBlock, mgicify
from mgic_geo.complexity import count_parameters
from mgic_geo.models.resnet import BasicBlock, Bottleneck, mgic_resnet56, resnet56

torchvision = pytest.importorskip("torchvision")


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
    report = mgicify(model, group_size=16, coarsest=32)
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
    mgicify(model, group_size=32, coarsest=64)
    block = model.layer4[1]  # 2048 channels, bottleneck width 512
    assert block.widths == [2048, 1024, 512, 256] and block.groups == [16, 8, 4, 1]


def test_own_resnet_and_idempotence():
    model = resnet56()
    report = mgicify(model, group_size=8, coarsest=16)
    assert len(report.replaced) == 25 and len(report.kept) == 2
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(ValueError, match="nothing to convert in ResNet"):
        mgicify(model, group_size=8, coarsest=16)  # everything convertible already is
    with pytest.raises(ValueError, match="nothing to convert"):
        mgicify(mgic_resnet56(), group_size=8, coarsest=16)


def test_nothing_convertible():
    with pytest.raises(ValueError, match="nothing to convert in Sequential"):
        mgicify(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), group_size=4, coarsest=8)


def test_unknown_block_type_is_named():
    class Custom(nn.Module):
        def forward(self, x):
            return x

    model = torchvision.models.resnet18()
    model.layer2[1] = Custom()
    before = count_parameters(model)
    with pytest.raises(ValueError, match=r"unknown block type Custom at layer2\.1"):
        mgicify(model, group_size=16, coarsest=32)
    assert count_parameters(model) == before  # untouched


def test_widened_bottleneck_is_refused_by_name():
    with pytest.raises(ValueError, match=r"layer1\.1 is a grouped or widened bottleneck"):
        mgicify(torchvision.models.wide_resnet50_2(), group_size=32, coarsest=64)


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
        mgicify(model, **kwargs)
    assert not any(isinstance(m, MGICBlock) for m in model.modules())


def test_not_a_module():
    with pytest.raises(ValueError, match="`model` must be an nn.Module"):
        mgicify("resnet18", group_size=16, coarsest=32)

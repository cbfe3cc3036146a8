import pytest
import torch
from torch import nn

from mgic_geo import MGICBlock
from mgic_geo.layers import ChannelMixNormAct, ConvNormAct

WIDTHS = [3, 16, 24, 33, 40, 64, 72, 112, 160, 480, 960, 1024]


def identity(width, groups):
    return nn.Identity()


@pytest.mark.parametrize("shape", [(50, 64), (4, 64, 10), (2, 64, 6, 6)])
@pytest.mark.parametrize("rule", ["paper", "official"])
@pytest.mark.parametrize("training", [True, False])
def test_identity_level_blocks_give_the_identity(shape, rule, training):
    block = MGICBlock(64, identity, group_size=8, coarsest=8, level_rule=rule).train(training)
    x = torch.randn(shape)
    torch.testing.assert_close(block(x), x)


def test_identity_holds_for_odd_widths_and_signed_transfer_init():
    block = MGICBlock(33, identity, group_size=4, coarsest=8, transfer_init="kaiming")
    assert block.widths == [33, 16, 8]
    x = torch.randn(20, 33)
    torch.testing.assert_close(block(x), x)


def test_follows_algorithm_1_step_by_step():
    """Recompute the V-cycle by hand from the block's own modules (two coarsenings)."""
    torch.manual_seed(1)
    block = MGICBlock(32, lambda w, g: ChannelMixNormAct(w, g), group_size=8, coarsest=8)
    assert block.widths == [32, 16, 8]
    x = torch.randn(40, 32)
    R, P, N, B = block.restrictions, block.prolongations, block.norms, block.blocks
    r0 = R[0](x)
    r1 = R[1](r0)
    y = B[2](r1)
    y = B[1](r0 + N[1](P[1](y - r1)))
    y = B[0](x + N[0](P[0](y - r0)))
    torch.testing.assert_close(block(x), y)


@pytest.mark.parametrize("channels", WIDTHS)
@pytest.mark.parametrize("group_size", [4, 8, 16, 64])
@pytest.mark.parametrize("coarsest", [8, 16, 64])
def test_every_width_builds_runs_and_trains(channels, group_size, coarsest):
    block = MGICBlock(channels, lambda w, g: ChannelMixNormAct(w, g), group_size=group_size, coarsest=coarsest)
    x = torch.randn(6, channels)
    y = block(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    for name, parameter in block.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name


@pytest.mark.parametrize("channels", [24, 40, 112, 160])
def test_images_with_mobilenet_widths(channels):
    block = MGICBlock(channels, lambda w, g: ConvNormAct(w, g), group_size=8, coarsest=8)
    x = torch.randn(2, channels, 5, 5)
    block(x).sum().backward()
    assert all(p.grad is not None for p in block.parameters())


def test_inspectable_plan_and_modules():
    block = MGICBlock(256, lambda w, g: ChannelMixNormAct(w, g), group_size=8, coarsest=16)
    assert block.widths == [256, 128, 64, 32, 16]
    assert block.groups == [32, 16, 8, 4, 1]
    assert [(r.in_channels, r.out_channels, r.groups) for r in block.restrictions] == [
        (256, 128, 32), (128, 64, 16), (64, 32, 8), (32, 16, 4)
    ]
    assert [(p.in_channels, p.out_channels, p.groups) for p in block.prolongations] == [
        (128, 256, 32), (64, 128, 16), (32, 64, 8), (16, 32, 4)
    ]
    assert [b[0].groups for b in block.blocks] == [32, 16, 8, 4, 1]
    assert isinstance(block.restrictions, nn.ModuleList) and isinstance(block.prolongations, nn.ModuleList)
    assert [n.num_features for n in block.norms] == [256, 128, 64, 32]


def test_paper_rule_below_twice_the_coarsest_is_the_plain_block():
    block = MGICBlock(24, lambda w, g: ChannelMixNormAct(w, g), group_size=8, coarsest=16)
    assert block.widths == [24] and block.groups == [1]
    assert len(block.restrictions) == 0 and len(block.blocks) == 1


def test_extra_arguments_reach_every_level_block():
    seen = []

    class Recorder(nn.Module):
        def forward(self, x, pos, *, edge_index):
            seen.append((x.shape[1], pos, edge_index))
            return x

    block = MGICBlock(64, lambda w, g: Recorder(), group_size=8, coarsest=16)
    block(torch.randn(5, 64), "pos", edge_index="graph")
    assert seen == [(16, "pos", "graph"), (32, "pos", "graph"), (64, "pos", "graph")]


def test_reset_parameters_restores_the_average_init():
    block = MGICBlock(64, lambda w, g: ChannelMixNormAct(w, g), group_size=8, coarsest=16)
    with torch.no_grad():
        for op in block.restrictions:
            op.weight.normal_()
    block.reset_parameters()
    for op in block.restrictions:
        torch.testing.assert_close(op.dense_weight().sum(1), torch.ones(op.out_channels))


def test_custom_norm_factory():
    block = MGICBlock(64, identity, group_size=8, coarsest=16, norm=lambda w: nn.Identity())
    assert all(isinstance(n, nn.Identity) for n in block.norms)


def test_repr():
    block = MGICBlock(64, identity, group_size=8, coarsest=16)
    assert repr(block).splitlines()[1] == "  64, group_size=8, coarsest=16, widths=[64, 32, 16], groups=[8, 4, 1]"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(channels=0), r"`channels` must be a positive integer, got 0"),
        (dict(group_size=0), r"`group_size` must be a positive integer, got 0"),
        (dict(group_size=-8), r"`group_size` must be a positive integer, got -8"),
        (dict(coarsest=0), r"`coarsest` must be a positive integer, got 0"),
        (dict(level_rule="v-cycle"), r"`level_rule` must be one of \('paper', 'official'\), got 'v-cycle'"),
        (dict(transfer_init="xavier"), r"`transfer_init` must be one of \('average', 'kaiming'\), got 'xavier'"),
        (dict(block="conv"), r"`block` must be a callable block\(width, groups\) -> nn.Module, got 'conv'"),
        (dict(block=lambda w, g: "conv"), r"`block`\(64, 8\) must return an nn.Module, got str"),
        (dict(block=lambda w, g: nn.Linear(w, w // 2)), r"`block`\(64, 8\) built a module with out_features=32"),
    ],
)
def test_impossible_arguments_raise_value_error(kwargs, message):
    arguments = dict(channels=64, block=identity, group_size=8, coarsest=16) | kwargs
    with pytest.raises(ValueError, match=message):
        MGICBlock(arguments.pop("channels"), arguments.pop("block"), **arguments)


def test_a_block_that_changes_the_width_at_run_time_is_caught():
    class Halve(nn.Module):
        def forward(self, x):
            return x[:, : x.shape[1] // 2]

    block = MGICBlock(64, lambda w, g: Halve(), group_size=8, coarsest=16)
    with pytest.raises(ValueError, match=r"`block`\(16, 1\) returned 8 channels from 16"):
        block(torch.randn(3, 64))


@pytest.mark.parametrize("shape, level_block", [((32, 64), ChannelMixNormAct), ((2, 64, 6, 6), ConvNormAct)])
def test_traces_into_one_graph_without_breaks(shape, level_block):
    import torch._dynamo

    block = MGICBlock(64, lambda w, g: level_block(w, g), group_size=8, coarsest=16)
    explanation = torch._dynamo.explain(block)(torch.randn(shape))
    assert explanation.graph_count == 1 and explanation.graph_break_count == 0, explanation.break_reasons


def test_group_width_sets_the_plan_and_reaches_the_level_blocks():
    built = []

    def level(width, groups):
        built.append((width, groups))
        return ChannelMixNormAct(width, groups)

    block = MGICBlock(112, level, group_size=64, coarsest=64, group_width=lambda width: 6 * width)
    assert block.widths == [112, 56, 28, 14]
    assert block.group_widths == [672, 336, 168, 84]
    assert block.groups == [8, 4, 2, 1]
    assert sorted(built, reverse=True) == [(112, 8), (56, 4), (28, 2), (14, 1)]
    assert [(r.in_channels, r.out_channels, r.groups) for r in block.restrictions] == [
        (112, 56, 8), (56, 28, 4), (28, 14, 2)
    ]
    assert repr(block).splitlines()[1] == (
        "  112, group_size=64, coarsest=64, widths=[112, 56, 28, 14], groups=[8, 4, 2, 1], "
        "group_widths=[672, 336, 168, 84]"
    )
    x = torch.randn(4, 112)
    assert block(x).shape == x.shape


def test_group_width_keeps_the_identity_property():
    block = MGICBlock(40, identity, group_size=64, coarsest=64, group_width=lambda width: 6 * width)
    assert block.widths == [40, 20] and block.group_widths == [240, 120]
    x = torch.randn(2, 40, 3, 3)
    torch.testing.assert_close(block(x), x)
    assert MGICBlock(64, identity, group_size=8, coarsest=16).group_widths == [64, 32, 16]

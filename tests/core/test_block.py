import pytest
import torch
from torch import nn

from mgic_geo import MGICBlock
from mgic_geo.layers import ChannelMixNormAct, ConvNormAct
from mgic_geo.core.config import MGICConfig

WIDTHS = [3, 16, 24, 33, 40, 64, 72, 112, 160, 480, 960, 1024]


def identity(width, groups):
    return nn.Identity()


@pytest.mark.parametrize("shape", [(50, 64), (4, 64, 10), (2, 64, 6, 6)])
@pytest.mark.parametrize("rule", ["paper", "official", "at_most"])
@pytest.mark.parametrize("training", [True, False])
def test_identity_level_blocks_give_the_identity(shape, rule, training):
    block = MGICBlock(64, identity, mgic=MGICConfig(group_size=8, coarsest=8, level_rule=rule)).train(training)
    x = torch.randn(shape)
    torch.testing.assert_close(block(x), x)


def test_identity_holds_for_odd_widths_and_signed_transfer_init():
    block = MGICBlock(33, identity, mgic=MGICConfig(group_size=4, coarsest=8, transfer_init="kaiming"))
    assert block.widths == [33, 16, 8]
    x = torch.randn(20, 33)
    torch.testing.assert_close(block(x), x)


def test_follows_algorithm_1_step_by_step():
    """Recompute the V-cycle by hand from the block's own modules (two coarsenings)."""
    torch.manual_seed(1)
    block = MGICBlock(32, lambda w, g: ChannelMixNormAct(w, g), mgic=MGICConfig(group_size=8, coarsest=8))
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
    block = MGICBlock(channels, lambda w, g: ChannelMixNormAct(w, g), mgic=MGICConfig(group_size=group_size, coarsest=coarsest))
    x = torch.randn(6, channels)
    y = block(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    for name, parameter in block.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name


@pytest.mark.parametrize("channels", [24, 40, 112, 160])
def test_images_with_mobilenet_widths(channels):
    block = MGICBlock(channels, lambda w, g: ConvNormAct(w, g), mgic=MGICConfig(group_size=8, coarsest=8))
    x = torch.randn(2, channels, 5, 5)
    block(x).sum().backward()
    assert all(p.grad is not None for p in block.parameters())


def test_inspectable_plan_and_modules():
    block = MGICBlock(256, lambda w, g: ChannelMixNormAct(w, g), mgic=MGICConfig(group_size=8, coarsest=16))
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
    block = MGICBlock(24, lambda w, g: ChannelMixNormAct(w, g), mgic=MGICConfig(group_size=8, coarsest=16))
    assert block.widths == [24] and block.groups == [1]
    assert len(block.restrictions) == 0 and len(block.blocks) == 1


def test_extra_arguments_reach_every_level_block():
    seen = []

    class Recorder(nn.Module):
        def forward(self, x, pos, *, edge_index):
            seen.append((x.shape[1], pos, edge_index))
            return x

    block = MGICBlock(64, lambda w, g: Recorder(), mgic=MGICConfig(group_size=8, coarsest=16))
    block(torch.randn(5, 64), "pos", edge_index="graph")
    assert seen == [(16, "pos", "graph"), (32, "pos", "graph"), (64, "pos", "graph")]


def test_reset_parameters_restores_the_average_init():
    block = MGICBlock(64, lambda w, g: ChannelMixNormAct(w, g), mgic=MGICConfig(group_size=8, coarsest=16))
    with torch.no_grad():
        for op in block.restrictions:
            op.weight.normal_()
    block.reset_parameters()
    for op in block.restrictions:
        torch.testing.assert_close(op.dense_weight().sum(1), torch.ones(op.out_channels))


def test_custom_norm_factory():
    block = MGICBlock(64, identity, norm=lambda w: nn.Identity(), mgic=MGICConfig(group_size=8, coarsest=16))
    assert all(isinstance(n, nn.Identity) for n in block.norms)


def test_repr():
    block = MGICBlock(64, identity, mgic=MGICConfig(group_size=8, coarsest=16))
    assert repr(block).splitlines()[1] == "  64, group_size=8, coarsest=16, widths=[64, 32, 16], groups=[8, 4, 1]"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(channels=0), r"`channels` must be a positive integer, got 0"),
        (dict(group_size=0), r"`group_size` must be a positive integer, got 0"),
        (dict(group_size=-8), r"`group_size` must be a positive integer, got -8"),
        (dict(coarsest=0), r"`coarsest` must be a positive integer, got 0"),
        (dict(level_rule="v-cycle"), r"`level_rule` must be one of \('paper', 'official', 'at_most'\), got 'v-cycle'"),
        (dict(transfer_init="xavier"), r"`transfer_init` must be one of \('average', 'kaiming'\), got 'xavier'"),
        (dict(block="conv"), r"`block` must be a callable block\(width, groups\) -> nn.Module, got 'conv'"),
        (dict(block=lambda w, g: "conv"), r"`block`\(64, 8\) must return an nn.Module, got str"),
        (dict(block=lambda w, g: nn.Linear(w, w // 2)), r"`block`\(64, 8\) built a module with out_features=32"),
    ],
)
def test_impossible_arguments_raise_value_error(kwargs, message):
    arguments = dict(channels=64, block=identity, group_size=8, coarsest=16) | kwargs
    channels, block = arguments.pop("channels"), arguments.pop("block")
    with pytest.raises(ValueError, match=message):
        MGICBlock(channels, block, arguments)  # the MGIC fields as the mapping form of MGICConfig


def test_a_block_that_changes_the_width_at_run_time_is_caught():
    class Halve(nn.Module):
        def forward(self, x):
            return x[:, : x.shape[1] // 2]

    block = MGICBlock(64, lambda w, g: Halve(), mgic=MGICConfig(group_size=8, coarsest=16))
    with pytest.raises(ValueError, match=r"`block`\(16, 1\) returned 8 channels from 16"):
        block(torch.randn(3, 64))


@pytest.mark.parametrize("shape, level_block", [((32, 64), ChannelMixNormAct), ((2, 64, 6, 6), ConvNormAct)])
def test_traces_into_one_graph_without_breaks(shape, level_block):
    import torch._dynamo

    block = MGICBlock(64, lambda w, g: level_block(w, g), mgic=MGICConfig(group_size=8, coarsest=16))
    explanation = torch._dynamo.explain(block)(torch.randn(shape))
    assert explanation.graph_count == 1 and explanation.graph_break_count == 0, explanation.break_reasons


def test_group_width_sets_the_plan_and_reaches_the_level_blocks():
    built = []

    def level(width, groups):
        built.append((width, groups))
        return ChannelMixNormAct(width, groups)

    block = MGICBlock(112, level, group_width=lambda width: 6 * width, mgic=MGICConfig(group_size=64, coarsest=64))
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
    block = MGICBlock(40, identity, group_width=lambda width: 6 * width, mgic=MGICConfig(group_size=64, coarsest=64))
    assert block.widths == [40, 20] and block.group_widths == [240, 120]
    x = torch.randn(2, 40, 3, 3)
    torch.testing.assert_close(block(x), x)
    assert MGICBlock(64, identity, mgic=MGICConfig(group_size=8, coarsest=16)).group_widths == [64, 32, 16]


def _reference_cycle(block, x):
    """Algorithm 1 with dense block-diagonal matrices and torch's own batch norm, on the row-major
    [N, C] layout (the formulation the channel-major fast path must equal)."""
    import torch.nn.functional as F

    from mgic_geo.core.grouped import block_diagonal

    def bn(norm, t):
        return F.batch_norm(t, norm.running_mean.clone(), norm.running_var.clone(), norm.weight, norm.bias, True,
                            0.0, norm.eps)

    def level(j, t):
        mix, norm, _ = block.blocks[j]
        return torch.relu(bn(norm, t @ block_diagonal(mix.weight).t()))

    fine, restricted = [], []
    for R in block.restrictions:
        fine.append(x)
        x = x @ block_diagonal(R.weight).t()
        restricted.append(x)
    y = level(len(fine), x)
    for j in reversed(range(len(fine))):
        y = level(j, fine[j] + bn(block.norms[j], (y - restricted[j]) @ block_diagonal(block.prolongations[j].weight).t()))
    return y


@pytest.mark.parametrize("channels, group_size, coarsest", [(64, 8, 16), (40, 4, 8), (33, 4, 8)])
def test_node_features_run_channel_major_and_equal_the_reference(channels, group_size, coarsest):
    torch.manual_seed(0)
    block = MGICBlock(channels, lambda w, g: ChannelMixNormAct(w, g), mgic=MGICConfig(group_size=group_size, coarsest=coarsest)).double()
    for norm in block.modules():
        if isinstance(norm, nn.modules.batchnorm._BatchNorm):
            norm.weight.data.uniform_(0.5, 2), norm.bias.data.normal_()
    assert block.pointwise
    x = torch.randn(50, channels, dtype=torch.float64)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1 = block(x1)
    assert y1.is_contiguous()  # back in the caller's layout
    y2 = _reference_cycle(block, x2)
    torch.testing.assert_close(y1, y2)
    params = list(block.parameters())
    grad = torch.randn_like(y2)
    g1 = torch.autograd.grad(y1, [x1, *params], grad)
    g2 = torch.autograd.grad(y2, [x2, *params], grad)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def test_level_blocks_that_are_not_pointwise_keep_the_row_major_layout():
    seen = []

    class Spy(nn.Module):
        def forward(self, x):
            seen.append(x.is_contiguous())
            return x

    block = MGICBlock(32, lambda w, g: Spy(), mgic=MGICConfig(group_size=8, coarsest=8))
    assert not block.pointwise
    block(torch.randn(10, 32))
    assert seen and all(seen)


def _cases():
    graph = (lambda: MGICBlock(64, lambda w, g: ChannelMixNormAct(w, g), mgic=MGICConfig(group_size=8, coarsest=16)), (40, 64))
    image = (lambda: MGICBlock(32, lambda w, g: ConvNormAct(w, g), mgic=MGICConfig(group_size=4, coarsest=8)), (2, 32, 5, 5))
    return {"graph": graph, "image": image}


@pytest.mark.parametrize("case", ["graph", "image"])
def test_checkpoint_recomputes_the_same_values_gradients_and_running_statistics(case):
    build, shape = _cases()[case]
    torch.manual_seed(0)
    plain = build().double()
    torch.manual_seed(0)
    recomputed = build().double()
    recomputed.checkpoint = True
    assert "checkpoint" in MGICBlock.__init__.__code__.co_varnames
    x = torch.randn(shape, dtype=torch.float64)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = recomputed(x1), plain(x2)
    torch.testing.assert_close(y1, y2)
    grad = torch.randn_like(y2)
    y1.backward(grad), y2.backward(grad)
    torch.testing.assert_close(x1.grad, x2.grad)
    for (name, a), b in zip(recomputed.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)
    for (name, a), b in zip(recomputed.named_buffers(), plain.buffers()):
        torch.testing.assert_close(a, b, msg=name)  # running statistics updated once, not twice
    recomputed.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(recomputed(x), plain(x))


def test_checkpoint_is_a_constructor_option():
    block = MGICBlock(64, lambda w, g: ChannelMixNormAct(w, g), checkpoint=True, mgic=MGICConfig(group_size=8, coarsest=16))
    assert block.checkpoint
    assert not MGICBlock(64, lambda w, g: ChannelMixNormAct(w, g), mgic=MGICConfig(group_size=8, coarsest=16)).checkpoint

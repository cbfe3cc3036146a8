import torch
from torch import nn

from mgic_geo import MGICBlock, init_weights
from mgic_geo.layers import ChannelMixNormAct, ConvNormAct
from mgic_geo.core.config import MGICConfig


def test_init_weights_leaves_the_transfer_operators_alone():
    block = MGICBlock(64, lambda w, g: ConvNormAct(w, g), mgic=MGICConfig(group_size=8, coarsest=8))
    before = [op.weight.clone() for op in [*block.restrictions, *block.prolongations]]
    conv_before = block.blocks[0][0].weight.clone()
    init_weights(block)
    after = [op.weight for op in [*block.restrictions, *block.prolongations]]
    for old, new in zip(before, after):
        torch.testing.assert_close(old, new)
    assert not torch.equal(conv_before, block.blocks[0][0].weight)  # the rest was re-initialised


def test_constant_still_restricts_and_prolongs_to_itself_after_init_weights():
    block = init_weights(MGICBlock(128, lambda w, g: ChannelMixNormAct(w, g), mgic=MGICConfig(group_size=8, coarsest=16)))
    x = torch.full((3, 128), -1.5)
    for restrict in block.restrictions:
        x = restrict(x)
    torch.testing.assert_close(x, torch.full((3, 16), -1.5))
    for prolong in reversed(block.prolongations):
        x = prolong(x)
    torch.testing.assert_close(x, torch.full((3, 128), -1.5))


def test_init_weights_sets_batch_norm_and_biases():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    with torch.no_grad():
        model[1].weight.fill_(3.0)
        model[0].bias.fill_(1.0)
    init_weights(model)
    assert torch.equal(model[1].weight, torch.ones(4))
    assert torch.equal(model[0].bias, torch.zeros(4))


def test_zero_initialised_corrections_stay_zero():
    from mgic_geo.core.block import MGICBlock
    from mgic_geo.core.init import init_weights
    from mgic_geo.layers import ChannelMixNormAct

    block = MGICBlock(64, lambda w, g: ChannelMixNormAct(w, g), mgic=MGICConfig(group_size=8, coarsest=16, zero_init_correction=True))
    assert all(float(n.weight.abs().sum()) == 0 for n in block.norms)
    init_weights(block)
    block.reset_parameters()
    assert all(float(n.weight.abs().sum()) == 0 for n in block.norms)
    scale_one = MGICBlock(64, lambda w, g: ChannelMixNormAct(w, g),
                          mgic=MGICConfig(group_size=8, coarsest=16, zero_init_correction=False))
    assert all(bool((n.weight == 1).all()) for n in scale_one.norms)


def test_linear_layers_start_small_so_classifiers_start_near_chance():
    import math

    from mgic_geo.models import create_model

    torch.manual_seed(0)
    images, labels = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    for name in ("resnet56", "mgic_resnet56"):
        model = create_model(name, num_classes=10).train()
        assert float(model.fc.weight.std()) < 0.02
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        # fan-out Kaiming on the classifier gave 6.6 and 15.5 here
        assert abs(float(loss) - math.log(10)) < 0.1, (name, float(loss))

import math

import pytest

from mgic_geo.core.plan import LEVEL_RULES, ChannelHierarchy, level_groups, level_widths

WIDTHS = [3, 16, 24, 33, 40, 64, 72, 112, 160, 480, 960, 1024]


def test_plan_of_the_paper_example():
    plan = ChannelHierarchy.build(256, group_size=8, coarsest=16)
    assert plan.widths == (256, 128, 64, 32, 16)
    assert plan.groups == (32, 16, 8, 4, 1)
    assert plan.num_coarsenings == 4


@pytest.mark.parametrize("channels", [16, 17, 24, 31])
def test_paper_rule_gives_the_plain_block_below_twice_the_coarsest(channels):
    assert level_widths(channels, 16, "paper") == [channels]
    assert ChannelHierarchy.build(channels, group_size=4, coarsest=16).groups == (1,)


def test_paper_rule_never_coarsens_a_width_below_the_coarsest():
    assert level_widths(3, 8, "paper") == [3]


def test_official_rule_coarsens_at_least_once_and_stops_below_twice_the_coarsest():
    assert level_widths(24, 16, "official") == [24, 12]
    assert level_widths(16, 16, "official") == [16, 8]
    assert level_widths(256, 16, "official") == [256, 128, 64, 32, 16]
    assert level_widths(1, 8, "official") == [1]


def test_at_most_rule_halves_until_the_width_is_at_most_the_coarsest():
    assert level_widths(24, 16, "at_most") == [24, 12]
    assert level_widths(40, 16, "at_most") == [40, 20, 10]
    assert level_widths(16, 16, "at_most") == [16]
    assert level_widths(3, 8, "at_most") == [3]
    assert level_widths(1, 1, "at_most") == [1]


@pytest.mark.parametrize("channels", WIDTHS)
@pytest.mark.parametrize("coarsest", [8, 16, 64])
def test_at_most_rule_is_the_paper_rule_on_powers_of_two_and_at_most_one_level_deeper(channels, coarsest):
    paper, at_most = level_widths(channels, coarsest, "paper"), level_widths(channels, coarsest, "at_most")
    assert at_most[-1] <= max(coarsest, channels if channels <= coarsest else 0) or at_most[-1] == 1
    assert at_most[:len(paper)] == paper and len(at_most) - len(paper) in (0, 1)
    ratio = channels / coarsest
    if ratio >= 1 and ratio == 2 ** round(math.log2(ratio)):
        assert at_most == paper


def test_unknown_level_rule_names_the_rules():
    with pytest.raises(ValueError, match="at_most"):
        level_widths(64, 16, "sec41")


def test_widths_halve_with_floor():
    assert level_widths(33, 8) == [33, 16, 8]
    assert level_widths(1024, 16) == [1024, 512, 256, 128, 64, 32, 16]


@pytest.mark.parametrize("channels", WIDTHS)
@pytest.mark.parametrize("group_size", [4, 8, 16, 64])
@pytest.mark.parametrize("coarsest", [8, 16, 64])
@pytest.mark.parametrize("rule", LEVEL_RULES)
def test_group_counts_divide_every_width_their_operators_touch(channels, group_size, coarsest, rule):
    plan = ChannelHierarchy.build(channels, group_size=group_size, coarsest=coarsest, level_rule=rule)
    assert plan.groups[-1] == 1
    for fine, coarse, groups in zip(plan.widths[:-1], plan.widths[1:], plan.groups[:-1]):
        assert coarse == fine // 2
        assert fine % groups == 0 and coarse % groups == 0
        assert 1 <= groups <= max(1, fine // group_size)
        # the largest such count: no larger admissible one exists
        assert not any(
            fine % g == 0 and coarse % g == 0 for g in range(groups + 1, max(1, fine // group_size) + 1)
        )


def test_odd_width_gets_fewer_groups_instead_of_crashing():
    assert level_groups([33, 16, 8], 4) == [1, 4, 1]
    assert level_groups([112, 56, 28, 14], 8) == [14, 7, 2, 1]


@pytest.mark.parametrize(
    "kwargs, name, value",
    [
        (dict(channels=0, group_size=8, coarsest=16), "channels", "0"),
        (dict(channels=-4, group_size=8, coarsest=16), "channels", "-4"),
        (dict(channels=64, group_size=0, coarsest=16), "group_size", "0"),
        (dict(channels=64, group_size=8, coarsest=-1), "coarsest", "-1"),
        (dict(channels=64, group_size=8, coarsest=16, level_rule="fancy"), "level_rule", "'fancy'"),
        (dict(channels=64.0, group_size=8, coarsest=16), "channels", "64.0"),
    ],
)
def test_impossible_arguments_name_the_argument_and_value(kwargs, name, value):
    channels = kwargs.pop("channels")
    with pytest.raises(ValueError, match=rf"`{name}`.*{value}"):
        ChannelHierarchy.build(channels, **kwargs)


# --- group width: s_g and s_c measured on another width than the level's (an expanded width) ---

def _expanded(ratio):
    return lambda width: max(1, round(width * ratio))


def test_default_plan_has_the_level_widths_as_group_widths():
    plan = ChannelHierarchy.build(256, group_size=8, coarsest=16)
    assert plan.group_widths == plan.widths
    assert ChannelHierarchy((64, 32), (4, 1)).group_widths == (64, 32)


@pytest.mark.parametrize("channels", WIDTHS)
@pytest.mark.parametrize("group_size, coarsest", [(4, 8), (8, 16), (64, 64)])
@pytest.mark.parametrize("rule", LEVEL_RULES)
def test_identity_group_width_gives_the_default_plan(channels, group_size, coarsest, rule):
    default = ChannelHierarchy.build(channels, group_size=group_size, coarsest=coarsest, level_rule=rule)
    same = ChannelHierarchy.build(channels, group_size=group_size, coarsest=coarsest, level_rule=rule,
                                  group_width=lambda width: width)
    assert same == default


def test_plan_on_the_expanded_width_of_an_inverted_residual():
    plan = ChannelHierarchy.build(112, group_size=64, coarsest=64, group_width=_expanded(6))
    assert plan.widths == (112, 56, 28, 14)  # L = floor(log2(672 / 64)) = 3, although 112 < 2 * 64
    assert plan.group_widths == (672, 336, 168, 84)
    assert plan.groups == (8, 4, 2, 1)  # 10 = 672 // 64 does not divide 112, 8 does
    plan = ChannelHierarchy.build(40, group_size=64, coarsest=64, group_width=_expanded(3))
    assert plan.widths == (40,) and plan.groups == (1,)  # e = 120 < 2 * 64: the plain block


@pytest.mark.parametrize("bottleneck", [16, 64, 128, 256, 512])
@pytest.mark.parametrize("group_size, coarsest", [(8, 16), (32, 64), (64, 64)])
def test_a_linear_group_width_is_the_scaled_plan(bottleneck, group_size, coarsest):
    """Groups counted on c / 4 are the plan of the outer width with s_g and s_c scaled by 4 (ResNet-50)."""
    scaled = ChannelHierarchy.build(4 * bottleneck, group_size=4 * group_size, coarsest=4 * coarsest)
    plan = ChannelHierarchy.build(4 * bottleneck, group_size=group_size, coarsest=coarsest,
                                  group_width=lambda width: max(1, width // 4))
    assert plan.widths == scaled.widths and plan.groups == scaled.groups
    assert plan.group_widths == tuple(width // 4 for width in scaled.widths)


@pytest.mark.parametrize("channels", WIDTHS)
@pytest.mark.parametrize("ratio", [1, 2.3, 3, 4.5, 6])
@pytest.mark.parametrize("group_size, coarsest", [(4, 8), (16, 64), (64, 64)])
@pytest.mark.parametrize("rule", LEVEL_RULES)
def test_group_counts_on_a_group_width_divide_every_width(channels, ratio, group_size, coarsest, rule):
    group_width = _expanded(ratio)
    plan = ChannelHierarchy.build(channels, group_size=group_size, coarsest=coarsest, level_rule=rule,
                                  group_width=group_width)
    assert len(plan.widths) == len(plan.groups) == len(plan.group_widths) and plan.groups[-1] == 1
    assert plan.group_widths == tuple(group_width(width) for width in plan.widths)
    expected_levels = len(level_widths(group_width(channels), coarsest, rule))
    assert len(plan.widths) == expected_levels or plan.widths[-1] == 1  # only a width of 1 stops it early
    for fine, coarse, wide, groups in zip(plan.widths[:-1], plan.widths[1:], plan.group_widths, plan.groups):
        assert coarse == fine // 2 >= 1
        limit = max(1, wide // group_size)
        assert fine % groups == 0 and coarse % groups == 0 and wide % groups == 0 and 1 <= groups <= limit
        assert not any(fine % g == 0 and coarse % g == 0 and wide % g == 0 for g in range(groups + 1, limit + 1))


def test_a_wide_group_width_never_coarsens_to_zero_channels():
    plan = ChannelHierarchy.build(3, group_size=1, coarsest=1, group_width=lambda width: 1000 * width)
    assert plan.widths == (3, 1) and plan.group_widths == (3000, 1000)


@pytest.mark.parametrize("group_width, message", [
    ("6x", "`group_width` must be a callable"),
    (lambda width: 0, "`group_width` must map a level width to a positive integer, got 0 for 64"),
    (lambda width: width * 1.5, "`group_width` must map a level width to a positive integer, got 96.0"),
])
def test_a_bad_group_width_is_rejected(group_width, message):
    with pytest.raises(ValueError, match=message):
        ChannelHierarchy.build(64, group_size=8, coarsest=16, group_width=group_width)


def test_level_groups_with_group_widths():
    assert level_groups([112, 56, 28, 14], 64, [672, 336, 168, 84]) == [8, 4, 2, 1]
    assert level_groups([112, 56, 28, 14], 8) == level_groups([112, 56, 28, 14], 8, [112, 56, 28, 14])
    with pytest.raises(ValueError, match="`group_widths` needs one width per level"):
        level_groups([112, 56], 8, [672])

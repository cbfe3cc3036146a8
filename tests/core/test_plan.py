import pytest

from mgic_geo.core.plan import ChannelHierarchy, level_groups, level_widths

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


def test_widths_halve_with_floor():
    assert level_widths(33, 8) == [33, 16, 8]
    assert level_widths(1024, 16) == [1024, 512, 256, 128, 64, 32, 16]


@pytest.mark.parametrize("channels", WIDTHS)
@pytest.mark.parametrize("group_size", [4, 8, 16, 64])
@pytest.mark.parametrize("coarsest", [8, 16, 64])
@pytest.mark.parametrize("rule", ["paper", "official"])
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

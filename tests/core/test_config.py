"""MGICConfig: the one typed description of an MGIC hierarchy (mgic_geo.core.config)."""
import dataclasses
import doctest
import importlib

import pytest

from mgic_geo import MGICConfig
from mgic_geo.core.plan import ChannelHierarchy, largest_group_count


def test_defaults_are_the_papers_graph_and_resnet56_setting():
    config = MGICConfig()
    assert (config.group_size, config.coarsest, config.level_rule, config.transfer_init,
            config.zero_init_correction) == (8, 16, "paper", "average", True)


def test_docstring_example():
    result = doctest.testmod(importlib.import_module("mgic_geo.core.config"))
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"group_size": 0}, r"`group_size` must be a positive integer, got 0"),
        ({"group_size": 8.0}, r"`group_size` must be a positive integer, got 8.0"),
        ({"coarsest": -16}, r"`coarsest` must be a positive integer, got -16"),
        ({"coarsest": True}, r"`coarsest` must be a positive integer, got True"),
        ({"level_rule": "v"}, r"`level_rule` must be one of \('paper', 'official', 'at_most'\), got 'v'"),
        ({"transfer_init": "xavier"}, r"`transfer_init` must be one of \('average', 'kaiming'\), got 'xavier'"),
        ({"zero_init_correction": 1}, r"`zero_init_correction` must be True or False, got 1"),
    ],
)
def test_bad_fields_are_refused_when_the_config_is_made(fields, message):
    with pytest.raises(ValueError, match=message):
        MGICConfig(**fields)
    with pytest.raises(ValueError, match=message):
        MGICConfig.coerce(fields)


def test_frozen_and_comparable():
    config = MGICConfig(group_size=16, coarsest=32)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.group_size = 4
    assert config == MGICConfig(group_size=16, coarsest=32) and hash(config) == hash(MGICConfig(16, 32))


def test_coerce():
    base = MGICConfig(group_size=64, coarsest=64)
    assert MGICConfig.coerce(None) == MGICConfig()
    assert MGICConfig.coerce(None, default=base) is base
    assert MGICConfig.coerce(base, default=MGICConfig()) is base  # a config is complete: taken as it is
    assert MGICConfig.coerce({"level_rule": "official"}, default=base) == MGICConfig(64, 64, "official")
    assert MGICConfig.coerce({}) == MGICConfig()
    with pytest.raises(ValueError, match=r"`mgic` has unknown field\(s\) group; MGICConfig fields are group_size, "):
        MGICConfig.coerce({"group": 8})
    with pytest.raises(ValueError, match=r"`settings` must be an MGICConfig or a mapping of its fields, got \(8, 16\)"):
        MGICConfig.coerce((8, 16), name="settings")


def test_replace_validates_like_a_new_config():
    config = MGICConfig().replace(coarsest=32)
    assert config.coarsest == 32 and config.group_size == 8
    with pytest.raises(ValueError, match="`coarsest` must be a positive integer"):
        MGICConfig().replace(coarsest=0)
    with pytest.raises(ValueError, match=r"unknown field\(s\) s_c"):
        MGICConfig().replace(s_c=32)


@pytest.mark.parametrize("rule", ["paper", "official", "at_most"])
def test_hierarchy_is_the_plan_of_its_fields(rule):
    config = MGICConfig(group_size=4, coarsest=8, level_rule=rule)
    assert config.hierarchy(100) == ChannelHierarchy.build(100, group_size=4, coarsest=8, level_rule=rule)
    widened = config.hierarchy(40, group_width=lambda width: 6 * width)
    assert widened.group_widths[0] == 240


@pytest.mark.parametrize(
    "limit, widths, expected",
    [
        (8, (64, 32), 8),
        (10, (672, 112, 160), 8),  # 10 and 9 do not divide 112 and 160
        (4, (33, 16), 1),
        (0, (24,), 1),  # at least one group
        (3, (), 3),
    ],
)
def test_largest_group_count(limit, widths, expected):
    assert largest_group_count(limit, *widths) == expected

"""The channel hierarchy of an MGIC block: how many levels, which widths, how many groups.

Three level rules are offered, side by side (``mgic-geo experiment fidelity`` compares them on
every table row of the paper):

* ``"paper"`` (default, Algorithm 1): ``L = floor(log2(c / s_c))`` coarsenings; ``L = 0`` (that is
  ``c < 2 s_c``) gives the plain, fully coupled block.
  ``c=256, s_c=16`` -> ``[256, 128, 64, 32, 16]``; ``c=24, s_c=16`` -> ``[24]``.
* ``"official"`` (the authors' released code): coarsen at least once, stop as soon as the width
  drops below ``2 s_c``. ``c=256, s_c=16`` -> ``[256, 128, 64, 32, 16]``; ``c=24, s_c=16`` ->
  ``[24, 12]``.
* ``"at_most"`` (the paper's Sec. 4.1: "the number of channels is halved between the levels until
  reaching the coarsest level, where the number of channels is smaller or equal to s_c"): halve
  while the width is above ``s_c``, so the coarsest width is at most ``s_c``. It agrees with
  ``"paper"`` when ``c / s_c`` is a power of two (and when ``c <= s_c``) and coarsens once more
  otherwise: ``c=256, s_c=16`` -> ``[256, 128, 64, 32, 16]``; ``c=24, s_c=16`` -> ``[24, 12]``.

Algorithm 1's down loop, ``for j = 0 : n_levels``, read literally, restricts ``n_levels + 1`` times;
but its coarse block acts on ``x^(n_levels)`` and its up loop starts at ``n_levels - 1``, so the last
restriction's output is never read. That reading therefore builds the ``"paper"`` network plus one
dead map, and is not offered as a rule.

Widths halve with floor (``33 -> 16 -> 8``). On each level ``j`` one group count ``g_j`` serves the
level's grouped block and both transfer operators ``R_j``/``P_j``; it is the largest count
``<= c_j / s_g`` that divides every width those operators touch (``c_j`` and ``c_{j+1}``), so odd
widths never crash, they just get fewer (possibly one) groups. The coarsest level has one group.

**Group width** (optional, ``group_width(width) -> int``): for level blocks whose grouped maps act
on a width other than the level's own, such as an inverted residual whose 1x1 maps touch its
expanded width ``e_j = t w_j``, ``s_g`` and ``s_c`` can be measured on that width instead:

* the number of coarsenings is the level rule's for the finest group width: ``L = floor(log2(
  group_width(c) / s_c))`` under ``"paper"`` (the other rules likewise), so the coarsest
  group width is about ``s_c``; the level widths still halve from ``c`` with floor (never to zero);
* ``g_j`` is the largest count ``<= group_width(c_j) / s_g`` that divides ``c_j``, ``c_{j+1}`` and
  ``group_width(c_j)``.

``c=112, s_g=s_c=64, group_width=6w`` -> widths ``[112, 56, 28, 14]``, group widths
``[672, 336, 168, 84]``, groups ``[8, 4, 2, 1]``. Without ``group_width`` (the default) the group
width is the level width and everything above reduces to the plain rules.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from mgic_geo.validation import check_int

LEVEL_RULES = ("paper", "official", "at_most")


def level_widths(channels: int, coarsest: int, level_rule: str = "paper") -> list[int]:
    """Channel widths from the finest (``channels``) to the coarsest level."""
    check_int("channels", channels)
    check_int("coarsest", coarsest)
    widths = [channels]
    if level_rule == "paper":
        levels = max(0, math.floor(math.log2(channels / coarsest))) if channels >= coarsest else 0
        for _ in range(levels):
            widths.append(widths[-1] // 2)
    elif level_rule == "official":
        while widths[-1] >= 2:  # never coarsen to zero channels
            widths.append(widths[-1] // 2)
            if widths[-1] < 2 * coarsest:
                break
    elif level_rule == "at_most":
        while widths[-1] > coarsest:  # coarsest >= 1, so never to zero channels
            widths.append(widths[-1] // 2)
    else:
        raise ValueError(f"`level_rule` must be one of {LEVEL_RULES}, got {level_rule!r}")
    return widths


def level_groups(widths: list[int], group_size: int, group_widths: list[int] | None = None) -> list[int]:
    """Group count per level (the coarsest is always 1); see the module docstring.

    ``group_widths[j]`` is the width level ``j``'s groups are counted on (default: ``widths``)."""
    check_int("group_size", group_size)
    if group_widths is None:
        group_widths = widths
    elif len(group_widths) != len(widths):
        raise ValueError(f"`group_widths` needs one width per level ({len(widths)}), got {list(group_widths)!r}")
    groups = [largest_group_count(wide // group_size, fine, coarse, wide)
              for fine, coarse, wide in zip(widths[:-1], widths[1:], group_widths[:-1])]
    return groups + [1]


def largest_group_count(limit: int, *widths: int) -> int:
    """The group rule of the whole package: the largest count ``g <= limit`` (at least 1) that
    divides every one of ``widths``, so a grouped map between any two of them never splits a
    channel group. MGIC levels call it with ``limit = c_j // s_g``; grouped maps that widen or
    narrow between MGIC stages with ``limit = (width groups are counted on) // s_g``."""
    for groups in range(max(1, limit), 0, -1):
        if all(width % groups == 0 for width in widths):
            return groups
    return 1


def _group_width(group_width: Callable[[int], int], width: int) -> int:
    value = group_width(width)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`group_width` must map a level width to a positive integer, got {value!r} for {width}")
    return value


@dataclass(frozen=True)
class ChannelHierarchy:
    """Widths, group counts and group widths of every level, finest first (``group_widths``
    defaults to ``widths``)."""

    widths: tuple[int, ...]
    groups: tuple[int, ...]
    group_widths: tuple[int, ...] = ()

    def __post_init__(self):
        if not self.group_widths:
            object.__setattr__(self, "group_widths", tuple(self.widths))

    @classmethod
    def build(
        cls,
        channels: int,
        *,
        group_size: int,
        coarsest: int,
        level_rule: str = "paper",
        group_width: Callable[[int], int] | None = None,
    ) -> "ChannelHierarchy":
        """The plan of a block of ``channels`` channels; ``group_width`` as in the module docstring."""
        check_int("group_size", group_size)
        if group_width is None:
            widths = level_widths(channels, coarsest, level_rule)
            return cls(tuple(widths), tuple(level_groups(widths, group_size)))
        if not callable(group_width):
            raise ValueError(f"`group_width` must be a callable group_width(width) -> int, got {group_width!r}")
        check_int("channels", channels)
        coarsenings = len(level_widths(_group_width(group_width, channels), coarsest, level_rule)) - 1
        widths = [channels]
        while len(widths) <= coarsenings and widths[-1] >= 2:  # never coarsen to zero channels
            widths.append(widths[-1] // 2)
        group_widths = [_group_width(group_width, width) for width in widths]
        return cls(tuple(widths), tuple(level_groups(widths, group_size, group_widths)), tuple(group_widths))

    @property
    def num_coarsenings(self) -> int:
        """``L``: the number of restrictions (0 means the plain fully coupled block)."""
        return len(self.widths) - 1

"""The channel hierarchy of an MGIC block: how many levels, which widths, how many groups.

Two level rules are offered, side by side:

* ``"paper"`` (default, Algorithm 1): ``L = floor(log2(c / s_c))`` coarsenings; ``L = 0`` (that is
  ``c < 2 s_c``) gives the plain, fully coupled block.
  ``c=256, s_c=16`` -> ``[256, 128, 64, 32, 16]``; ``c=24, s_c=16`` -> ``[24]``.
* ``"official"`` (the authors' released code): coarsen at least once, stop as soon as the width
  drops below ``2 s_c``. ``c=256, s_c=16`` -> ``[256, 128, 64, 32, 16]``; ``c=24, s_c=16`` ->
  ``[24, 12]``.

Widths halve with floor (``33 -> 16 -> 8``). On each level ``j`` one group count ``g_j`` serves the
level's grouped block and both transfer operators ``R_j``/``P_j``; it is the largest count
``<= c_j / s_g`` that divides every width those operators touch (``c_j`` and ``c_{j+1}``), so odd
widths never crash, they just get fewer (possibly one) groups. The coarsest level has one group.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from mgic_geo.validation import check_int

LEVEL_RULES = ("paper", "official")


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
    else:
        raise ValueError(f"`level_rule` must be one of {LEVEL_RULES}, got {level_rule!r}")
    return widths


def level_groups(widths: list[int], group_size: int) -> list[int]:
    """Group count per level (the coarsest is always 1); see the module docstring."""
    check_int("group_size", group_size)
    groups = []
    for fine, coarse in zip(widths[:-1], widths[1:]):
        limit = max(1, fine // group_size)
        groups.append(max(g for g in range(1, limit + 1) if fine % g == 0 and coarse % g == 0))
    return groups + [1]


@dataclass(frozen=True)
class ChannelHierarchy:
    """Widths and group counts of every level, finest first."""

    widths: tuple[int, ...]
    groups: tuple[int, ...]

    @classmethod
    def build(
        cls, channels: int, *, group_size: int, coarsest: int, level_rule: str = "paper"
    ) -> "ChannelHierarchy":
        check_int("group_size", group_size)
        widths = level_widths(channels, coarsest, level_rule)
        return cls(tuple(widths), tuple(level_groups(widths, group_size)))

    @property
    def num_coarsenings(self) -> int:
        """``L``: the number of restrictions (0 means the plain fully coupled block)."""
        return len(self.widths) - 1

"""Argument checks shared by the package, so every bad value gets the same clear message."""
from __future__ import annotations


def check_int(name: str, value, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an ``int`` (not a ``bool``) of at least ``minimum``; otherwise raise
    ``ValueError`` naming ``name`` (an argument or a command-line option) and the value."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        wanted = {1: "a positive integer", 0: "a non-negative integer"}.get(minimum, f"an integer >= {minimum}")
        raise ValueError(f"`{name}` must be {wanted}, got {value!r}")
    return value


def check_choice(name: str, value, allowed: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of the strings ``allowed``; otherwise raise ``ValueError``
    naming ``name``, the allowed values and the value."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"`{name}` must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value

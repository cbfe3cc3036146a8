"""Seeded, stratified train/validation splits, shared by the point-cloud and the image data modules.

A split is a pure function of the items' keys (a file's path relative to its data root, or an
image's index in an archive), their labels, the fraction and the seed. It does not depend on the
order in which the items are listed (a file system lists folders in any order), nor on where the
data root is mounted, and adding an item moves no other item from one side to the other unless a
class's validation count changes.

- Counts (:func:`validation_counts`): class ``c`` with ``n_c`` items has the quota ``f * n_c``
  (``f`` = ``fraction``, taken as the nearest fraction with a denominator up to 10⁹, so 0.1 is
  exactly 1/10). Each class gets its quota rounded down, and the ``round(f * N) - sum(floors)``
  classes with the largest remainders one more (ties: the smaller label first), so the total is
  ``f * N`` rounded half up and every class is within one of its quota. Then a class with at least
  two items gets at least one validation item and keeps at least one training item; a class with
  one item keeps it for training. ``fraction=0`` means no validation items at all.
- Choice (:func:`stratified_split`): within a class, items are ranked by a keyed hash
  (BLAKE2b of ``"<seed>/<key>"``); the first ``count`` go to validation.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable, Sequence
from fractions import Fraction


def check_fraction(name: str, value) -> float:
    """``value`` as a float in ``[0, 1)``; a ``ValueError`` naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value < 1:
        raise ValueError(f"`{name}` must be a number in [0, 1) (the share of each class's training files held out "
                         f"for validation; 0: none), got {value!r}")
    return float(value)


def validation_counts(class_sizes: Sequence[int], fraction: float) -> list[int]:
    """How many of each class's items go to validation (see the module docstring for the rule).

    Args:
        class_sizes (Sequence[int]): items per class, in label order.
        fraction (float): the share held out, in ``[0, 1)``.
    """
    fraction = Fraction(check_fraction("fraction", fraction)).limit_denominator(10**9)
    if fraction == 0:
        return [0] * len(class_sizes)
    quotas = [fraction * n for n in class_sizes]
    counts = [math.floor(q) for q in quotas]
    extra = math.floor(fraction * sum(class_sizes) + Fraction(1, 2)) - sum(counts)
    by_remainder = sorted(range(len(quotas)), key=lambda c: (-(quotas[c] - counts[c]), c))
    for c in by_remainder[:extra]:
        counts[c] += 1
    return [0 if n < 2 else min(max(count, 1), n - 1) for count, n in zip(counts, class_sizes)]


def _rank(seed: int, key: str) -> bytes:
    return hashlib.blake2b(f"{seed}/{key}".encode(), digest_size=16).digest()


def stratified_split(keys: Sequence[str], labels: Sequence[Hashable], fraction: float,
                     seed: int) -> tuple[list[int], list[int]]:
    """Split items into training and validation, per class, seeded.

    Args:
        keys (Sequence[str]): one unique string per item that identifies it wherever the data lie (e.g. its path
            relative to the data root, with ``/`` separators).
        labels (Sequence[Hashable]): the items' classes (sortable, e.g. class indices).
        fraction (float): the share of each class held out for validation, in ``[0, 1)``.
        seed (int): picks which items are held out; the same seed and items give the same split.

    Returns:
        tuple[list[int], list[int]]: ``(train, val)``: the indices into ``keys`` of each side, ascending.

    Raises:
        ValueError: for a bad ``fraction``, keys and labels of different lengths, or a repeated key.
    """
    check_fraction("fraction", fraction)
    if len(keys) != len(labels):
        raise ValueError(f"stratified_split: {len(keys)} keys but {len(labels)} labels")
    if len(set(keys)) != len(keys):
        seen, repeated = set(), None
        for key in keys:
            if key in seen:
                repeated = key
                break
            seen.add(key)
        raise ValueError(f"stratified_split: the key {repeated!r} names more than one item")
    classes = sorted(set(labels))
    members = {label: [] for label in classes}
    for index, label in enumerate(labels):
        members[label].append(index)
    counts = validation_counts([len(members[label]) for label in classes], fraction)
    val: list[int] = []
    for label, count in zip(classes, counts):
        ranked = sorted(members[label], key=lambda i: _rank(seed, keys[i]))
        val += ranked[:count]
    held_out = set(val)
    return [i for i in range(len(keys)) if i not in held_out], sorted(val)

"""Seeded, stratified train/validation splits (mgic_geo.data.split): counts per class, disjointness,
seeding, independence of listing order, and bad arguments."""
import random
from fractions import Fraction

import pytest

from mgic_geo.data.split import check_fraction, stratified_split, validation_counts

# files per class of the official ModelNet-10 train split (bathtub .. toilet), 3,991 in all
MODELNET10_TRAIN = [106, 515, 889, 200, 200, 465, 200, 680, 392, 344]


def items(sizes):
    keys = [f"class{c}/train/file_{i:04d}.pcd" for c, n in enumerate(sizes) for i in range(n)]
    labels = [c for c, n in enumerate(sizes) for _ in range(n)]
    return keys, labels


def test_counts_are_proportional_within_rounding_and_sum_to_the_rounded_total():
    counts = validation_counts(MODELNET10_TRAIN, 0.1)
    assert counts == [11, 52, 89, 20, 20, 46, 20, 68, 39, 34] and sum(counts) == 399  # round(399.1)
    for count, size in zip(counts, MODELNET10_TRAIN):
        assert abs(count - Fraction(size, 10)) < 1
    assert validation_counts([5000] * 10, 0.1) == [500] * 10  # CIFAR-10's training split
    assert validation_counts([100, 100, 1], 0.25) == [25, 25, 0]  # one file: it stays for training
    assert validation_counts([10, 10, 2], 0.01) == [1, 1, 1]  # every class with two files gets one
    assert validation_counts([2, 3], 0.9) == [1, 2]  # and keeps one for training
    assert validation_counts(MODELNET10_TRAIN, 0) == [0] * 10


def test_the_split_is_disjoint_stratified_and_seeded():
    keys, labels = items(MODELNET10_TRAIN)
    train, val = stratified_split(keys, labels, 0.1, seed=0)
    assert not set(train) & set(val) and sorted(train + val) == list(range(len(keys)))
    assert train == sorted(train) and val == sorted(val)
    assert [sum(labels[i] == c for i in val) for c in range(10)] == validation_counts(MODELNET10_TRAIN, 0.1)
    assert stratified_split(keys, labels, 0.1, seed=0) == (train, val)  # same seed, same split
    other = stratified_split(keys, labels, 0.1, seed=1)[1]
    assert other != val and len(other) == len(val)
    # not the first or last files of each class: spread over the class
    firsts = {i for c in range(10) for i in range(sum(MODELNET10_TRAIN[:c]), sum(MODELNET10_TRAIN[:c]) + 11)}
    assert len(set(val) & firsts) < len(val) / 2


def test_the_split_does_not_depend_on_the_listing_order():
    keys, labels = items([30, 17, 9, 4])
    _, val = stratified_split(keys, labels, 0.2, seed=3)
    chosen = {keys[i] for i in val}
    order = list(range(len(keys)))
    random.Random(0).shuffle(order)
    _, shuffled = stratified_split([keys[i] for i in order], [labels[i] for i in order], 0.2, seed=3)
    assert {keys[order[i]] for i in shuffled} == chosen


def test_adding_a_file_moves_no_other_file_unless_the_count_changes():
    keys, labels = items([30, 20])
    _, val = stratified_split(keys, labels, 0.1, seed=0)
    grown_keys, grown_labels = keys + ["class0/train/file_9999.pcd"], labels + [0]  # class 0: 3.1 -> still 3
    _, grown = stratified_split(grown_keys, grown_labels, 0.1, seed=0)
    before = {keys[i] for i in val}
    after = {grown_keys[i] for i in grown}
    assert len(after) == len(before) and len(after - before) <= 1
    assert {k for k in before if k.startswith("class1")} == {k for k in after if k.startswith("class1")}


@pytest.mark.parametrize("value", [-0.1, 1.0, 1, float("nan"), True, "0.1", None])
def test_bad_fractions_are_named(value):
    with pytest.raises(ValueError, match=r"`val_fraction` must be a number in \[0, 1\)"):
        check_fraction("val_fraction", value)


def test_bad_keys():
    with pytest.raises(ValueError, match="2 keys but 3 labels"):
        stratified_split(["a", "b"], [0, 0, 1], 0.5, 0)
    with pytest.raises(ValueError, match="the key 'a' names more than one item"):
        stratified_split(["a", "b", "a"], [0, 0, 1], 0.5, 0)

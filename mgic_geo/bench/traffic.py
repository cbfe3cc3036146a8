"""The memory-traffic floor of a computation: bytes its operators must move ÷ measured bandwidth.

A block whose operators each do little arithmetic per byte (grouped 1x1 maps with 8 channels per
group, batch norms, ReLUs, additions) cannot run faster than the time it takes to read every
operator's inputs and write its outputs once. :func:`count_traffic` counts those bytes, operator by
operator, for one call of a function (forward and backward alike: autograd's backward operators go
through the same dispatcher); :func:`measure_bandwidth` measures what this device sustains on a
large copy. Their quotient is the floor the benchmarks print beside the measured time.

What counts as traffic, per ATen operator:

* reads: the bytes of every tensor argument, at most its storage (a broadcast ``expand`` reads
  its small storage, not the broadcast shape);
* writes: the bytes of every tensor result;
* views (``view``, ``t``, ``transpose``, ``expand``, ``detach``, ...) and allocations
  (``empty``) move nothing.

This is a lower bound of what the operator really moves: a matrix multiply that re-reads its
operands from memory, a reduction that takes two passes, or cache misses between operators all add
to it, and nothing that fuses two operators is assumed. The floor therefore says how fast the given
sequence of operators could run at best, not how fast the mathematics could.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

GIB = 2**30
# Operators that return their input's data under new metadata without being flagged as views.
_NO_TRAFFIC = frozenset({"_unsafe_view", "detach", "alias", "lift_fresh", "empty", "empty_strided", "new_empty_strided"})


def _tensor_bytes(tensor: Tensor) -> int:
    logical = tensor.numel() * tensor.element_size()
    try:
        return min(logical, tensor.untyped_storage().nbytes())
    except (RuntimeError, NotImplementedError):  # tensors without storage (sparse, nested)
        return logical


@dataclass
class Traffic:
    """Bytes read and written by the operators of one call, in total and per operator name."""

    read: int = 0
    written: int = 0
    operators: int = 0
    by_operator: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return self.read + self.written

    def top(self, count: int = 5) -> list[tuple[str, int]]:
        """The ``count`` operators that move the most bytes."""
        return self.by_operator.most_common(count)


class _TrafficCounter(TorchDispatchMode):
    def __init__(self, traffic: Traffic):
        super().__init__()
        self.traffic = traffic

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if func.is_view or func.overloadpacket.__name__ in _NO_TRAFFIC:
            return result
        read = sum(_tensor_bytes(a) for a in tree_flatten((args, kwargs))[0] if isinstance(a, Tensor))
        written = sum(_tensor_bytes(r) for r in tree_flatten(result)[0] if isinstance(r, Tensor))
        self.traffic.read += read
        self.traffic.written += written
        self.traffic.operators += 1
        self.traffic.by_operator[func.overloadpacket.__name__] += read + written
        return result


def count_traffic(function: Callable[[], object]) -> Traffic:
    """Call ``function()`` once and count the bytes each ATen operator it runs reads and writes.

    Example::

        >>> x = torch.randn(1024, 256)
        >>> traffic = count_traffic(lambda: torch.relu(x))
        >>> traffic.read == traffic.written == x.numel() * 4
        True
    """
    traffic = Traffic()
    with _TrafficCounter(traffic):
        function()
    return traffic


def measure_bandwidth(device: torch.device | str = "cpu", *, mebibytes: int = 256, repeats: int = 5) -> float:
    """Sustained bytes per second of a large tensor copy (read + write counted), the best of
    ``repeats`` after one warm-up copy. ``mebibytes`` should exceed the last-level cache."""
    device = torch.device(device)
    source = torch.ones(mebibytes * 2**20 // 4, device=device)
    target = torch.empty_like(source)
    best = float("inf")
    for attempt in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        target.copy_(source)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if attempt:
            best = min(best, time.perf_counter() - start)
    return 2 * source.numel() * source.element_size() / best

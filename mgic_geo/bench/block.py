"""Forward+backward time and peak memory of a dense block vs its MGIC block (``mgic-geo bench block``).

Two cases, each at the widths ``c`` of ``--widths`` (default 64, 256, 1024):

* ``graph``: node features ``[N, c]`` (``N = --nodes``, default 32,768). Dense block:
  ``ChannelMixNormAct(c, 1)`` (a 1x1 mix, BN, ReLU); MGIC block:
  ``MGICBlock(c, lambda w, g: ChannelMixNormAct(w, g), MGICConfig(group_size=8, coarsest=16))``.
* ``image``: ``[B, c, H, W]`` (``B = --batch`` 32, ``H = W = --size`` 32). Dense block:
  ``ConvNormAct(c, 1)`` (3x3 conv, BN, ReLU); MGIC block: the same ``MGICBlock`` around
  ``ConvNormAct(w, g)``.

A third variant, ``grouped``, is the MGIC block's finest level block alone (``c / s_g`` groups of
``s_g`` channels, no transfer operators, no coarse levels): what grouping costs by itself, and the
work the rest of the V-cycle adds to it to couple the groups.

Dense and MGIC are measured side by side in one run, with the same seed and the same input.

Timing
    Train mode, autograd on (no ``torch.no_grad``), the input requires grad (as for a block inside
    a network, so backward also computes the input gradient). One pass is ``y = block(x)`` then
    ``y.backward(ones)``; ``--warmup`` untimed passes, then the median of ``--repeats`` timed
    passes (``time.perf_counter``, with ``torch.cuda.synchronize`` around each pass on CUDA).
    Gradients are dropped (``set_to_none``) between passes, outside the timed region.

Peak memory on CPU
    Every (case, c, variant) is measured in fresh processes forked from a ``multiprocessing``
    forkserver that has imported torch once (a spawned interpreter pays seconds of torch import
    per measurement; a fork of a process that never ran a torch op is as fresh: its heap holds
    no tensors and no allocator cache from other measurements). One process times the passes with
    glibc's default allocator settings. Another measures memory: it first pins glibc's mmap
    threshold at 128 KiB (``mallopt``), so every tensor is its own mapping and leaves the RSS when
    freed (the default adaptive threshold recycles tensors up to 32 MiB inside the heap, invisible
    to the RSS); allocates the module, the input and the output gradient; runs one warm-up pass
    (pages in kernel code, starts the thread pool); resets the kernel's peak-RSS mark
    (``/proc/self/clear_refs``); reads the current RSS from ``/proc/self/statm``; runs one
    forward+backward pass; and reports ``ru_maxrss`` (``getrusage(RUSAGE_SELF)``) minus that
    baseline: activations saved for backward, parameter and input gradients, and temporaries.
    (Pinned mappings page-fault afresh on every allocation, which is why the timing runs apart.)
    Tensors under 128 KiB still come from the heap and may not show: tiny runs can read 0 MiB.

Peak memory on CUDA
    ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus
    ``memory_allocated`` at the same point (after the warm-up passes); measured in-process.

Memory-traffic floor
    In the timing process, after the timed passes, one more pass runs under
    :func:`mgic_geo.bench.traffic.count_traffic`, which adds up the bytes every ATen operator of the
    forward and the backward reads and writes, and :func:`~mgic_geo.bench.traffic.measure_bandwidth`
    measures the bandwidth of a 256 MiB copy. ``MGIC floor ms`` is the MGIC block's bytes divided
    by that bandwidth: no run of the same operators can be faster. A block near its floor is bound
    by memory traffic, and only moving fewer bytes (fusing operators) makes it faster.

MACs (forward multiply-accumulates, the paper's convention: BatchNorm, ReLU and additions are
ignored) come from :func:`mgic_geo.complexity.profile`: ``N c^2`` for the dense 1x1 mix and
``B H W 9 c^2`` for the dense 3x3 convolution.
"""
from __future__ import annotations

import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn
from tqdm import tqdm

from mgic_geo.bench.block_table import table_row
from mgic_geo.bench.machine import resolve_devices
from mgic_geo.bench.process import run_in_fresh_process, synchronize, worker_context
from mgic_geo.bench.traffic import count_traffic, measure_bandwidth
from mgic_geo.complexity import count_parameters, profile
from mgic_geo.core.block import MGICBlock
from mgic_geo.core.config import MGICConfig
from mgic_geo.layers.conv_norm_act import ChannelMixNormAct, ConvNormAct
from mgic_geo.memory import peak_rss_growth, return_freed_memory_to_os
from mgic_geo.validation import check_int

CASES = ("graph", "image")
VARIANTS = ("dense", "grouped", "MGIC")
DEFAULT_WIDTHS = (64, 256, 1024)


@dataclass(frozen=True)
class Measurement:
    """Everything one worker needs to measure one (device, case, c, variant); picklable."""

    device: str
    case: str
    variant: str
    width: int
    nodes: int
    batch: int
    size: int
    group_size: int
    coarsest: int
    warmup: int
    repeats: int
    channels_last: bool
    seed: int
    num_threads: int
    checkpoint: bool = False
    compile: bool = False

    def describe(self) -> str:
        return f"{self.device} {self.case} c={self.width} {self.variant}{' compiled' if self.compile else ''}"


# ----------------------------------------------------------------------------------------------
# What is measured


def build_block(case: str, variant: str, width: int, *, group_size: int = 8, coarsest: int = 16,
                checkpoint: bool = False) -> nn.Module:
    """The dense block, the grouped finest level alone or the MGIC block of ``case`` at width
    ``width`` (``checkpoint``: the MGIC block recomputes its levels in backward,
    :class:`~mgic_geo.MGICBlock`)."""
    level_block = {"graph": ChannelMixNormAct, "image": ConvNormAct}[case]
    if variant == "dense":
        return level_block(width, 1)
    if variant == "grouped":
        return level_block(width, max(1, width // group_size))
    return MGICBlock(width, lambda w, g: level_block(w, g), MGICConfig(group_size=group_size, coarsest=coarsest),
                     checkpoint=checkpoint)


def input_shape(case: str, width: int, *, nodes: int, batch: int, size: int) -> tuple[int, ...]:
    return (nodes, width) if case == "graph" else (batch, width, size, size)


def count_macs(spec: "Measurement") -> int:
    """Forward MACs of the measured block, from :func:`mgic_geo.complexity.profile` on a copy built
    on the ``meta`` device (shapes only: nothing is computed)."""
    with torch.device("meta"):
        block = build_block(spec.case, spec.variant, spec.width, group_size=spec.group_size, coarsest=spec.coarsest)
        x = torch.empty(input_shape(spec.case, spec.width, nodes=spec.nodes, batch=spec.batch, size=spec.size))
    return profile(block, x).macs


def _forward_backward(block: nn.Module, x: Tensor, grad_output: Tensor) -> None:
    block(x).backward(grad_output)


def _drop_gradients(block: nn.Module, x: Tensor) -> None:
    # Outside the timed region, so every pass allocates its gradients afresh, as a training step does.
    block.zero_grad(set_to_none=True)
    x.grad = None


def _timed_passes(block: nn.Module, x: Tensor, grad_output: Tensor, passes: int) -> list[float]:
    seconds = []
    for _ in range(passes):
        _drop_gradients(block, x)
        synchronize(x.device)
        start = time.perf_counter()
        _forward_backward(block, x, grad_output)
        synchronize(x.device)
        seconds.append(time.perf_counter() - start)
    _drop_gradients(block, x)
    return seconds


def _prepare(spec: Measurement) -> tuple[nn.Module, Tensor, Tensor]:
    device = torch.device(spec.device)
    torch.manual_seed(spec.seed)
    block = build_block(spec.case, spec.variant, spec.width, group_size=spec.group_size, coarsest=spec.coarsest,
                        checkpoint=spec.checkpoint)
    block = block.to(device).train()
    if spec.compile:  # compiled in the first warm-up pass
        block = torch.compile(block)
    # Reseed so the input does not depend on how many numbers the block's init drew: dense and
    # MGIC see the same input.
    torch.manual_seed(spec.seed + 1)
    shape = input_shape(spec.case, spec.width, nodes=spec.nodes, batch=spec.batch, size=spec.size)
    x = torch.randn(shape, device=device)
    if spec.case == "image" and spec.channels_last:
        block = block.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    grad_output = torch.ones_like(x)  # both blocks preserve the shape (and the memory format)
    x.requires_grad_(True)
    return block, x, grad_output


def _describe_block(spec: Measurement, block: nn.Module) -> dict:
    return {
        "params": count_parameters(block),
        "macs": count_macs(spec),
        "levels": len(block.widths) if isinstance(getattr(block, "_orig_mod", block), MGICBlock) else 1,
    }


def _timing(seconds: list[float]) -> dict:
    return {"seconds": seconds, "ms": 1e3 * statistics.median(seconds)}


# ----------------------------------------------------------------------------------------------
# CPU: one forked worker per measurement, memory from the peak RSS


def _time_cpu(spec: Measurement) -> dict:
    """Warm-up and timed passes with glibc's default allocator settings (a normal training run)."""
    torch.set_num_threads(spec.num_threads)
    block, x, grad_output = _prepare(spec)
    _timed_passes(block, x, grad_output, spec.warmup)
    seconds = _timed_passes(block, x, grad_output, spec.repeats)
    return {**_timing(seconds), **_describe_block(spec, block), **_traffic(block, x, grad_output)}


def _traffic(block: nn.Module, x: Tensor, grad_output: Tensor) -> dict:
    if hasattr(block, "_orig_mod"):  # compiled kernels are not ATen operators: nothing to count
        return {"traffic_bytes": float("nan"), "bandwidth": measure_bandwidth(x.device)}
    traffic = count_traffic(lambda: _forward_backward(block, x, grad_output))
    _drop_gradients(block, x)
    return {"traffic_bytes": traffic.total, "bandwidth": measure_bandwidth(x.device)}


def _peak_memory_cpu(spec: Measurement) -> dict:
    """Peak RSS growth of one forward+backward pass, with an RSS-faithful allocator.

    A process of its own: once the mmap threshold is pinned, every mid-size tensor page-faults
    afresh, which would slow the block with more, smaller tensors (MGIC) in a timed run; and a
    process that has already run with the default settings keeps freed chunks in the heap, where
    their reuse inflates or hides RSS."""
    malloc_pinned = return_freed_memory_to_os()
    torch.set_num_threads(spec.num_threads)
    block, x, grad_output = _prepare(spec)
    _timed_passes(block, x, grad_output, 1)  # pages in kernel code, starts the thread pool
    peak, peak_reset = peak_rss_growth(lambda: _timed_passes(block, x, grad_output, 1))
    return {"peak_bytes": peak, "peak_reset": peak_reset, "malloc_pinned": malloc_pinned}


WORKER_TASKS = {"time": _time_cpu, "memory": _peak_memory_cpu}


def _in_fresh_process(task: str, spec: Measurement, context) -> dict:
    return run_in_fresh_process(WORKER_TASKS[task], spec, context, f"bench-block {task} of {spec.describe()}")


def _measure_cpu(spec: Measurement, context) -> dict:
    return {**_in_fresh_process("time", spec, context), **_in_fresh_process("memory", spec, context)}


# ----------------------------------------------------------------------------------------------
# CUDA: in-process, memory from the caching allocator's statistics


def _measure_cuda(spec: Measurement) -> dict:
    device = torch.device(spec.device)
    block, x, grad_output = _prepare(spec)
    _timed_passes(block, x, grad_output, spec.warmup)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    baseline = torch.cuda.memory_allocated(device)
    seconds = _timed_passes(block, x, grad_output, spec.repeats)
    peak = max(0, torch.cuda.max_memory_allocated(device) - baseline)
    result = {**_timing(seconds), **_describe_block(spec, block), **_traffic(block, x, grad_output), "peak_bytes": peak}
    del block, x, grad_output
    torch.cuda.empty_cache()
    return result


# ----------------------------------------------------------------------------------------------
# The Python API


def validate_options(widths, cases, nodes, batch, size, group_size, coarsest, repeats, warmup, seed) -> tuple[list, list]:
    """The options of :func:`bench_block`, checked before anything is measured: ``(widths, cases)`` as
    lists; a ``ValueError`` naming the bad option as on the command line (``--widths``, ...)."""
    widths = list(widths) if widths is not None else []
    if not widths:
        raise ValueError("`--widths` needs at least one width")
    for width in widths:
        check_int("--widths", width)
    cases = list(cases) if cases is not None else []
    if not cases or any(case not in CASES for case in cases):
        raise ValueError(f"`--cases` must be a non-empty list drawn from {CASES}, got {cases!r}")
    for option, value in (
        ("--nodes", nodes),
        ("--batch", batch),
        ("--size", size),
        ("--group-size", group_size),
        ("--coarsest", coarsest),
        ("--repeats", repeats),
    ):
        check_int(option, value)
    check_int("--warmup", warmup, minimum=0)
    check_int("--seed", seed, minimum=0)
    return widths, cases


def bench_block(
    *,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    cases: Sequence[str] = CASES,
    nodes: int = 32_768,
    batch: int = 32,
    size: int = 32,
    group_size: int = 8,
    coarsest: int = 16,
    repeats: int = 3,
    warmup: int = 1,
    device: str = "auto",
    channels_last: bool = False,
    checkpoint: bool = False,
    compile: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> list[dict]:
    """Measure the dense and the MGIC block of every case at every width, on every device of
    ``device`` (see :func:`resolve_devices`). Returns one row per (device, case, width), keyed by
    :data:`COLUMNS`; times are medians in milliseconds, memory is the peak growth in MiB during
    one forward+backward pass (the module docstring gives the method).

    Raises:
        ValueError: a bad option, named as on the command line (``--nodes``, ``--device``, ...).
    """
    widths, cases = validate_options(widths, cases, nodes, batch, size, group_size, coarsest, repeats, warmup, seed)
    devices = resolve_devices(device)
    num_threads = torch.get_num_threads()
    specs = [
        Measurement(
            device=dev, case=case, variant=variant, width=width, nodes=nodes, batch=batch, size=size,
            group_size=group_size, coarsest=coarsest, warmup=warmup, repeats=repeats,
            channels_last=channels_last, seed=seed, num_threads=num_threads, checkpoint=checkpoint,
            compile=compile,
        )
        for dev in devices
        for case in cases
        for width in widths
        for variant in VARIANTS
    ]
    context = worker_context(__name__) if "cpu" in devices else None
    results = {}
    with tqdm(total=len(specs), desc="bench block", unit="run", file=sys.stderr, disable=not progress) as bar:
        for spec in specs:
            bar.set_postfix_str(spec.describe())
            if spec.device == "cpu":
                results[spec] = _measure_cpu(spec, context)
            else:
                results[spec] = _measure_cuda(spec)
            bar.update()
    unpinned = [spec.describe() for spec, result in results.items() if not result.get("peak_reset", True)]
    unpinned += [spec.describe() for spec, result in results.items() if not result.get("malloc_pinned", True)]
    if unpinned:
        warnings.warn(
            "could not reset the peak-RSS mark or pin glibc's mmap threshold for "
            f"{', '.join(sorted(set(unpinned)))}; their CPU peak memory may be off (see the module docstring)",
            RuntimeWarning,
            stacklevel=2,
        )
    return [table_row(dense, results[dense], results[grouped], results[mgic])
            for dense, grouped, mgic in zip(specs[0::3], specs[1::3], specs[2::3])]

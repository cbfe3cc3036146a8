"""Time and memory of building a batched k-nearest-neighbour graph (``mgic-geo bench knn``).

The measurement behind :mod:`mgic_geo.nn.knn`, side by side in one run: ``B`` clouds (``--batch``,
default 32) of ``N`` points (``--points``, default 1024) each, for every ``k`` of ``--k`` (10, 20)
and every dimension ``D`` of ``--dims`` (3: coordinates, uniform in the unit cube; 64: features,
standard normal), built ``loop=False`` by

* ours: ``knn_graph(x, k, batch, backend="torch")`` (on the CPU the cell grid for D = 3, chunked
  ``bmm`` + ``topk`` for features: see :mod:`mgic_geo.nn.knn`);
* naive: ``torch.cdist`` on the whole ``[B, N, N]`` distance tensor, the diagonal masked, one
  ``topk``, converted to the same ``[neighbour, centre]`` ``edge_index``;
* torch-cluster and pyg-lib (``backend="torch_cluster"`` / ``"pyg_lib"``) when importable; a
  "not installed" row otherwise.

Before timing, every method's graph is checked against ours: ``N k`` edges per cloud, exactly ``k``
per target, no self loops, no edge between clouds, and the same neighbour distances per target
(recomputed in float64 from ``x``, sorted, ``rtol = 1e-4``, ``atol = 1e-5``: tied or near-tied
neighbours may differ, their distances may not). A disagreement stops the run.

Times are the median of ``--repeats`` calls after one warm-up call (``torch.cuda.synchronize``
around each call on CUDA). Memory: on CUDA, ``torch.cuda.max_memory_allocated`` during one extra
call, minus ``memory_allocated`` before it (the returned ``edge_index`` included). On every device
the table also gives the size of the largest distance buffer each torch method holds at once,
computed analytically for the CPU (ours, dense search: one chunk of at most ``MAX_DISTANCE_ELEMENTS``
scores, plus the ``+inf`` columns that pad CPU rows to 64 k when ``N < 64 k <= 1.5 N``; ours, cell
grid (D <= 3, ``N >= GRID_MIN_POINTS`` and ``16 k``): the squared differences along 3 axes of one
chunk of ``GRID_CHUNK_ELEMENTS`` candidate distances; naive: ``B N^2``); CPU memory is not measured.
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor

from mgic_geo.bench.command import call_with_args
from mgic_geo.bench.machine import machine_description
from mgic_geo.bench.process import synchronize
from mgic_geo.tables import prepare_output_dir, write_table
from mgic_geo.nn.knn import MAX_DISTANCE_ELEMENTS, cpu_distance_buffer_elements, knn_graph
from mgic_geo.nn.knn_grid import GRID_CHUNK_ELEMENTS, GRID_MIN_POINTS
from mgic_geo.validation import check_int

DEVICES = ("auto", "cpu", "cuda")
MIB = 2**20
RTOL, ATOL = 1e-4, 1e-5
_CHECK_CHUNK = 2**16  # edges whose distances are recomputed at once in the agreement check

OURS = "ours: knn_graph(backend='torch')"
NAIVE = "naive: cdist [B, N, N] + topk"
TORCH_CLUSTER = "torch-cluster: knn_graph(backend='torch_cluster')"
PYG_LIB = "pyg-lib: knn_graph(backend='pyg_lib')"

COLUMNS = ("device", "D", "k", "method", "status", "ms", "min ms", "time / ours", "distance buffer MiB (analytic)")
CUDA_COLUMN = "peak MiB (CUDA, measured)"


class DisagreementError(RuntimeError):
    """A method's kNN graph differs from ours: the benchmark would compare different results."""


# ----------------------------------------------------------------------------------------------
# The methods: (x [B N, D], batch [B N], B, N, k) -> edge_index [2, B N k], loop=False


def _ours(x: Tensor, batch: Tensor, clouds: int, points: int, k: int) -> Tensor:
    return knn_graph(x, k, batch, backend="torch")


def _naive(x: Tensor, batch: Tensor, clouds: int, points: int, k: int) -> Tensor:
    distances = torch.cdist(x.view(clouds, points, -1), x.view(clouds, points, -1))  # [B, N, N]
    distances.diagonal(dim1=1, dim2=2).fill_(float("inf"))  # no self loops
    neighbours = distances.topk(k, dim=-1, largest=False).indices  # [B, N, k]
    offsets = torch.arange(clouds, device=x.device).view(-1, 1, 1) * points
    source = (neighbours + offsets).reshape(-1)
    target = torch.arange(clouds * points, device=x.device).repeat_interleave(k)
    return torch.stack([source, target])


def _torch_cluster(x: Tensor, batch: Tensor, clouds: int, points: int, k: int) -> Tensor:
    return knn_graph(x, k, batch, backend="torch_cluster")


def _pyg_lib(x: Tensor, batch: Tensor, clouds: int, points: int, k: int) -> Tensor:
    return knn_graph(x, k, batch, backend="pyg_lib")


METHODS: dict[str, Callable[[Tensor, Tensor, int, int, int], Tensor]] = {
    OURS: _ours,
    NAIVE: _naive,
    TORCH_CLUSTER: _torch_cluster,
    PYG_LIB: _pyg_lib,
}
# Modules a method needs beyond torch (pyg-lib is reached through torch_geometric's knn_graph).
REQUIRES = {TORCH_CLUSTER: ("torch_cluster",), PYG_LIB: ("pyg_lib", "torch_geometric")}


def installed(method: str) -> bool:
    return all(importlib.util.find_spec(module) is not None for module in REQUIRES.get(method, ()))


def distance_buffer_bytes(method: str, clouds: int, points: int, element_size: int, k: int = 1,
                          dims: int | None = None) -> int | None:
    """Bytes of the largest distance buffer ``method`` holds at once (on CPU, loop=False) for
    points of ``dims`` dimensions (``None``: features, the dense search); ``None`` for the
    libraries."""
    if method == NAIVE:
        return clouds * points * points * element_size
    if method == OURS:
        return cpu_distance_buffer_elements(clouds, points, k, dims) * element_size
    return None


# ----------------------------------------------------------------------------------------------
# Agreement


def neighbour_distances(method: str, edge_index: Tensor, x: Tensor, batch: Tensor, k: int) -> Tensor:
    """The distances ``[B N, k]`` (float64, ascending) from every target to its ``k`` neighbours
    in ``edge_index``, after checking its structure; raises :class:`DisagreementError`."""
    total = x.shape[0]
    if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.shape[0] != 2:
        shape = tuple(edge_index.shape) if isinstance(edge_index, Tensor) else type(edge_index).__name__
        raise DisagreementError(f"{method}: edge_index must be [2, E], got {shape}")
    if edge_index.shape[1] != total * k:
        raise DisagreementError(f"{method}: {edge_index.shape[1]} edges, expected {total} points x k={k} = {total * k}")
    source, target = edge_index.to(x.device, torch.long)
    if bool(((source < 0) | (source >= total) | (target < 0) | (target >= total)).any()):
        raise DisagreementError(f"{method}: edge_index holds indices outside [0, {total})")
    if bool((torch.bincount(target, minlength=total) != k).any()):
        raise DisagreementError(f"{method}: some targets do not have exactly k={k} neighbours")
    if bool((source == target).any()):
        raise DisagreementError(f"{method}: self loops with loop=False")
    if bool((batch[source] != batch[target]).any()):
        raise DisagreementError(f"{method}: edges between different clouds")
    order = torch.argsort(target, stable=True)
    source, target = source[order], target[order]
    distances = torch.empty(total * k, dtype=torch.float64, device=x.device)
    for start in range(0, total * k, _CHECK_CHUNK):
        stop = min(total * k, start + _CHECK_CHUNK)
        difference = x[source[start:stop]].double() - x[target[start:stop]].double()
        distances[start:stop] = difference.square().sum(-1).sqrt()
    return distances.view(total, k).sort(dim=1).values


def check_agreement(method: str, distances: Tensor, reference: Tensor, *, dims: int, k: int) -> None:
    close = torch.isclose(distances, reference, rtol=RTOL, atol=ATOL).all(dim=1)
    if not bool(close.all()):
        worst = (distances - reference).abs().max().item()
        raise DisagreementError(
            f"{method} disagrees with ours at D={dims}, k={k}: {int((~close).sum())} of {close.numel()} targets "
            f"have different neighbour distances (max |difference| {worst:.3g}, rtol {RTOL}, atol {ATOL})"
        )


# ----------------------------------------------------------------------------------------------
# Measuring


def _time_ms(call: Callable[[], Tensor], device: torch.device, repeats: int) -> tuple[float, float]:
    """Median and minimum milliseconds of ``repeats`` calls after one warm-up call."""
    call()  # warm-up
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        call()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return 1e3 * statistics.median(seconds), 1e3 * min(seconds)


def _cuda_peak_mib(call: Callable[[], Tensor], device: torch.device) -> float:
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    baseline = torch.cuda.memory_allocated(device)
    edge_index = call()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - baseline
    del edge_index
    return max(0, peak) / MIB


def resolve_device(device: str) -> str:
    """``auto`` is CUDA when available, else CPU; ``cuda`` requires it."""
    if device not in DEVICES:
        raise ValueError(f"`--device` must be one of {DEVICES}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("`--device cuda` was requested but CUDA is not available (torch.cuda.is_available() is False)")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _validate(batch, points, ks, dims, repeats, seed) -> tuple[list[int], list[int]]:
    for option, value in (("--batch", batch), ("--points", points), ("--repeats", repeats)):
        check_int(option, value)
    check_int("--seed", seed, minimum=0)
    ks, dims = list(ks), list(dims)
    for option, values in (("--k", ks), ("--dims", dims)):
        if not values:
            raise ValueError(f"`{option}` needs at least one value")
        for value in values:
            check_int(option, value)
    if max(ks) >= points:
        raise ValueError(f"`--k` {max(ks)} must be smaller than `--points` {points} (k neighbours without self loops)")
    return list(dict.fromkeys(ks)), list(dict.fromkeys(dims))


def make_points(batch: int, points: int, dims: int, *, seed: int, device: str | torch.device) -> tuple[Tensor, Tensor]:
    """``x`` ``[B N, D]`` (unit cube for ``D <= 3``, standard normal otherwise) and the sorted
    ``batch`` vector ``[B N]``, the same for every method."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch * points, dims)
    x = torch.rand(shape, generator=generator) if dims <= 3 else torch.randn(shape, generator=generator)
    cloud = torch.arange(batch).repeat_interleave(points)
    return x.to(device), cloud.to(device)


def bench_knn(
    *, batch: int = 32, points: int = 1024, k: Sequence[int] = (10, 20), dims: Sequence[int] = (3, 64),
    repeats: int = 5, device: str = "auto", seed: int = 0,
) -> list[dict]:
    """One row per (D, k, installed method), keyed by :data:`COLUMNS` (plus :data:`CUDA_COLUMN`
    on CUDA), and one "not installed" row per missing library. Every method is checked against
    ours before it is timed.

    Raises:
        ValueError: a bad option, named as on the command line.
        DisagreementError: a method's graph differs from ours.
    """
    ks, dims = _validate(batch, points, k, dims, repeats, seed)
    device = torch.device(resolve_device(device))
    available = [method for method in METHODS if installed(method)]
    rows = []
    for dim in dims:
        x, cloud = make_points(batch, points, dim, seed=seed, device=device)
        for neighbours in ks:
            measured = {}
            reference = None
            for method in available:
                call = functools.partial(METHODS[method], x, cloud, batch, points, neighbours)
                distances = neighbour_distances(method, call(), x, cloud, neighbours)
                if reference is None:  # ours comes first
                    reference = distances
                else:
                    check_agreement(method, distances, reference, dims=dim, k=neighbours)
                median_ms, min_ms = _time_ms(call, device, repeats)
                row = {"device": device.type, "D": dim, "k": neighbours, "method": method, "status": "ok",
                       "ms": median_ms, "min ms": min_ms}
                buffer = distance_buffer_bytes(method, batch, points, x.element_size(), neighbours, dims=dim)
                row["distance buffer MiB (analytic)"] = "n/a" if buffer is None else buffer / MIB
                if device.type == "cuda":
                    row[CUDA_COLUMN] = _cuda_peak_mib(call, device)
                measured[method] = row
            ours_ms = measured[OURS]["ms"]
            for row in measured.values():
                row["time / ours"] = row["ms"] / ours_ms
            rows += measured.values()
    for method in METHODS:
        if method not in available:
            modules = " and ".join(m for m in REQUIRES.get(method, ()) if importlib.util.find_spec(m) is None)
            rows.append({"device": device.type, "D": "-", "k": "-", "method": method,
                         "status": f"not installed ({modules} not importable)", "ms": "", "min ms": "", "time / ours": "",
                         "distance buffer MiB (analytic)": "", CUDA_COLUMN: ""})
    return rows


# ----------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=32, help="clouds B (default: %(default)s)")
    parser.add_argument("--points", type=int, default=1024, help="points N per cloud (default: %(default)s)")
    parser.add_argument("--k", type=int, nargs="+", default=[10, 20], help="neighbours per point (default: 10 20)")
    parser.add_argument("--dims", type=int, nargs="+", default=[3, 64],
                        help="point dimensions D: 3 coordinates, 64 features (default: 3 64)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls, median reported (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available, else CPU), cpu or cuda")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random points (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads during the run, e.g. 1 for steadier figures on a busy machine "
                             "(default: torch's default)")
    parser.add_argument("--out", default="outputs/bench/knn", help="writes knn.md and knn.csv here (default: %(default)s)")


def notes(rows: Sequence[dict], *, machine: str, batch: int, points: int, repeats: int, device: str, seed: int) -> list[str]:
    lines = [
        f"machine: {machine}",
        f"input: B={batch} clouds x N={points} points, float32; D=3: uniform in the unit cube, D>3: standard normal "
        f"(seed {seed}); loop=False; ms: median (and min) of {repeats} calls after one warm-up"
        + (", torch.cuda.synchronize around each call." if device == "cuda" else "."),
        f"agreement: before timing, every method's graph was checked against ours (k edges per target, same cloud, "
        f"no self loops, sorted neighbour distances per target within rtol {RTOL}, atol {ATOL}): all agree.",
        "memory: 'distance buffer MiB' is the largest distance/score buffer a torch method holds at once, computed "
        f"analytically (ours, D <= 3 on the CPU, N >= {GRID_MIN_POINTS} and 16 k: the cell grid's squared differences "
        f"along 3 axes of a chunk of {GRID_CHUNK_ELEMENTS} candidate distances; ours otherwise: a chunk of at most {MAX_DISTANCE_ELEMENTS} scores, "
        f"plus +inf padding up to 64 k columns when N < 64 k <= 1.5 N; naive: B N^2 distances); n/a for the "
        "libraries. "
        + ("'peak MiB' is torch.cuda.max_memory_allocated during one call minus memory_allocated before it "
           "(edge_index included)." if device == "cuda" else "CPU memory is not measured."),
    ]
    for method in (NAIVE, TORCH_CLUSTER, PYG_LIB):
        by_config = {(row["D"], row["k"]): row for row in rows if row["method"] == method and row["status"] == "ok"}
        if by_config:
            ratios = ", ".join(f"D={dims} k={k}: {row['time / ours']:.2f}x" for (dims, k), row in by_config.items())
            lines.append(f"{method.split(':')[0]} / ours time (above 1: ours is faster): {ratios}")
    missing = [row["method"].split(":")[0] for row in rows if row["status"].startswith("not installed")]
    if missing:
        lines.append(f"not installed: {', '.join(missing)} (no rows measured for them)")
    return lines


def report_knn(
    out: str | Path = "outputs/bench/knn",
    *,
    batch: int = 32,
    points: int = 1024,
    k: Sequence[int] = (10, 20),
    dims: Sequence[int] = (3, 64),
    repeats: int = 5,
    device: str = "auto",
    seed: int = 0,
    threads: int | None = None,
) -> Path:
    """What ``mgic-geo bench knn`` does: :func:`bench_knn` with these options (``threads``: torch CPU
    threads during the run, restored after), the table and its notes printed and written to
    ``<out>/knn.md`` and ``knn.csv``.

    Args:
        out (str or Path): the folder of the table (created; checked before measuring).
        batch, points, k, dims, repeats, device, seed: as for :func:`bench_knn`.
        threads (int, optional): torch CPU threads during the measurement. (default: torch's)

    Returns:
        Path: the markdown table.

    Raises:
        ValueError: a bad option, named as on the command line.
        DisagreementError: a method's graph differs from ours (nothing is written).
    """
    ks, dims = _validate(batch, points, k, dims, repeats, seed)
    if threads is not None:
        check_int("--threads", threads)
    device = resolve_device(device)
    out = prepare_output_dir(out)  # fail on a bad --out before measuring
    machine = machine_description([device])  # before measuring: it records the load at the start
    started = time.perf_counter()
    default_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        rows = bench_knn(batch=batch, points=points, k=ks, dims=dims, repeats=repeats,
                         device=device, seed=seed)
    finally:
        torch.set_num_threads(default_threads)
    columns = list(COLUMNS) + ([CUDA_COLUMN] if device == "cuda" else [])
    table_notes = notes(rows, machine=machine, batch=batch, points=points, repeats=repeats, device=device,
                        seed=seed)
    if threads is not None:
        table_notes.insert(1, f"threads: torch.set_num_threads({threads}) during the measurement (the machine line "
                              "gives the default)")
    # Other jobs on a small shared machine distort the times: record the load at the end too.
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    table_notes.append(f"wall time of the whole run: {time.perf_counter() - started:.1f} s; 1-min load average at end {load:.2f}")
    md_path, csv_path, text = write_table(rows, out, "knn", title="Batched kNN graph: ours vs naive vs libraries",
                                          notes=table_notes, columns=columns)
    print(text)
    print(f"wrote {md_path} and {csv_path}")
    return md_path


def run(args: argparse.Namespace) -> int:
    try:
        call_with_args(report_knn, args)
    except DisagreementError as error:
        print(f"mgic-geo: error: {error}", file=sys.stderr)
        return 1
    return 0

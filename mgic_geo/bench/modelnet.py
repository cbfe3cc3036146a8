"""Training throughput and peak memory of the ModelNet-10 networks (``mgic-geo bench modelnet``).

Every model trains on the same batches, side by side in one run: ``--batch`` clouds of
``--points`` points (random anisotropic ellipsoid surfaces from ``--seed``: the cost of these
networks does not depend on the shapes) with random labels of 10 classes. One step is forward,
cross-entropy, backward and an SGD update, in train mode, with the models built for fixed-size
clouds (``num_points``) as the training configs build them. Throughput is ``--batch`` divided by
the median step time of ``--steps`` steps after ``--warmup`` steps.

Peak memory: on CPU, the growth of the resident set during one step, in a process forked for it
(the method of :mod:`mgic_geo.bench.block`); timings run in another fresh process. On CUDA,
``torch.cuda.max_memory_allocated`` during the timed steps, minus what was allocated before them.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from mgic_geo.bench.block import machine_description, resolve_devices
from mgic_geo.bench.process import (
    current_rss_bytes,
    peak_rss_bytes,
    reset_peak_rss,
    return_freed_memory_to_os,
    run_in_fresh_process,
    synchronize,
    worker_context,
)
from mgic_geo.complexity import count_parameters
from mgic_geo.experiments.report import write_table
from mgic_geo.models import create_model, list_models
from mgic_geo.validation import check_int

DEFAULT_MODELS = ("mgic_diffgcn", "diffgcn", "dgcnn", "dgcnn_pyg_example")
MIB = 2**20


@dataclass(frozen=True)
class Run:
    model: str
    device: str
    batch: int
    points: int
    steps: int
    warmup: int
    seed: int
    num_threads: int


def make_batch(batch: int, points: int, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``pos [batch * points, 3]``, ``batch``, labels: points on random ellipsoid surfaces."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(batch, points, 3, generator=generator), dim=-1)
    radii = 0.3 + 0.7 * torch.rand(batch, 1, 3, generator=generator)
    pos = (directions * radii).reshape(-1, 3)
    labels = torch.randint(0, 10, (batch,), generator=generator)
    return pos.to(device), torch.arange(batch).repeat_interleave(points).to(device), labels.to(device)


def _prepare(run: Run):
    device = torch.device(run.device)
    torch.manual_seed(run.seed)
    model = create_model(run.model, num_points=run.points).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return model, optimizer, make_batch(run.batch, run.points, run.seed + 1, device)


def _steps(model, optimizer, data, count: int) -> list[float]:
    pos, batch, labels = data
    seconds = []
    for _ in range(count):
        synchronize(pos.device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(pos, batch), labels).backward()
        optimizer.step()
        synchronize(pos.device)
        seconds.append(time.perf_counter() - start)
    return seconds


def _time(run: Run) -> dict:
    torch.set_num_threads(run.num_threads)
    model, optimizer, data = _prepare(run)
    _steps(model, optimizer, data, run.warmup)
    seconds = _steps(model, optimizer, data, run.steps)
    return {"seconds": seconds, "params": count_parameters(model)}


def _peak_memory_cpu(run: Run) -> dict:
    pinned = return_freed_memory_to_os()
    torch.set_num_threads(run.num_threads)
    model, optimizer, data = _prepare(run)
    _steps(model, optimizer, data, 1)  # optimizer state, thread pool, kernel code paged in
    reset = reset_peak_rss()
    baseline = current_rss_bytes()
    _steps(model, optimizer, data, 1)
    return {"peak_bytes": max(0, peak_rss_bytes() - baseline), "exact": pinned and reset}


def _measure_cuda(run: Run) -> dict:
    device = torch.device(run.device)
    model, optimizer, data = _prepare(run)
    _steps(model, optimizer, data, run.warmup)
    torch.cuda.reset_peak_memory_stats(device)
    baseline = torch.cuda.memory_allocated(device)
    seconds = _steps(model, optimizer, data, run.steps)
    peak = max(0, torch.cuda.max_memory_allocated(device) - baseline)
    del model, optimizer, data
    torch.cuda.empty_cache()
    return {"seconds": seconds, "peak_bytes": peak, "exact": True}


def bench_modelnet(
    *,
    models: Sequence[str] = DEFAULT_MODELS,
    batch: int = 32,
    points: int = 1024,
    steps: int = 3,
    warmup: int = 1,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
) -> list[dict]:
    """One row per (device, model): samples/s, ms per step, peak memory, and the ratio of each
    model's throughput to the first model's."""
    models = list(models)
    unknown = [m for m in models if m not in list_models()]
    if not models or unknown:
        raise ValueError(f"`--models` must name models of the registry ({', '.join(list_models())}), got {models!r}")
    for option, value in (("--batch", batch), ("--points", points), ("--steps", steps)):
        check_int(option, value)
    check_int("--warmup", warmup, minimum=0)
    runs = [Run(m, d, batch, points, steps, warmup, seed, torch.get_num_threads())
            for d in resolve_devices(device) for m in models]
    context = worker_context(__name__) if any(r.device == "cpu" for r in runs) else None
    rows = []
    for run in tqdm(runs, desc="bench modelnet", unit="model", file=sys.stderr, disable=not progress):
        if run.device == "cpu":
            what = f"{run.model} on {run.device}"
            result = {**run_in_fresh_process(_time, run, context, f"bench-modelnet time of {what}"),
                      **run_in_fresh_process(_peak_memory_cpu, run, context, f"bench-modelnet memory of {what}")}
        else:
            result = _measure_cuda(run) | {"params": None}
        step = statistics.median(result["seconds"])
        rows.append({
            "device": run.device,
            "model": run.model,
            "params [M]": round(count_parameters(create_model(run.model)) / 1e6, 3),
            "ms / step": round(1e3 * step, 1),
            "samples / s": round(batch / step, 1),
            "peak memory [MiB]": round(result["peak_bytes"] / MIB, 1),
            "exact memory": result["exact"],
        })
    for row in rows:
        first = next(r for r in rows if r["device"] == row["device"])
        row[f"throughput vs {first['model']}"] = round(row["samples / s"] / first["samples / s"], 2)
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="registry names (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=32, help="clouds per batch (default: 32)")
    parser.add_argument("--points", type=int, default=1024, help="points per cloud (default: 1024)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps (default: 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default: 1)")
    parser.add_argument("--device", default="auto", help="auto (CPU, and CUDA when present), cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs/bench/modelnet", help="where to write modelnet.md/.csv")


def run(args: argparse.Namespace) -> int:
    rows = bench_modelnet(models=args.models, batch=args.batch, points=args.points, steps=args.steps,
                          warmup=args.warmup, device=args.device, seed=args.seed)
    notes = [
        machine_description(resolve_devices(args.device)) + ".",
        f"One training step: forward, cross-entropy, backward, SGD update on {args.batch} clouds of {args.points} points; "
        f"median of {args.steps} steps after {args.warmup} warm-up step(s); the same batch for every model.",
        "Peak memory: CPU, growth of the resident set during one step in a fresh process (exact memory = the "
        "allocator pinning and the peak reset both worked); CUDA, max_memory_allocated during the timed steps.",
    ]
    _, _, text = write_table(rows, args.out, "modelnet", title="ModelNet-10 training throughput", notes=notes)
    print(text)
    return 0

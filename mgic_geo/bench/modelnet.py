"""Training throughput and peak memory of the ModelNet-10 networks (``mgic-geo bench modelnet``).

Every model trains on the same batches, side by side in one run: ``--batch`` clouds of
``--points`` points (random anisotropic ellipsoid surfaces from ``--seed``: the cost of these
networks does not depend on the shapes) with random labels of 10 classes. One step is forward,
cross-entropy, backward and an SGD update, in train mode, with the models built for fixed-size
clouds (``num_points``) as the training configs build them. Throughput is ``--batch`` divided by
the median step time of ``--steps`` steps after ``--warmup`` steps.

kNN share: every call of :func:`~mgic_geo.nn.knn_graph` made by the models is wrapped (in the
measuring process only) and timed, so ``kNN ms / step`` is the graph construction inside the timed
steps and ``kNN share [%]`` its part of the step. As a check that does not rely on timing the calls,
the graphs of one step are then recorded and the same steps are timed again with the recorded graphs
handed back instead of being built (``ms / step, graphs given``; the other work is unchanged, as the
batch is). On a shared machine both move with its load: compare them within one run.

``compile`` (``--compile [BACKEND]``): the same process then times the model wrapped in
``torch.compile`` (default backend inductor; compilation happens in the warm-up steps, at least one)
and reports the compiled ms per step, the speed-up over eager, and the graph breaks that
``torch._dynamo.explain`` finds in the forward.

Peak memory: on CPU, the growth of the resident set during one step, in a process forked for it
(the method of :mod:`mgic_geo.bench.block`); timings run in another fresh process. On CUDA,
``torch.cuda.max_memory_allocated`` during the timed steps, minus what was allocated before them.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from mgic_geo.bench.machine import machine_description, resolve_devices
from mgic_geo.bench.command import call_with_args, complete_options, keyword_defaults
from mgic_geo.bench.process import run_in_fresh_process, synchronize, worker_context
from mgic_geo.complexity import count_parameters
from mgic_geo.memory import MIB, peak_rss_growth, return_freed_memory_to_os
from mgic_geo.models import create_model, list_models
from mgic_geo.tables import write_table
from mgic_geo.validation import check_int

DEFAULT_MODELS = ("mgic_diffgcn", "diffgcn", "dgcnn", "mgic_dgcnn", "dgcnn_pyg_example")
# The modules whose global ``knn_graph`` the models call (patched by :func:`_knn_probe`).
KNN_CALLERS = ("mgic_geo.models.clouds", "mgic_geo.models.dgcnn", "mgic_geo.nn.mgic_conv")


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
    compile: str | None = None
    kwargs: tuple = field(default=())  # (name, value) pairs for create_model


class _KnnProbe:
    """Stands in for ``knn_graph``: times the real calls, or records one step's graphs and then
    hands them back in the same order instead of building them."""

    def __init__(self, knn_graph, device: torch.device):
        self.knn_graph, self.device = knn_graph, device
        self.seconds, self.mode, self.graphs, self.calls = 0.0, "time", [], 0

    def __call__(self, *args, **kwargs):
        if self.mode == "replay":
            graph = self.graphs[self.calls % len(self.graphs)]
            self.calls += 1
            return graph
        synchronize(self.device)
        start = time.perf_counter()
        graph = self.knn_graph(*args, **kwargs)
        synchronize(self.device)
        self.seconds += time.perf_counter() - start
        if self.mode == "record":
            self.graphs.append(graph)
        return graph


@contextlib.contextmanager
def _knn_probe(device: torch.device):
    modules = [importlib.import_module(name) for name in KNN_CALLERS]
    originals = [module.knn_graph for module in modules]
    probe = _KnnProbe(originals[0], device)
    try:
        for module in modules:
            module.knn_graph = probe
        yield probe
    finally:
        for module, original in zip(modules, originals):
            module.knn_graph = original


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
    model = create_model(run.model, num_points=run.points, **dict(run.kwargs)).to(device).train()
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


def _time_with_knn(model, optimizer, data, run: Run) -> dict:
    """Step times with the graphs built (and the kNN calls timed), then with them given."""
    with _knn_probe(data[0].device) as probe:
        _steps(model, optimizer, data, run.warmup)
        probe.seconds = 0.0
        seconds = _steps(model, optimizer, data, run.steps)
        knn_seconds = probe.seconds / run.steps
        probe.mode = "record"
        _steps(model, optimizer, data, 1)
        probe.mode = "replay"
        given = _steps(model, optimizer, data, run.steps)
        if probe.calls != run.steps * len(probe.graphs):
            raise RuntimeError(f"{run.model} made {probe.calls} kNN calls in {run.steps} steps, "
                               f"not {len(probe.graphs)} per step: the recorded graphs cannot stand in")
    return {"seconds": seconds, "knn_seconds": knn_seconds, "given_seconds": given, "knn_calls": len(probe.graphs)}


def _time(run: Run) -> dict:
    torch.set_num_threads(run.num_threads)
    model, optimizer, data = _prepare(run)
    result = _time_with_knn(model, optimizer, data, run) | {"params": count_parameters(model)}
    if run.compile is not None:
        result |= _time_compiled(model, optimizer, data, run)
    return result


def _time_compiled(model, optimizer, data, run: Run) -> dict:
    import torch._dynamo as dynamo

    dynamo.reset()
    pos, batch, _ = data
    explanation = dynamo.explain(model)(pos, batch)
    dynamo.reset()
    compiled = torch.compile(model, backend=run.compile)
    start = time.perf_counter()
    _steps(compiled, optimizer, data, max(1, run.warmup))
    compile_seconds = time.perf_counter() - start
    return {"compiled_seconds": _steps(compiled, optimizer, data, run.steps), "compile_seconds": compile_seconds,
            "graph_breaks": explanation.graph_break_count}


def _peak_memory_cpu(run: Run) -> dict:
    pinned = return_freed_memory_to_os()
    torch.set_num_threads(run.num_threads)
    model, optimizer, data = _prepare(run)
    _steps(model, optimizer, data, 1)  # optimizer state, thread pool, kernel code paged in
    peak, reset = peak_rss_growth(lambda: _steps(model, optimizer, data, 1))
    return {"peak_bytes": peak, "exact": pinned and reset}


def _measure_cuda(run: Run) -> dict:
    device = torch.device(run.device)
    model, optimizer, data = _prepare(run)
    _steps(model, optimizer, data, run.warmup)
    torch.cuda.reset_peak_memory_stats(device)
    baseline = torch.cuda.memory_allocated(device)
    _steps(model, optimizer, data, run.steps)
    peak = max(0, torch.cuda.max_memory_allocated(device) - baseline)
    result = _time_with_knn(model, optimizer, data, run)
    if run.compile is not None:
        result |= _time_compiled(model, optimizer, data, run)
    del model, optimizer, data
    torch.cuda.empty_cache()
    return result | {"peak_bytes": peak, "exact": True}


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
    compile: str | None = None,
    model_kwargs: dict[str, dict] | None = None,
) -> list[dict]:
    """One row per (device, model): samples/s, ms per step, the kNN graphs' share of it, peak
    memory, and the ratio of each model's throughput to the first model's; with ``compile`` (a
    ``torch.compile`` backend) also the compiled ms per step, its speed-up and the graph breaks.
    ``model_kwargs`` maps a model name to extra ``create_model`` arguments (e.g.
    ``{"mgic_diffgcn": {"graph": "dynamic"}}``)."""
    models = list(models)
    unknown = [m for m in models if m not in list_models()]
    if not models or unknown:
        raise ValueError(f"`--models` must name models of the registry ({', '.join(list_models())}), got {models!r}")
    for option, value in (("--batch", batch), ("--points", points), ("--steps", steps)):
        check_int(option, value)
    check_int("--warmup", warmup, minimum=0)
    if compile is not None:
        import torch._dynamo as dynamo

        backends = dynamo.list_backends(exclude_tags=())
        if compile not in backends:
            raise ValueError(f"`--compile` must name a torch.compile backend ({', '.join(backends)}), got {compile!r}")
    model_kwargs = model_kwargs or {}
    runs = [Run(m, d, batch, points, steps, warmup, seed, torch.get_num_threads(), compile,
                tuple(sorted(model_kwargs.get(m, {}).items())))
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
        given = statistics.median(result["given_seconds"])
        row = {
            "device": run.device,
            "model": run.model + "".join(f" {k}={v}" for k, v in run.kwargs),
            "params [M]": round(count_parameters(create_model(run.model, **dict(run.kwargs))) / 1e6, 3),
            "ms / step": round(1e3 * step, 1),
            "samples / s": round(batch / step, 1),
            "peak memory [MiB]": round(result["peak_bytes"] / MIB, 1),
            "exact memory": result["exact"],
            "kNN graphs / step": result["knn_calls"],
            "kNN ms / step": round(1e3 * result["knn_seconds"], 1),
            "kNN share [%]": round(100 * result["knn_seconds"] / statistics.mean(result["seconds"]), 1),
            "ms / step, graphs given": round(1e3 * given, 1),
            "kNN share by given graphs [%]": round(100 * (1 - given / step), 1),
        }
        if compile is not None:
            compiled = statistics.median(result["compiled_seconds"])
            row |= {"compiled ms / step": round(1e3 * compiled, 1), "compile speed-up": round(step / compiled, 2),
                    "compile s": round(result["compile_seconds"], 1), "graph breaks": result["graph_breaks"]}
        rows.append(row)
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
    parser.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                        help="also time the models under torch.compile (backend, default inductor) and count graph breaks")
    parser.add_argument("--out", default="outputs/bench/modelnet", help="where to write modelnet.md/.csv")


# The options of bench_modelnet, with their defaults (report_modelnet forwards them).
MODELNET_OPTIONS = keyword_defaults(bench_modelnet)


def report_modelnet(out: str | Path = "outputs/bench/modelnet", **options) -> Path:
    """What ``mgic-geo bench modelnet`` does: :func:`bench_modelnet` with ``options``, the table and
    its notes (machine, method) printed and written to ``<out>/modelnet.md`` and ``modelnet.csv``.

    Args:
        out (str or Path): the folder of the table (created).
        **options: keyword options of :func:`bench_modelnet` (its defaults for the rest).

    Returns:
        Path: the markdown table.
    """
    options = complete_options(MODELNET_OPTIONS, options, "report_modelnet")
    rows = bench_modelnet(**options)
    batch, points, steps, warmup, compile = (options[name] for name in ("batch", "points", "steps", "warmup",
                                                                         "compile"))
    notes = [
        machine_description(resolve_devices(options["device"])) + ".",
        f"One training step: forward, cross-entropy, backward, SGD update on {batch} clouds of {points} points; "
        f"median of {steps} steps after {warmup} warm-up step(s); the same batch for every model.",
        "kNN: ms / step spent in the models' knn_graph calls (timed inside the timed steps), and as a check the "
        "step time with one step's graphs recorded and handed back instead of built (share = 1 - given / built).",
        *([f"torch.compile(backend={compile!r}): compiled ms / step after the warm-up that compiles; speed-up = "
           "eager / compiled; compile s = the warm-up; graph breaks from torch._dynamo.explain of the forward; "
           "peak memory is the eager model's."] if compile else []),
        "Peak memory: CPU, growth of the resident set during one step in a fresh process (exact memory = the "
        "allocator pinning and the peak reset both worked); CUDA, max_memory_allocated during the timed steps.",
    ]
    md_path, _, text = write_table(rows, out, "modelnet", title="ModelNet-10 training throughput", notes=notes)
    print(text)
    return md_path


def run(args: argparse.Namespace) -> int:
    call_with_args(report_modelnet, args, MODELNET_OPTIONS)
    return 0

"""Every benchmark in one run, written up as one report (``mgic-geo bench all --out docs/``).

Runs each benchmark's ``report_<name>`` function and lists in the report the command that reruns it
exactly (:func:`mgic_geo.bench.command.command_line`):

* ``mgic-geo bench block``: dense block vs grouped level block vs MGIC block, time, peak memory
  and memory-traffic floor over the widths;
* ``mgic-geo bench block --compile`` (section ``block_compiled``): the same at c = 1,024 on node
  features with every block compiled by ``torch.compile`` (fused elementwise kernels);
* ``mgic-geo bench grouped``: the formulations of the grouped 1x1 channel map;
* ``mgic-geo bench knn`` at its defaults (32 clouds of 1024 points, D = 3 and 64, k = 10 and 20),
  then at every ``N`` of ``--knn-sizes`` (``--knn-batch`` clouds, 3-D points, k = 10) for the
  kNN-vs-N plot;
* ``mgic-geo bench modelnet``: training throughput and memory of the Table-6 networks.

Each writes its table and CSV under ``<out>/bench/<name>/``; this command then writes
``<out>/benchmarks.md`` (the machine and library versions in its header, the headline ratios, every
table, and the commands) and its log-log plots under ``<out>/images/``: time and memory against the
width for the dense, the grouped and the MGIC block, and kNN time against the points per cloud. CUDA columns
appear where the benchmarks ran on CUDA (``--device auto`` runs CPU, plus CUDA when available).

``--quick`` shrinks every size so that the whole report takes seconds: for tests of the report
itself, not for figures anyone should quote.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import importlib.metadata
import math
import platform
import time
from pathlib import Path
from typing import Sequence

from mgic_geo.bench.block_command import report_block
from mgic_geo.bench.command import command_line
from mgic_geo.bench.grouped import report_grouped
from mgic_geo.bench.knn import report_knn
from mgic_geo.bench.machine import machine_description, resolve_devices
from mgic_geo.bench.modelnet import report_modelnet
from mgic_geo.tables import prepare_output_dir

SECTIONS = ("block", "block_compiled", "grouped", "knn", "modelnet")
COMMAND = {"block_compiled": "block"}  # sections that run another section's command with other options
# The function of each command (mgic-geo bench <command>), called with the keyword options below.
REPORTS = {"block": report_block, "grouped": report_grouped, "knn": report_knn, "modelnet": report_modelnet}
FULL = {
    "block": {},
    "block_compiled": {"widths": [1024], "cases": ["graph"], "compile": True, "progress": False},
    "grouped": {},
    "knn": {},
    "modelnet": {"steps": 5},
}
QUICK = {
    "block": {"widths": [32], "nodes": 256, "batch": 2, "size": 8, "repeats": 1, "progress": False},
    "block_compiled": {"widths": [32], "cases": ["graph"], "nodes": 256, "repeats": 1, "compile": True,
                       "progress": False},
    "grouped": {"channels": 64, "nodes": 256, "batch": 2, "size": 8, "repeats": 1},
    "knn": {"batch": 2, "points": 64, "k": [4], "dims": [3], "repeats": 1},
    "modelnet": {"models": ["mgic_diffgcn", "dgcnn_pyg_example"], "batch": 2, "points": 128, "steps": 1},
}
KNN_SIZES = (1024, 4096, 16384)  # one cloud each: naive cdist needs N^2 floats (1 GiB at 16384)
QUICK_KNN_SIZES = (32, 64)
VERSIONED = ("torch", "torch_geometric", "lightning", "torchmetrics", "numpy", "torch_cluster", "pyg_lib")


def library_versions() -> str:
    """``name version`` of the libraries the figures depend on (``absent`` when not installed)."""
    parts = [f"python {platform.python_version()}"]
    for name in VERSIONED:
        try:
            parts.append(f"{name} {importlib.metadata.version(name.replace('_', '-'))}")
        except importlib.metadata.PackageNotFoundError:
            try:
                parts.append(f"{name} {importlib.metadata.version(name)}")
            except importlib.metadata.PackageNotFoundError:
                parts.append(f"{name} absent")
    return ", ".join(parts)


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def headline(block: list[dict], knn: list[dict], modelnet: list[dict], *,
             block_label: str = "MGIC block vs dense block") -> list[str]:
    """The ratios the README quotes, read from the benchmark tables (those that are there). The
    memory-traffic clause is left out where no traffic was counted (compiled blocks)."""
    lines = []
    for device in sorted({row["device"] for row in block}):
        for case in ("graph", "image"):
            rows = [r for r in block if r["device"] == device and r["case"] == case]
            if rows:
                widest = max(rows, key=lambda r: int(r["c"]))
                line = (f"{block_label}, {case}, c = {widest['c']} ({device}): "
                        f"time dense/MGIC {float(widest['speed-up (dense/MGIC)']):.2f}x, "
                        f"peak memory dense/MGIC {float(widest['memory ratio (dense/MGIC)']):.2f}x, "
                        f"MACs dense/MGIC {float(widest['MAC ratio (dense/MGIC)']):.1f}x (above 1 favours MGIC)")
                moved = _number(widest.get("MGIC GiB moved"))
                if moved is not None and not math.isnan(moved):
                    line += (f"; MGIC moves {moved:.2f} GiB (dense {float(widest['dense GiB moved']):.2f} GiB), a "
                             f"floor of {float(widest['MGIC floor ms']):.0f} ms at {float(widest['bandwidth GB/s']):.1f} "
                             f"GB/s, and takes {float(widest['MGIC ms / floor']):.2f}x its floor")
                lines.append(line)
    for row in knn:
        if not row.get("method", "").startswith("ours") and _number(row.get("time / ours")) is not None:
            lines.append(f"kNN, D = {row['D']}, k = {row['k']} ({row['device']}): {row['method']} takes "
                         f"{float(row['time / ours']):.2f}x our time")
    by_model = {(r["device"], r["model"]): r for r in modelnet}
    for device in sorted({r["device"] for r in modelnet}):
        ours, theirs = by_model.get((device, "mgic_diffgcn")), by_model.get((device, "dgcnn_pyg_example"))
        if ours and theirs:
            speed = float(ours["samples / s"]) / float(theirs["samples / s"])
            memory = float(theirs["peak memory [MiB]"]) / max(float(ours["peak memory [MiB]"]), 1e-9)
            lines.append(f"ModelNet-10 training ({device}): mgic_diffgcn {speed:.2f}x the samples/s of "
                         f"dgcnn_pyg_example, with {memory:.2f}x less peak memory")
    return lines


def _headline_figures(block: list[dict], knn: list[dict], modelnet: list[dict]) -> dict[str, float]:
    """The figures :func:`comparison` sets side by side, by name."""
    figures = {}
    for device in sorted({row["device"] for row in block}):
        for case in ("graph", "image"):
            rows = [r for r in block if r["device"] == device and r["case"] == case]
            if rows:
                widest = max(rows, key=lambda r: int(r["c"]))
                name = f"MGIC block, {case}, c = {widest['c']} ({device})"
                figures[f"{name}: MGIC ms"] = float(widest["MGIC ms"])
                figures[f"{name}: time dense/MGIC"] = float(widest["speed-up (dense/MGIC)"])
                figures[f"{name}: peak memory dense/MGIC"] = float(widest["memory ratio (dense/MGIC)"])
    for row in knn:
        if not row.get("method", "").startswith("ours") and _number(row.get("time / ours")) is not None:
            figures[f"kNN D = {row['D']}, k = {row['k']} ({row['device']}): {row['method']} time / ours"] = float(
                row["time / ours"])
    by_model = {(r["device"], r["model"]): r for r in modelnet}
    for (device, model), row in sorted(by_model.items()):
        figures[f"ModelNet-10 training ({device}): {model} samples/s"] = float(row["samples / s"])
        theirs = by_model.get((device, "dgcnn_pyg_example"))
        if theirs and model != "dgcnn_pyg_example":
            figures[f"ModelNet-10 training ({device}): {model} / dgcnn_pyg_example samples/s"] = (
                float(row["samples / s"]) / float(theirs["samples / s"]))
    return figures


def comparison(previous: Path, block: list[dict], knn: list[dict], modelnet: list[dict]) -> list[str]:
    """Markdown table of the headline figures of an earlier report's tables (``previous/<name>/<name>.csv``)
    beside this run's; figures missing from either are left out."""
    def tables(name: str) -> list[dict]:
        path = Path(previous) / name / f"{name}.csv"
        return read_csv(path) if path.is_file() else []

    before = _headline_figures(tables("block"), tables("knn"), tables("modelnet"))
    now = _headline_figures(block, knn, modelnet)
    shared = [name for name in now if name in before]
    if not shared:
        return []
    lines = ["| figure | previous | now | now / previous |", "|---|---|---|---|"]
    lines += [f"| {name} | {before[name]:.4g} | {now[name]:.4g} | {now[name] / before[name]:.3g} |"
              for name in shared if before[name]]
    return lines


def _log_log(axis, xlabel: str, ylabel: str, title: str) -> None:
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7)


def _save(figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_block(rows: list[dict], path: Path) -> Path:
    """Log-log time and peak memory against the width, dense vs grouped vs MGIC, one line per case and device."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    for device in sorted({r["device"] for r in rows}):
        for case in sorted({r["case"] for r in rows}):
            series = sorted((r for r in rows if r["device"] == device and r["case"] == case), key=lambda r: int(r["c"]))
            widths = [int(r["c"]) for r in series]
            for variant, style in (("dense", "-o"), ("grouped", ":^"), ("MGIC", "--s")):
                label = f"{case} {variant} ({device})"
                time_axis.plot(widths, [float(r[f"{variant} ms"]) for r in series], style, label=label)
                memory = [max(float(r[f"{variant} peak MiB"]), 1e-3) for r in series]
                memory_axis.plot(widths, memory, style, label=label)
    for axis, title, unit in ((time_axis, "forward+backward time", "ms"), (memory_axis, "peak memory", "MiB")):
        _log_log(axis, "channels c", unit, title)
    return _save(figure, path)


def plot_knn(rows: list[dict], path: Path) -> Path:
    """Log-log kNN time against the points per cloud, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4.2))
    for method in sorted({r["method"] for r in rows}):
        series = sorted((r for r in rows if r["method"] == method), key=lambda r: int(r["N"]))
        axis.plot([int(r["N"]) for r in series], [float(r["ms"]) for r in series], "-o", label=method)
    _log_log(axis, "points per cloud N", "ms", "kNN graph (3-D points, k = 10)")
    return _save(figure, path)


def bench_all(out: str | Path, *, quick: bool = False, device: str = "auto", knn_batch: int = 1,
              knn_sizes: Sequence[int] | None = None, sections: Sequence[str] = SECTIONS,
              previous: str | Path | None = None) -> Path:
    """Run the benchmarks and write ``<out>/benchmarks.md``; returns its path. ``previous``: a folder
    with an earlier run's ``<name>/<name>.csv`` tables, whose headline figures the report shows
    beside this run's."""
    if previous is not None and not Path(previous).is_dir():
        raise ValueError(f"`--previous` must be a folder of earlier benchmark tables, got {str(previous)!r}")
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not sections:
        raise ValueError(f"`--sections` must be some of {', '.join(SECTIONS)}, got {list(sections)!r}")
    out = prepare_output_dir(out)
    images = prepare_output_dir(out / "images")
    options = QUICK if quick else FULL
    knn_sizes = list(knn_sizes or (QUICK_KNN_SIZES if quick else KNN_SIZES))
    machine = machine_description(resolve_devices(device))
    started = time.perf_counter()
    commands, tables = [], {}
    for name in sections:
        folder = out / "bench" / name
        command = COMMAND.get(name, name)
        kwargs = options[name] | {"out": folder} | ({"device": device} if name != "grouped" else {})
        REPORTS[command](**kwargs)
        commands.append("mgic-geo " + " ".join(command_line(f"bench {command}", kwargs)))
        tables[name] = folder
    knn_by_size = []
    if "knn" in sections:
        batch = 1 if quick else knn_batch
        for points in knn_sizes:
            folder = out / "bench" / "knn_sizes" / f"N{points}"
            kwargs = {"batch": batch, "points": points, "k": [10], "dims": [3], "repeats": 1 if quick else 3,
                      "device": device, "out": folder}
            report_knn(**kwargs)
            commands.append("mgic-geo " + " ".join(command_line("bench knn", kwargs)))
            knn_by_size += [r | {"N": points} for r in read_csv(folder / "knn.csv") if r["status"] == "ok"]

    block = read_csv(tables["block"] / "block.csv") if "block" in tables else []
    compiled = read_csv(tables["block_compiled"] / "block.csv") if "block_compiled" in tables else []
    knn = read_csv(tables["knn"] / "knn.csv") if "knn" in tables else []
    modelnet = read_csv(tables["modelnet"] / "modelnet.csv") if "modelnet" in tables else []
    figures = []
    if block:
        figures.append(("Dense vs grouped vs MGIC block: time and peak memory against the width",
                        plot_block(block, images / "bench_block.png")))
    if knn_by_size:
        figures.append(("kNN time against the points per cloud", plot_knn(knn_by_size, images / "bench_knn.png")))

    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    parts = [
        "# Benchmarks",
        "",
        "Generated by `mgic-geo bench all" + (" --quick" if quick else "") + f" --out {out}`"
        + (" (QUICK MODE: tiny sizes for testing the report; do not quote these figures)" if quick else "") + ".",
        "",
        f"- date: {date}",
        f"- machine: {machine}",
        f"- libraries: {library_versions()}",
        f"- wall time: {time.perf_counter() - started:.0f} s",
        "",
        "## Headline",
        "",
    ]
    lines = headline(block, knn, modelnet)
    lines += headline(compiled, [], [], block_label="Compiled MGIC block vs compiled dense block")
    parts += [f"- {line}" for line in lines] or ["- (no benchmark with a headline ran)"]
    compared = comparison(Path(previous), block, knn, modelnet) if previous is not None else []
    if compared:
        parts += ["", f"## Compared with the previous report ({Path(previous).as_posix()})", "",
                  "The same figures from the tables of an earlier run (its machine and load are in its own report "
                  "there); above 1 in the last column means the figure grew.", ""] + compared
    for title, path in figures:
        parts += ["", f"![{title}]({path.relative_to(out).as_posix()})"]
    for name, folder in tables.items():
        text = (folder / f"{COMMAND.get(name, name)}.md").read_text().rstrip()
        if name == "block_compiled":
            text = text.replace("## Dense block vs MGIC block:", "## Compiled (torch.compile) dense block vs MGIC block:")
        parts += ["", "#" + text if text.startswith("## ") else text]
    if knn_by_size:
        parts += ["", "## kNN against the points per cloud", "",
                  "| N | method | ms | time / ours |", "|---|---|---|---|"]
        parts += [f"| {r['N']} | {r['method']} | {float(r['ms']):.4g} | {float(r['time / ours']):.3g} |"
                  for r in sorted(knn_by_size, key=lambda r: (int(r["N"]), r["method"]))]
    parts += ["", "## Commands", "", "```"] + commands + ["```", ""]
    report = out / "benchmarks.md"
    report.write_text("\n".join(parts))
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="docs", help="writes benchmarks.md, images/ and bench/ here (default: docs)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds: to test the report, not for figures")
    parser.add_argument("--device", default="auto", help="auto (CPU, plus CUDA when available), cpu or cuda")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), metavar="NAME",
                        help=f"benchmarks to run (default: all of {', '.join(SECTIONS)})")
    parser.add_argument("--previous", default=None, metavar="DIR",
                        help="an earlier run's tables (<DIR>/block/block.csv, ...) to compare the headline figures with")
    parser.add_argument("--knn-batch", type=int, default=1, help="clouds per kNN call in the kNN-vs-N runs (default: 1)")
    parser.add_argument("--knn-sizes", type=int, nargs="+", default=None, metavar="N",
                        help=f"points per cloud of the kNN-vs-N runs (default: {' '.join(map(str, KNN_SIZES))})")


def run(args: argparse.Namespace) -> int:
    report = bench_all(args.out, quick=args.quick, device=args.device, knn_batch=args.knn_batch,
                       knn_sizes=args.knn_sizes, sections=args.sections, previous=args.previous)
    print(f"wrote {report}")
    return 0

"""Real-data results at equal wall-clock budgets: ``mgic-geo experiment results``.

Runs ``mgic-geo fit`` for every network of a plan on the same data, each for the same wall-clock
budget (``--trainer.max_time``) with the same number of CPU threads, and writes the results up as
``docs/results.md``: parameters, MACs, epochs done, wall time, device, and the validation overall
and mean-class accuracy (the validation split is the data module's held-out share of the training
files; no test split is used for anything here)::

    mgic-geo experiment results --plan modelnet10 --data-root ../shared/data/modelnet10-train --run all
    mgic-geo experiment results --plan cifar10 --data-root datasets/cifar10-train --run all
    mgic-geo experiment results --report --out docs          # docs/results.md from every finished run

A plan is data (:data:`~mgic_geo.experiments.plans.PLANS`): a run names its config, the overrides that make the recipe, the
epochs the cosine schedule is planned over, and the budget. Each run writes ``run_info.json``
(command, budget, wall seconds, threads, device, exit status) beside its ``logs/`` and
``checkpoints/`` under ``--runs/<plan>/<name>``; the report reads those, the per-epoch metrics of
the run's ``logs/version_N/metrics.csv`` and its pictures (learning curves, validation confusion
matrix), so it can be regenerated at any time without training again.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mgic_geo.experiments.plans import ACCURACY, PLANS, Run
from mgic_geo.tables import markdown_table, prepare_output_dir
from mgic_geo.validation import check_int

# the plans are data: mgic_geo.experiments.plans


def _max_time(minutes: float) -> str:
    seconds = int(round(minutes * 60))
    return f"00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def fit_command(run: Run, *, root: Path, data_root: str, cache_dir: str | None) -> list[str]:
    command = [sys.executable, "-m", "mgic_geo.cli", "fit", "--config", run.config, *run.overrides,
               "--trainer.default_root_dir", str(root), "--trainer.max_epochs", str(run.epochs),
               "--trainer.max_time", _max_time(run.budget_minutes), "--trainer.accelerator", "cpu",
               "--data.init_args.root", data_root, "--data.init_args.num_workers", "0"]
    if cache_dir:
        command += ["--data.init_args.cache_dir", cache_dir]
    return command


def run_plan(plan: str, names: list[str], *, runs: Path, data_root: str, threads: int, cache_dir: str | None) -> int:
    known = {run.name: run for run in PLANS[plan]}
    chosen = list(known) if names == ["all"] else names
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise ValueError(f"--run: unknown run(s) {', '.join(unknown)} of plan {plan!r}; known: {', '.join(known)}")
    status = 0
    for name in chosen:
        run = known[name]
        root = runs / plan / name
        if root.exists():
            shutil.rmtree(root)  # a run is redone whole, never mixed with an earlier one's logs
        root.mkdir(parents=True)
        command = fit_command(run, root=root, data_root=data_root, cache_dir=cache_dir)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        print(f"mgic-geo results: {plan}/{name}: {' '.join(command[1:])}", flush=True)
        start = time.perf_counter()
        with (root / "fit.log").open("w") as log:
            code = subprocess.call(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        wall = time.perf_counter() - start
        info = {"name": name, "model": run.model, "config": run.config, "recipe": run.recipe, "note": run.note,
                "command": command[1:], "epochs_planned": run.epochs, "budget_minutes": run.budget_minutes,
                "wall_seconds": round(wall, 1), "threads": threads, "exit_status": code, "device": _device(),
                "data_root": data_root, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        (root / "run_info.json").write_text(json.dumps(info, indent=2))
        print(f"mgic-geo results: {plan}/{name}: exit {code} after {wall / 60:.1f} min", flush=True)
        status = status or code
    return status


def _device() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU ({cpu}, {os.cpu_count()} cores), torch {torch.__version__}"


def newest_metrics(root: Path) -> Path | None:
    """The run's newest ``logs/version_N/metrics.csv`` (``None`` when it has none)."""
    versions = sorted((root / "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    return versions[-1] if versions else None


def read_epochs(root: Path) -> list[dict[str, float]]:
    """Per-epoch metrics of a run (its newest ``logs/version_N/metrics.csv``), one dict per epoch."""
    metrics = newest_metrics(root)
    if metrics is None:
        return []
    epochs: dict[int, dict[str, float]] = {}
    with metrics.open() as handle:
        for row in csv.DictReader(handle):
            if not row.get("epoch"):
                continue
            record = epochs.setdefault(int(float(row["epoch"])), {})
            for key, value in row.items():
                if value not in ("", None) and key != "epoch":
                    record[key] = max(float(value), record.get(key, 0.0)) if key == "step" else float(value)
    return [epochs[e] | {"epoch": e} for e in sorted(epochs)]


def read_validations(root: Path, metric: str) -> list[dict[str, float]]:
    """Every validation of a run (one row of its newest metrics.csv each, in order): a run that
    validates every quarter epoch has several per epoch."""
    metrics = newest_metrics(root)
    if metrics is None:
        return []
    with metrics.open() as handle:
        return [{key: float(value) for key, value in row.items() if value not in ("", None)}
                for row in csv.DictReader(handle) if row.get(metric)]


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def result_row(plan: str, root: Path) -> dict | None:
    info_path = root / "run_info.json"
    if not info_path.is_file():
        return None
    info = json.loads(info_path.read_text())
    first, second = ACCURACY[plan]
    validated = read_validations(root, first)
    last = validated[-1] if validated else {}
    best = max(validated, key=lambda e: e[first]) if validated else {}  # the first of equals
    epochs = read_epochs(root)
    steps = max((int(e.get("step", 0)) + 1 for e in epochs), default=0)
    # an epoch's last logged step tells its length once a later epoch has begun
    per_epoch = int(epochs[0]["step"]) + 1 if len(epochs) > 1 and "step" in epochs[0] else None
    done = f"{steps / per_epoch:.2f}".rstrip("0").rstrip(".") if per_epoch else "< 1"
    params, macs = _complexity(plan, info["model"])
    return {
        "run": info["name"], "network": info["model"], "params [M]": params, "MACs [M]": macs,
        "recipe": info["recipe"], "epochs done / planned": f"{done} / {info['epochs_planned']}",
        "steps": steps,
        "budget [min]": info["budget_minutes"], "wall [min]": f"{info['wall_seconds'] / 60:.1f}",
        "threads": info["threads"],
        "train samples/s": _samples_per_second(root),
        f"val {first.split('/')[1]} [%] (last)": _percent(last.get(first)),
        f"val {second.split('/')[1]} [%] (last)": _percent(last.get(second)),
        f"best val {first.split('/')[1]} [%] (epoch, step)": (
            f"{_percent(best.get(first))} ({int(best['epoch']) + 1}, {int(best['step']) + 1})" if best else "-"),
        "exit": info["exit_status"], "_info": info, "_root": root,
    }


def _samples_per_second(root: Path) -> str:
    """Median of the run's ``train/device/samples_per_sec`` log (Lightning's ThroughputMonitor: over
    the last 20 batches, data loading included, validation excluded); ``-`` for runs that predate it."""
    metrics = newest_metrics(root)
    if metrics is None:
        return "-"
    with metrics.open() as handle:
        rates = sorted(float(row["train/device/samples_per_sec"]) for row in csv.DictReader(handle)
                       if row.get("train/device/samples_per_sec"))
    return f"{rates[len(rates) // 2]:.1f}" if rates else "-"


def _complexity(plan: str, model: str) -> tuple[float, float]:
    import torch

    from mgic_geo.complexity import profile
    from mgic_geo.models import create_model

    if plan == "modelnet10":
        measured = profile(create_model(model, k=10), torch.randn(1024, 3, generator=torch.Generator().manual_seed(0)))
    else:
        measured = profile(create_model(model, num_classes=10), torch.randn(1, 3, 32, 32))
    return round(measured.params / 1e6, 3), round(measured.macs / 1e6, 2)


def _pictures(row: dict, images: Path, plan: str) -> list[str]:
    lines = []
    logs = sorted((row["_root"] / "logs").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    for picture in ("learning_curves.png", "confusion_val.png"):
        source = logs[-1] / picture if logs else None
        if source is not None and source.is_file():
            target = images / f"{plan}_{row['run']}_{picture}"
            shutil.copyfile(source, target)
            lines.append(f"![{row['run']} {picture[:-4].replace('_', ' ')}](images/results/{target.name})")
    return lines


TABLE_COLUMNS = {
    "modelnet10": ["run", "network", "params [M]", "MACs [M]", "recipe", "epochs done / planned", "steps", "budget [min]",
                   "wall [min]", "threads", "train samples/s", "val overall_acc [%] (last)", "val mean_class_acc [%] (last)",
                   "best val overall_acc [%] (epoch, step)"],
    "cifar10": ["run", "network", "params [M]", "MACs [M]", "recipe", "epochs done / planned", "steps", "budget [min]",
                "wall [min]", "threads", "train samples/s", "val top1_acc [%] (last)", "val top5_acc [%] (last)",
                "best val top1_acc [%] (epoch, step)"],
}
PICTURED = {"modelnet10": ("mgic_diffgcn_cpu30", "mgic_diffgcn_cpu30_fast"), "cifar10": ("mgic_resnet56",)}


def write_report(runs: Path, out: Path) -> Path:
    out = prepare_output_dir(out)
    images = out / "images" / "results"
    images.mkdir(parents=True, exist_ok=True)
    sections = ["# Results on real data\n",
                "Generated by `mgic-geo experiment results --report --out docs` from the runs under "
                f"`{runs}` (each made by `mgic-geo experiment results --plan <plan> --run <name>`). Every "
                "accuracy here is measured on a **validation split** held out from the official *train* "
                "split (the data module's seeded, stratified `val_fraction`); the official test splits were "
                "not available and were not used for any choice.\n"]
    for plan in PLANS:
        rows = [row for run in PLANS[plan] if (row := result_row(plan, runs / plan / run.name)) is not None]
        if not rows:
            continue
        info = rows[0]["_info"]
        sections.append(f"## {plan}\n")
        sections.append(f"Data root `{info['data_root']}`; device: {info['device']}; each run had the number of "
                        "CPU threads in its row (`OMP_NUM_THREADS`), data loading in the main process. The runs were "
                        "made two at a time on that machine (sometimes beside a test run), so a budget bought "
                        "fewer steps than on an idle machine; the steps column says how many.\n")
        sections.append(markdown_table(rows, TABLE_COLUMNS[plan]) + "\n")
        cut = [row["run"] for row in rows if row["epochs done / planned"].split(" / ")[0]
               != row["epochs done / planned"].split(" / ")[1]]  # fewer, or a fraction of the last one
        if cut:
            sections.append(f"- Stopped by the wall-clock budget before the planned epochs (the cosine schedule "
                            f"did not finish): {', '.join(cut)}.\n")
        failed = [row["run"] for row in rows if row["exit"] != 0]
        if failed:
            sections.append(f"- Ended with a non-zero exit status (see its fit.log): {', '.join(failed)}.\n")
        for row in rows:
            if row["run"] in PICTURED[plan]:
                pictures = _pictures(row, images, plan)
                if pictures:
                    sections.append(f"Learning curves and validation confusion matrix of `{row['run']}`:\n")
                    sections.append("\n".join(pictures) + "\n")
        sections.append("Commands:\n\n```bash\n" + "\n".join(
            f"OMP_NUM_THREADS={row['threads']} mgic-geo {shlex.join(row['_info']['command'][2:])}" for row in rows)
            + "\n```\n")
    rendered = images / "predict_validation_clouds.png"
    if rendered.is_file():
        sections += ["## Predictions on validation clouds\n",
                     "One validation cloud of each class (the first of each class in the held-out split), drawn by "
                     "`mgic-geo predict --render` with the `best.ckpt` of `mgic_diffgcn_cpu30` (green: right, "
                     "red: wrong). The folder holds links named `<class>/val/<file>` to the files of the split, so "
                     "predict reads the true class from the path:\n",
                     f"![predictions](images/results/{rendered.name})\n",
                     "```bash\nmgic-geo predict --ckpt outputs/results/modelnet10/mgic_diffgcn_cpu30/checkpoints/best.ckpt "
                     "\\\n    --inputs outputs/render_val --out outputs/render_val.csv --render 10 \\\n"
                     f"    --render-out docs/images/results/{rendered.name}\n```\n"]
    sections += _diagnosis(runs)
    path = out / "results.md"
    path.write_text("\n".join(sections))
    return path


def _epoch_accuracy(root: Path, epoch: int) -> float | None:
    rows = [e for e in read_epochs(root) if "val/overall_acc" in e and e["epoch"] == epoch]
    return rows[-1]["val/overall_acc"] if rows else None


def _diagnosis(runs: Path) -> list[str]:
    """The evidence for the diffGCN operator fix, from the runs and the probe table when present."""
    fixed, before = runs / "modelnet10" / "mgic_diffgcn", runs / "modelnet10" / "mgic_diffgcn_derivative"
    if not (fixed / "run_info.json").is_file() or not (before / "run_info.json").is_file():
        return []
    lines = ["## Why the diffGCN networks learned slowly, and the fix\n",
             "diffGCN's gradient feature estimates the derivative of every channel, about `1/h` times the "
             "channel's point-to-point differences, where `h` is the point spacing (about 0.05 on a "
             "1,024-point cloud in the unit sphere). Any feature after a learned map and a ReLU varies from "
             "point to point, so its 'derivative' is sampling noise some 20x larger than the feature itself; "
             "the mixing that follows then drowns the mass term, and the pooled features of an untrained "
             "network carry little of the shape. `operator_scale=\"spacing\"` (now the default of "
             "`DiffGCNConv`, `MGICConv` and the diffGCN networks) multiplies the gradient by the local "
             "spacing, so every feature has the units of the channel itself. Parameters and MACs are "
             "unchanged (the scale is computed from the graph, not learned).\n",
             "| epoch | val overall accuracy [%], `operator_scale=\"derivative\"` (before) | val overall accuracy [%], "
             "`\"spacing\"` (now) |", "|---|---|---|"]
    for epoch in range(max(len(read_epochs(fixed)), len(read_epochs(before)))):
        a, b = _epoch_accuracy(before, epoch), _epoch_accuracy(fixed, epoch)
        if a is None and b is None:
            continue
        lines.append(f"| {epoch + 1} | {_percent(a)} | {_percent(b)} |")
    lines.append("\n(`mgic_diffgcn` with the same recipe and budget, the runs `mgic_diffgcn_derivative` and "
                 "`mgic_diffgcn` above.)\n")
    probe = runs / "probe.md"
    if probe.is_file():
        lines += ["Linear probes of untrained networks (`experiments/modelnet10/probe_features.py`): a logistic "
                  "regression fitted on the pooled features of 1,000 training clouds, scored on the validation "
                  "split. The higher it is, the more of the shape the random initial network already passes to "
                  "its classifier:\n", probe.read_text()]
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", choices=sorted(PLANS), help="which plan's runs to train (with --run)")
    parser.add_argument("--run", nargs="+", default=[], metavar="NAME",
                        help="runs of the plan to train, or 'all' (each is redone from scratch)")
    parser.add_argument("--data-root", help="the data root every run of the plan trains on")
    parser.add_argument("--cache-dir", help="parsed-shape cache folder (ModelNet-10), outside read-only roots")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run (default: %(default)s)")
    parser.add_argument("--runs", default="outputs/results", help="where runs are kept (default: %(default)s)")
    parser.add_argument("--report", action="store_true", help="write <out>/results.md from the finished runs")
    parser.add_argument("--out", default="docs", help="folder of results.md (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    check_int("--threads", args.threads)
    runs = Path(args.runs)
    if not args.run and not args.report:
        raise ValueError("nothing to do: give --plan P --run NAME... (train) and/or --report (write results.md)")
    status = 0
    if args.run:
        if not args.plan or not args.data_root:
            raise ValueError("--run needs --plan and --data-root")
        if not Path(args.data_root).is_dir():
            raise ValueError(f"--data-root {args.data_root!r} is not a folder")
        status = run_plan(args.plan, args.run, runs=runs, data_root=args.data_root, threads=args.threads,
                          cache_dir=args.cache_dir)
    if args.report:
        print(f"mgic-geo results: wrote {write_report(runs, Path(args.out))}")
    return status

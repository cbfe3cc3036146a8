"""Accuracy against MACs for the ResNet-56 family on CIFAR-10, paper beside ours (``mgic-geo figure 3``).

The paper's own Figure 3 plots ImageNet top-1 accuracy against FLOPs for the MobileNet-class
networks of its Table 4. ImageNet is not available to this project, so this command draws the same
kind of figure for the networks we can train: the rows of Tables 2, 7 and 8
(:data:`~mgic_geo.experiments.image_tables.TABLES`), ResNet-56 and MGIC-ResNet-56 at the paper's
``(s_g, s_c)`` settings. Each network is drawn as:

* the paper's point, at its reported MACs ("FLOPs") and CIFAR-10 test accuracy;
* ours, at the MACs :func:`mgic_geo.complexity.profile` measures (the paper's level rule) and the
  accuracy of a finished ``mgic-geo test`` run of that network (``test_results.json`` under
  ``--results``, matched as the tables match them). A network without such a run has no test
  accuracy of ours: it is marked on the MACs axis only, and the figure says how many are;
* where a real training run of the network's table setting exists under ``--runs`` (what
  ``mgic-geo experiment results`` writes: short, budgeted runs on the CIFAR-10 train split), its last
  accuracy on the validation split carved from the train split, as a hollow square labelled with
  its steps. Those runs are far shorter than the paper's 180 epochs and measured on another split,
  so they show where training stood, not a reproduction.

Settings that two tables share, such as ``(16, 16)`` in Tables 7 and 8, are one network here. The
paper gives them different figures, so both of the paper's points are drawn.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import json

from mgic_geo.experiments.image_tables import RESULTS, TABLES, image_table
from mgic_geo.experiments.plans import ACCURACY
from mgic_geo.experiments.results import read_validations
from mgic_geo.models.registry import effective_mgic, model_builder

TABLES_OF_FIGURE = ("2", "7", "8")
RUNS = "outputs/results/cifar10"  # where `mgic-geo experiment results` writes the CIFAR-10 runs


def validation_runs(runs: str | Path) -> dict[str, dict]:
    """The real CIFAR-10 runs under ``runs`` that trained a network at its builder's defaults (no
    ``model_kwargs`` given on the command line), by model: ``accuracy`` (the last validation's
    top-1, percent), ``steps`` and ``name``. Runs with another setting are left out: their
    network is not a row of the tables."""
    found: dict[str, dict] = {}
    for info_path in sorted(Path(runs).glob("*/run_info.json")):
        try:
            info = json.loads(info_path.read_text())
            command, model, name = info.get("command", []), info["model"], info["name"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{info_path}: not a run_info.json of `mgic-geo experiment results` (a JSON object "
                             f"with 'name', 'model' and 'command'): {error!r}") from None
        if any("model_kwargs" in str(part) for part in command):
            continue
        validated = read_validations(info_path.parent, ACCURACY["cifar10"][0])
        if validated:
            last = validated[-1]
            found[model] = {"accuracy": round(100 * last[ACCURACY["cifar10"][0]], 1),
                            "steps": int(last.get("step", 0)) + 1, "name": name}
    return found


def figure3_points(*, results: str | Path | None = None, runs: str | Path | None = None) -> list[dict]:
    """One entry per network of Tables 2, 7 and 8, in table order: ``label``, ``paper_macs`` and
    ``paper_accuracy`` (lists: the paper may report a network twice), ``macs`` (ours, M),
    ``accuracy`` (ours in percent, or ``None`` without a test run) and ``validation`` (a
    :func:`validation_runs` entry of the network at the builder's default setting under ``runs``,
    or ``None``)."""
    validations = validation_runs(runs) if runs is not None else {}
    points: dict[tuple, dict] = {}
    for table in TABLES_OF_FIGURE:
        _, rows = image_table(table, results=results if results is not None else RESULTS[table])
        for row, (_, model, kwargs, *_paper) in zip(rows, TABLES[table][4]):
            key = (model, tuple(sorted((kwargs.get("mgic") or {}).items())))
            label = "ResNet-56" if model == "resnet56" else _setting(kwargs)
            entry = points.setdefault(key, {"label": label, "paper_macs": [], "paper_accuracy": [],
                                            "macs": row["MACs [M] ours"], "accuracy": None, "validation": None})
            if model in validations and _is_default_setting(model, kwargs):
                entry["validation"] = validations[model]
            paper = (row["FLOPs [M] paper"], row["accuracy [%] paper"])
            if paper not in zip(entry["paper_macs"], entry["paper_accuracy"]):  # Tables 2 and 8 repeat (8, 16)
                entry["paper_macs"].append(paper[0])
                entry["paper_accuracy"].append(paper[1])
            if row["accuracy [%] ours"] != "no run":
                entry["accuracy"] = float(row["accuracy [%] ours"])
    return list(points.values())


def _is_default_setting(model: str, kwargs: dict) -> bool:
    builder = model_builder(model)
    if getattr(builder, "default_mgic", None) is None:
        return not kwargs
    return effective_mgic(builder, kwargs.get("mgic")) == builder.default_mgic


def _setting(kwargs: dict) -> str:
    mgic = kwargs.get("mgic") or {}
    return f"MGIC (s_g={mgic.get('group_size')}, s_c={mgic.get('coarsest')})"


def plot_figure3(points: list[dict], out: str | Path) -> Path:
    """Draw :func:`figure3_points` into the PNG ``out`` (folders are created)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(10, 5.5))
    for index, point in enumerate(points):
        colour = f"C{index % 10}"
        axes.scatter(point["paper_macs"], point["paper_accuracy"], marker="o", color=colour, s=45,
                     label=f"{point['label']}")
        for macs, accuracy in zip(point["paper_macs"], point["paper_accuracy"]):
            axes.annotate("paper", (macs, accuracy), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if point["accuracy"] is not None:
            axes.scatter([point["macs"]], [point["accuracy"]], marker="s", color=colour, s=45)
            axes.annotate("ours", (point["macs"], point["accuracy"]), textcoords="offset points", xytext=(4, -10),
                          fontsize=7)
        else:
            axes.axvline(point["macs"], color=colour, linestyle=":", linewidth=1)
        if point["validation"] is not None:
            run = point["validation"]
            axes.scatter([point["macs"]], [run["accuracy"]], marker="s", facecolors="none", edgecolors=colour, s=60)
            axes.annotate(f"ours: val split, {run['steps']} steps", (point["macs"], run["accuracy"]),
                          textcoords="offset points", xytext=(5, -3), fontsize=7)
            axes.plot([point["macs"]], [0], marker="^", color=colour, transform=axes.get_xaxis_transform(),
                      clip_on=False, markersize=8)
    missing = sum(point["accuracy"] is None for point in points)
    title = ("CIFAR-10 accuracy vs MACs, ResNet-56 family of Tables 2, 7, 8 (the paper's Figure 3 is ImageNet)\n"
             "circles: paper, test split; squares: ours, test split;\nhollow squares: ours, validation split of a "
             "short real run")
    if missing:
        title += (f"\n{missing} of {len(points)} networks have no test run of ours: their measured MACs are marked on "
                  "the MACs axis (dotted lines, triangles)")
    axes.set_title(title, fontsize=9)
    axes.set_xlabel("MACs [M] (paper: its reported FLOPs; ours: measured, paper's level rule)")
    axes.set_ylabel("CIFAR-10 accuracy [%] (split as marked)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", default=None,
                        help="folder searched for test_results.json of CIFAR-10 runs (default: outputs/cifar10)")
    parser.add_argument("--runs", default=RUNS, help="folder of real training runs (run_info.json, metrics.csv) as "
                        f"`mgic-geo experiment results` writes them (default: {RUNS}; absent: none drawn)")
    parser.add_argument("--out", default="outputs/figures/figure3.png", help="the PNG to write "
                        "(default: outputs/figures/figure3.png)")


def run(args: argparse.Namespace) -> int:
    points = figure3_points(results=args.results, runs=args.runs)
    path = plot_figure3(points, args.out)
    for point in points:
        ours = "no run" if point["accuracy"] is None else f"{point['accuracy']:.1f} %"
        paper = ", ".join(f"{m} M / {a} %" for m, a in zip(point["paper_macs"], point["paper_accuracy"]))
        run = point["validation"]
        validation = "" if run is None else f"; ours, validation split of run {run['name']} ({run['steps']} steps): " \
            f"{run['accuracy']:.1f} %"
        print(f"{point['label']}: paper {paper}; ours {point['macs']} M / {ours}{validation}")
    print(f"wrote {path}")
    return 0

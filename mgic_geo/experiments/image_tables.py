"""Tables 2, 3, 4, 5, 7 and 8 of the paper (images): paper figures beside ours (``mgic-geo table N``).

Only the rows of networks this package builds are listed (the paper's tables also compare other
methods). Parameters and MACs are measured by :func:`mgic_geo.complexity.profile` on meta tensors
at the paper's input size (CIFAR-10 32x32, ImageNet 224x224, Cityscapes 1024x2048); the paper's
"FLOPs" are MACs. Accuracy columns come from training runs (``mgic-geo fit`` then ``mgic-geo test`` with the
configs under ``experiments/cifar10``, ``experiments/imagenet``, ``experiments/cityscapes``): every
``test_results.json`` under ``--results`` (by default the folder those configs write to,
:data:`RESULTS`) whose ``model`` and ``model_kwargs`` match the row, the newest; otherwise "no run".
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from mgic_geo.complexity import profile
from mgic_geo.experiments.report import read_test_results
from mgic_geo.tables import write_table
from mgic_geo.models import create_model
from mgic_geo.models.registry import effective_mgic, fold_legacy_mgic, mgic_kwargs, model_builder

CIFAR, IMAGENET, CITYSCAPES = (32, 32), (224, 224), (1024, 2048)

# table -> (title, input size, classes, MAC unit, rows); a row: (label, model, kwargs, paper params [M],
# paper FLOPs in the unit, paper accuracy [%] (top-1 or mIoU)).
TABLES = {
    "2": ("Table 2: ResNet-56 on CIFAR-10", CIFAR, 10, "M", [
        ("ResNet-56", "resnet56", {}, 0.85, 125, 93.0),
        ("MGIC-ResNet-56 (s_g=8, s_c=16)", "mgic_resnet56", {"mgic": {"group_size": 8, "coarsest": 16}}, 0.41, 60, 94.2),
    ]),
    "3": ("Table 3: ResNet-50 on ImageNet", IMAGENET, 1000, "G", [
        ("ResNet-50", "resnet50", {}, 25.6, 4.1, 75.3),
        ("MGIC-ResNet-50 (s_g=32, s_c=64)", "mgic_resnet50", {"mgic": {"group_size": 32, "coarsest": 64}}, 9.4, 1.6, 75.8),
        ("MGIC-ResNet-50 (s_g=64, s_c=64)", "mgic_resnet50", {"mgic": {"group_size": 64, "coarsest": 64}}, 15.1, 2.5, 77.9),
        ("MGIC-ResNet-50 (s_g=16, s_c=64)", "mgic_resnet50", {"mgic": {"group_size": 16, "coarsest": 64}}, 6.2, 1.0, 74.3),
    ]),
    "4": ("Table 4: MobileNetV3 on ImageNet", IMAGENET, 1000, "M", [
        ("MobileNetV3-Large 1.0x", "mobilenetv3_large", {}, 5.4, 219, 75.2),
        ("MGIC-MobileNetV3 0.6x", "mgic_mobilenetv3_large", {"width_mult": 0.6}, 2.3, 48, 66.3),
        ("MGIC-MobileNetV3 1.0x", "mgic_mobilenetv3_large", {"width_mult": 1.0}, 5.2, 145, 74.8),
        ("MGIC-MobileNetV3 1.2x", "mgic_mobilenetv3_large", {"width_mult": 1.2}, 7.1, 233, 76.1),
    ]),
    "5": ("Table 5: LR-ASPP segmentation on Cityscapes (mIoU)", CITYSCAPES, 19, "G", [
        ("MobileNetV3-Large", "lraspp_mobilenetv3_large", {}, 1.51, 9.74, 72.64),
        ("MobileNetV3-Small", "lraspp_mobilenetv3_small", {}, 0.47, 2.90, 68.38),
        ("MGIC-Large", "lraspp_mgic_mobilenetv3_large", {}, 1.67, 9.62, 72.60),
        ("MGIC-Small", "lraspp_mgic_mobilenetv3_small", {}, 0.48, 2.73, 68.52),
    ]),
    "7": ("Table 7: MGIC-ResNet-56 on CIFAR-10, s_g = 16, varying s_c", CIFAR, 10, "M", [
        (f"s_c={coarsest}", "mgic_resnet56", {"mgic": {"group_size": 16, "coarsest": coarsest}}, params, flops, accuracy)
        for coarsest, params, flops, accuracy in ((64, 0.53, 91, 94.7), (32, 0.5, 76, 94.6), (16, 0.47, 65, 94.3))
    ]),
    "8": ("Table 8: MGIC-ResNet-56 on CIFAR-10, s_c = 16, varying s_g", CIFAR, 10, "M", [
        (f"s_g={group_size}", "mgic_resnet56", {"mgic": {"group_size": group_size, "coarsest": 16}}, params, flops, accuracy)
        for group_size, params, flops, accuracy in ((32, 0.79, 100, 94.8), (16, 0.53, 85, 94.7), (8, 0.41, 60, 94.2),
                                                   (4, 0.29, 45, 92.8))
    ]),
}
UNITS = {"M": 1e6, "G": 1e9}
# table -> the folder its shipped configs write results to (their trainer.default_root_dir's parent)
RESULTS = {"2": "outputs/cifar10", "7": "outputs/cifar10", "8": "outputs/cifar10", "3": "outputs/imagenet",
           "4": "outputs/imagenet", "5": "outputs/cityscapes"}


def _same_network(run: dict, model: str, kwargs: dict) -> bool:
    """``run`` trained ``model`` with ``kwargs`` (MGIC settings compared as the configs they build,
    whichever form a run recorded them in)."""
    if run.get("model") != model:
        return False
    builder = model_builder(model)
    recorded = fold_legacy_mgic(builder, dict(run.get("model_kwargs") or {}))
    wanted = fold_legacy_mgic(builder, dict(kwargs))
    if effective_mgic(builder, recorded.pop("mgic", None)) != effective_mgic(builder, wanted.pop("mgic", None)):
        return False
    return all(recorded.get(key) == value for key, value in wanted.items())


def _accuracy(runs: list[dict], model: str, kwargs: dict) -> str:
    matching = [r for r in runs if _same_network(r, model, kwargs)]
    if not matching:
        return "no run"
    value = matching[-1].get("top1_accuracy", matching[-1].get("mean_iou", matching[-1].get("overall_accuracy")))
    return "no run" if value is None else f"{100 * value:.1f}"


def image_table(table: str, *, results: str | Path | None = None) -> tuple[str, list[dict]]:
    """The title and rows of paper table ``table`` (one of :data:`TABLES`), with accuracies from the
    runs under ``results`` (default: ``RESULTS[table]``)."""
    if table not in TABLES:
        raise ValueError(f"no image table {table!r}; the image tables are {', '.join(TABLES)} (table 6 is ModelNet-10)")
    title, size, classes, unit, rows = TABLES[table]
    runs = read_test_results(RESULTS[table] if results is None else results)
    measured_rows = []
    digits = 3 if unit == "G" else 1
    for label, model, kwargs, paper_params, paper_flops, paper_accuracy in rows:
        measured = _measure(model, classes, size, kwargs)
        official = _measure_official_rule(model, classes, size, kwargs)
        measured_rows.append({
            "network": label,
            "model": model,
            "params [M] paper": paper_params,
            "params [M] ours": round(measured.params / 1e6, 3),
            "params [M] ours, official rule": "-" if official is None else round(official.params / 1e6, 3),
            f"FLOPs [{unit}] paper": paper_flops,
            f"MACs [{unit}] ours": round(measured.macs / UNITS[unit], digits),
            f"MACs [{unit}] ours, official rule": "-" if official is None else round(official.macs / UNITS[unit], digits),
            "accuracy [%] paper": paper_accuracy,
            "accuracy [%] ours": _accuracy(runs, model, kwargs),
        })
    return title, measured_rows


def _measure(model: str, classes: int, size: tuple[int, int], kwargs: dict):
    with torch.device("meta"):  # shapes only: nothing is allocated or computed
        return profile(create_model(model, num_classes=classes, **kwargs), torch.empty(1, 3, *size))


def _measure_official_rule(model: str, classes: int, size: tuple[int, int], kwargs: dict):
    """The row's network with the authors' level rule (``level_rule="official"``, :mod:`mgic_geo.core.plan`)
    instead of the paper's; ``None`` for networks without MGIC blocks."""
    builder = model_builder(model)
    if getattr(builder, "default_mgic", None) is None:
        return None
    return _measure(model, classes, size, mgic_kwargs(builder, kwargs, level_rule="official"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", default=None,
                        help="folder searched for test_results.json (default: where the table's configs write: "
                             "outputs/cifar10 for tables 2, 7, 8; outputs/imagenet for 3, 4; outputs/cityscapes for 5)")
    parser.add_argument("--out", default="outputs/tables", help="where to write table<N>.md/.csv (default: outputs/tables)")


def run(args: argparse.Namespace) -> int:
    title, rows = image_table(args.name, results=args.results)
    size = TABLES[args.name][1]
    notes = [
        f"Params and MACs measured by mgic_geo.complexity.profile at {size[0]}x{size[1]} with {TABLES[args.name][2]} "
        "classes (MACs of convolutions and linear maps: the paper's FLOPs).",
        "Only the paper's rows for networks this package builds; accuracy from test_results.json runs under --results.",
        "'ours' uses the paper's level rule (Algorithm 1: L = floor(log2(c / s_c)) coarsenings), the package default; "
        "'official rule' the authors' released code's (coarsen at least once, stop below 2 s_c), see mgic_geo.core.plan.",
    ]
    _, _, text = write_table(rows, args.out, f"table{args.name}", title=title, notes=notes)
    print(text)
    return 0

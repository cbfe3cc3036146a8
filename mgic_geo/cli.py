"""The ``mgic-geo`` command line.

Each sub-command lives in a module exposing ``add_arguments(parser)`` and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings

# PyG's own import calls torch.jit.script, which torch >= 2.10 deprecates: noise for our users.
warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)

# (group, name) -> (module, help); name None: a command of its own, without a group (mgic-geo predict)
COMMANDS = {
    ("experiment", "reconstruction"): (
        "mgic_geo.experiments.reconstruction",
        "Table 1 / Fig. 2: feature maps encoded to the coarsest level and decoded",
    ),
    ("experiment", "scaling"): (
        "mgic_geo.experiments.scaling",
        "Sec. 4.4 / Eq. 8: params and MACs of a dense 3x3 block vs its MGIC block",
    ),
    ("experiment", "decompose"): (
        "mgic_geo.experiments.decompose",
        "where an image network's params and MACs go, by stage and role (MGIC levels, transfers, transitions)",
    ),
    ("experiment", "fidelity"): (
        "mgic_geo.experiments.fidelity_report",
        "every row of Tables 2-8 under each reading of the paper, and where the gaps sit (docs/fidelity.md)",
    ),
    ("experiment", "results"): (
        "mgic_geo.experiments.results",
        "real-data fits of every network at an equal wall-clock budget, written up as docs/results.md",
    ),
    ("bench", "grouped"): (
        "mgic_geo.bench.grouped",
        "forward+backward time of the formulations of a grouped 1x1 channel map",
    ),
    ("bench", "block"): (
        "mgic_geo.bench.block_command",
        "forward+backward time and peak memory, dense block vs MGIC block",
    ),
    ("table", "2"): ("mgic_geo.experiments.image_tables", "Table 2: ResNet-56 on CIFAR-10, paper beside ours"),
    ("table", "3"): ("mgic_geo.experiments.image_tables", "Table 3: ResNet-50 on ImageNet, paper beside ours"),
    ("table", "4"): ("mgic_geo.experiments.image_tables", "Table 4: MobileNetV3 on ImageNet, paper beside ours"),
    ("table", "5"): ("mgic_geo.experiments.image_tables", "Table 5: LR-ASPP on Cityscapes, paper beside ours"),
    ("table", "6"): (
        "mgic_geo.experiments.table6",
        "Table 6: ModelNet-10 params, MACs (and accuracy of finished runs) beside the paper's",
    ),
    ("table", "7"): ("mgic_geo.experiments.image_tables", "Table 7: MGIC-ResNet-56, varying s_c, paper beside ours"),
    ("table", "8"): ("mgic_geo.experiments.image_tables", "Table 8: MGIC-ResNet-56, varying s_g, paper beside ours"),
    ("figure", "3"): (
        "mgic_geo.experiments.figure3",
        "Figure 3: CIFAR-10 accuracy vs MACs of the ResNet-56 family, paper beside ours (PNG)",
    ),
    ("bench", "modelnet"): (
        "mgic_geo.bench.modelnet",
        "training samples/s and peak memory of the ModelNet-10 networks on the same batches",
    ),
    ("bench", "all"): (
        "mgic_geo.bench.all",
        "every benchmark, written up as one report with plots (docs/benchmarks.md)",
    ),
    ("bench", "knn"): (
        "mgic_geo.bench.knn",
        "time and memory of a batched kNN graph: ours vs naive cdist+topk vs torch-cluster/pyg-lib",
    ),
    ("predict", None): (
        "mgic_geo.inference.cli",
        "stream point clouds in batches through a classifier: CSV of predictions, flat memory, batch == one by one",
    ),
    ("release-weights", None): (
        "mgic_geo.models.release",
        "strip a training checkpoint into a release weights file (.pt) with its metadata and sha256 (.json)",
    ),
}

GROUP_HELP = {
    "experiment": "run an experiment of the paper",
    "bench": "run a benchmark (figures side by side in one run)",
    "table": "print a table of the paper beside our measurements",
    "figure": "draw a figure of the paper beside our measurements",
}

# Lightning sub-commands: the rest of argv goes to LightningCLI (mgic_geo.training.cli).
LIGHTNING_COMMANDS = {
    "fit": "train a network (LightningCLI: --config experiments/<modelnet10|cifar10|imagenet|cityscapes>/<model>.yaml)",
    "validate": "evaluate a checkpoint on the validation loader (LightningCLI: --config ... --ckpt_path ...)",
    "test": "test a checkpoint, write test_results.json (LightningCLI: --config ... --ckpt_path last)",
}


def build_parser() -> argparse.ArgumentParser:
    from mgic_geo import __version__

    parser = argparse.ArgumentParser(prog="mgic-geo", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    names = list(dict.fromkeys(group for group, _ in COMMANDS)) + list(LIGHTNING_COMMANDS)
    groups = parser.add_subparsers(dest="group", required=True, metavar="{" + ",".join(names) + "}")
    subparsers = {}
    for (group, name), (module_name, help_text) in COMMANDS.items():
        if name is None:
            sub = groups.add_parser(group, help=help_text, description=help_text)
            sub.set_defaults(module=module_name)
            importlib.import_module(module_name).add_arguments(sub)
            continue
        if group not in subparsers:
            group_parser = groups.add_parser(group, help=GROUP_HELP[group])
            subparsers[group] = group_parser.add_subparsers(dest="name", required=True)
        sub = subparsers[group].add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(module=module_name)
        importlib.import_module(module_name).add_arguments(sub)
    for name, help_text in LIGHTNING_COMMANDS.items():  # listed here, parsed by mgic_geo.training.cli
        groups.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else list(argv)
    if given and given[0] in LIGHTNING_COMMANDS:
        from mgic_geo.training.cli import main as lightning_main

        return lightning_main(argv)
    args = build_parser().parse_args(argv)
    module = importlib.import_module(args.module)
    try:
        return module.run(args) or 0
    except ValueError as error:  # bad input: a clear message, not a traceback
        print(f"mgic-geo: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

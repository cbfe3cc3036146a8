"""Where a network's parameters and MACs go, by stage and by role (``mgic-geo experiment decompose``).

The paper's tables give one figure per network; when ours differs, the question is which part
differs. This splits one forward pass (:class:`torch.utils.flop_counter.FlopCounterMode`, per module,
on the ``meta`` device) and the parameters by the module that holds them, into rows of
``(stage, role)``:

* ``stage``: ``stem``, ``stage <i>`` (ResNet ``stages.<i>``, MobileNetV3 ``features.<i>`` or an
  LR-ASPP's ``backbone.<i>``, the
  point-cloud networks' ``blocks.<i>`` / ``widen.<i>`` / ``layers.<i>``) or ``head``;
* ``role``: inside an MGIC block, ``level <j> block`` (``coarsest block`` for the fully coupled
  one), ``restriction``, ``prolongation`` or ``correction norm``; elsewhere ``transition``,
  ``widening map``, ``shortcut``, ``block`` (a plain block), ``embedding`` or ``classifier``.

Point-cloud networks run on one random cloud (``--points``) inside a MAC count
(:mod:`mgic_geo.nn.cost`), as :func:`~mgic_geo.complexity.profile` runs them: the grouped channel
maps count their true MACs (not the zero blocks of their batched products), and the kNN searches
and graph operators, which run outside the learned maps, are left out as the paper's FLOPs leave
them out (``mgic-geo table 6`` has them in columns of their own).

Run with ``--level-rule both`` to see the paper's and the authors' level rules side by side. The
totals are those of :func:`mgic_geo.complexity.profile` (a test checks this).
"""
from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mgic_geo.complexity import MISSING_FORMULAS
from mgic_geo.core.block import MGICBlock
from mgic_geo.core.plan import LEVEL_RULES
from mgic_geo.core.transfer import GroupedChannelMap
from mgic_geo.models import create_model
from mgic_geo.models.registry import mgic_kwargs, model_builder, model_task
from mgic_geo.nn import cost
from mgic_geo.tables import write_table

MGIC_PARTS = {"restrictions": "restriction", "prolongations": "prolongation", "norms": "correction norm"}
ROLE_ORDER = ("stem", "transition", "widening map", "shortcut", "block", "embedding", "classifier",
              "other", "outside the layers")  # then the levels, in order
LATE_ROLES = ("coarsest block", "restriction", "prolongation", "correction norm")


def _stage(path: str) -> str:
    match = re.match(r"(?:stages|features|blocks|widen|layers|backbone)\.(\d+)", path)
    if match:
        return f"stage {match.group(1)}"
    if path.startswith("stem"):
        return "stem"
    if path.startswith(("fc", "classifier", "pool", "avgpool", "head", "embed")):
        return "head"
    return "other"


def _role(model: nn.Module, path: str) -> str:
    """The role of the module at ``path`` (module docstring), from the MGIC block that holds it, if any."""
    parts = path.split(".")
    for end in range(len(parts) - 1, 0, -1):
        owner = model.get_submodule(".".join(parts[:end]))
        if isinstance(owner, MGICBlock):
            part, rest = parts[end], parts[end + 1:]
            if part in MGIC_PARTS:
                return MGIC_PARTS[part]
            if part == "blocks" and rest:
                level = int(rest[0])
                return "coarsest block" if level == len(owner.widths) - 1 else f"level {level} block"
            return "other"
    if "downsample" in parts:
        return "shortcut"
    if parts[0] in ("widen", "embed"):
        return {"widen": "widening map", "embed": "embedding"}[parts[0]]
    if any(type(model.get_submodule(".".join(parts[:end]))).__name__ == "Transition" for end in range(1, len(parts))):
        return "transition"
    return {"stem": "stem", "head": "classifier"}.get(_stage(path), "block")


def stage_order(stage: str) -> tuple:
    """Sort key of a stage name: stem, stages in number order, head, the rest."""
    return (0, 0) if stage == "stem" else (1, int(stage.split()[1])) if stage.startswith("stage ") else \
        (2, 0) if stage == "head" else (3, 0) if stage == "other" else (4, 0)


def part_order(row: dict) -> tuple:
    """Sort key of a decomposition row: by stage (:func:`stage_order`), then by role."""
    stage, role = row["stage"], row["role"]
    stage_key = stage_order(stage)
    level = re.match(r"level (\d+) block", role)
    if role in ROLE_ORDER:
        role_key = ROLE_ORDER.index(role)
    elif level:
        role_key = len(ROLE_ORDER) + int(level.group(1))
    else:
        role_key = 1000 + LATE_ROLES.index(role) if role in LATE_ROLES else 2000
    return stage_key, role_key


def decompose(model: nn.Module, *inputs) -> list[dict]:
    """Rows ``{"stage", "role", "params", "macs"}`` of ``model``'s parameters and of the MACs of
    ``model(*inputs)``, one per (stage, role) in the order first met; totals in the last row, which
    also holds the MACs left out of every row, as :class:`~mgic_geo.complexity.Profile` reports
    them: ``knn_macs`` (kNN distance products) and ``graph_operator_macs`` (graph operators)."""
    counter = FlopCounterMode(display=False, custom_mapping=MISSING_FORMULAS)  # as profile counts
    true_macs: dict[str, int] = defaultdict(int)  # grouped channel maps: their MACs without zero blocks
    handles = [module.register_forward_hook(
        lambda module, args, output, path=path: true_macs.__setitem__(
            path, true_macs[path] + output.numel() * module.weight.shape[-1]))
        for path, module in model.named_modules() if isinstance(module, GroupedChannelMap)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), counter, cost.counting() as graph_macs:  # the reference formulations, as profile's
            model(*inputs)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    prefix = type(model).__name__ + "."
    counts = counter.get_flop_counts()
    rows: dict[tuple[str, str], dict] = {}

    def row(path: str) -> dict:
        key = (_stage(path), _role(model, path))
        return rows.setdefault(key, {"stage": key[0], "role": key[1], "params": 0, "macs": 0})

    counted_in_layers = 0
    for path, module in model.named_modules():
        if path and not any(True for _ in module.children()):
            counted = sum(counts.get(prefix + path, {}).values()) // 2
            counted_in_layers += counted
            row(path)["macs"] += true_macs[path] if isinstance(module, GroupedChannelMap) else counted
            row(path)["params"] += sum(p.numel() for p in module.parameters(recurse=False))
    result = [r for r in rows.values() if r["params"] or r["macs"]]
    # products outside every layer that profile counts too (e.g. the point-cloud networks' hash of the
    # coordinates when they halve a cloud); the kNN and graph-operator products there are left out
    outside = sum(counts.get("Global", {}).values()) // 2 - counted_in_layers - sum(graph_macs.values())
    if outside > 0:
        result.append({"stage": "other", "role": "outside the layers", "params": 0, "macs": outside})
    result.append({"stage": "total", "role": "", "params": sum(r["params"] for r in result),
                   "macs": sum(r["macs"] for r in result), "knn_macs": graph_macs["knn"],
                   "graph_operator_macs": graph_macs["graph operators"]})
    return result


def decompose_model(name: str, *, size: tuple[int, int] = (32, 32), classes: int = 10, kwargs: dict | None = None,
                    level_rule: str | None = None, points: int = 1024) -> list[dict]:
    """:func:`decompose` of the registered model ``name``: an image model built on ``meta`` at
    ``size``, a point-cloud model on one cloud of ``points`` points; ``level_rule`` replaces the
    MGIC level rule of its configuration."""
    kwargs = dict(kwargs or {})
    builder = model_builder(name)
    if level_rule is not None:
        if getattr(builder, "default_mgic", None) is None:
            raise ValueError(f"--level-rule: model {name!r} has no MGIC blocks")
        kwargs = mgic_kwargs(builder, kwargs, level_rule=level_rule)
    if model_task(name) == "point_cloud_classification":  # a real cloud: the layers read positions
        model = create_model(name, num_classes=classes, **kwargs)
        return decompose(model, torch.randn(points, 3, generator=torch.Generator().manual_seed(0)))
    with torch.device("meta"):
        model = create_model(name, num_classes=classes, **kwargs)
        return decompose(model, torch.empty(1, 3, *size))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a registered model (mgic-geo's registry)")
    parser.add_argument("--mgic", default=None, help='MGIC fields as JSON, e.g. \'{"group_size": 16, "coarsest": 32}\'')
    parser.add_argument("--width-mult", type=float, default=None, help="MobileNetV3 width multiplier")
    parser.add_argument("--size", type=int, nargs=2, default=(32, 32), metavar=("H", "W"),
                        help="input size (default: 32 32, CIFAR-10; 224 224 for ImageNet)")
    parser.add_argument("--classes", type=int, default=10, help="classes (default: 10)")
    parser.add_argument("--points", type=int, default=1024, help="points of the cloud, for point-cloud models "
                        "(default: 1024)")
    parser.add_argument("--level-rule", choices=(*LEVEL_RULES, "both", "all"), default="both",
                        help="MGIC level rule(s) to decompose: one of them, both (paper and official, the default) "
                             "or all three, side by side")
    parser.add_argument("--out", default="outputs/decompose", help="where to write decompose.md/.csv")


def run(args: argparse.Namespace) -> int:
    kwargs = {}
    if args.mgic:
        try:
            kwargs["mgic"] = json.loads(args.mgic)
        except json.JSONDecodeError as error:
            raise ValueError(f"--mgic: not JSON ({error}): {args.mgic!r}") from None
    if args.width_mult is not None:
        kwargs["width_mult"] = args.width_mult
    has_mgic = getattr(model_builder(args.model), "default_mgic", None) is not None
    chosen = {"both": ["paper", "official"], "all": list(LEVEL_RULES)}.get(args.level_rule, [args.level_rule])
    rules = chosen if has_mgic else [None]
    tables = {rule: decompose_model(args.model, size=tuple(args.size), classes=args.classes, kwargs=kwargs,
                                    level_rule=rule, points=args.points) for rule in rules}
    merged: dict[tuple[str, str], dict] = defaultdict(dict)
    for rule, rows in tables.items():
        label = f" ({rule} rule)" if rule else ""
        for r in rows:
            entry = merged[(r["stage"], r["role"])]
            entry.update({"stage": r["stage"], "role": r["role"], f"params{label}": r["params"],
                          f"MACs [M]{label}": round(r["macs"] / 1e6, 3)})
    rows = [dict(entry) for entry in merged.values()]
    columns = ["stage", "role"] + [c for rule in rules for c in (f"params{f' ({rule} rule)' if rule else ''}",
                                                                   f"MACs [M]{f' ({rule} rule)' if rule else ''}")]
    rows = [{column: entry.get(column, 0) for column in columns} for entry in rows]
    total = [r for r in rows if r["stage"] == "total"]
    rows = sorted((r for r in rows if r["stage"] != "total"), key=part_order) + total
    title = f"Decomposition of {args.model} {json.dumps(kwargs) if kwargs else ''} at {args.size[0]}x{args.size[1]}"
    notes = ["Per module, from torch.utils.flop_counter on the meta device (MACs = FLOPs / 2); parameters by the "
             "module that holds them; see mgic_geo.experiments.decompose for the stage and role names."]
    _, _, text = write_table(rows, args.out, "decompose", title=title, notes=notes)
    print(text)
    return 0

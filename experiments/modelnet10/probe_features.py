"""How much of the shape do a network's pooled features carry before any training?

A diagnostic for issue 13 (diffGCN networks learned far more slowly than DGCNN): build a network with
its random initial weights, pass the training and validation clouds of a ModelNet-10 root through it
(BatchNorm in training mode, shuffled batches of 50, no gradients), take the features its classifier head
receives, and fit a logistic regression on the training clouds' features (L-BFGS, a small L2 penalty).
Its validation accuracy says how linearly separable the classes are in the untrained network's
features: a network whose features are mostly noise starts from a poor representation and learns
slowly. Uses the data module's own train / validation split (seeded, stratified); no test split.

    python experiments/modelnet10/probe_features.py --data-root ../shared/data/modelnet10-train \
        --cache-dir outputs/cache/modelnet10-train --train-clouds 1000 \
        diffgcn:operator_scale=derivative diffgcn mgic_diffgcn:operator_scale=derivative mgic_diffgcn dgcnn
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from torch_geometric.loader import DataLoader

from mgic_geo.data import ModelNet10DataModule
from mgic_geo.models import create_model


def parse_model(spec: str) -> tuple[str, dict]:
    name, _, options = spec.partition(":")
    kwargs = {}
    for option in filter(None, options.split(",")):
        key, _, value = option.partition("=")
        kwargs[key] = value
    return name, kwargs


def head_inputs(model: torch.nn.Module, loader, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    captured = []
    hook = model.head.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].detach()))
    labels, seen = [], 0
    try:
        with torch.no_grad():
            for batch in loader:
                model(batch.pos, batch.batch)
                labels.append(batch.y)
                seen += batch.y.numel()
                if seen >= limit:
                    break
    finally:
        hook.remove()
    return torch.cat(captured)[:limit], torch.cat(labels)[:limit]


def linear_probe(train_x, train_y, val_x, val_y, classes: int) -> float:
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, val_x = (train_x - mean) / std, (val_x - mean) / std
    weight = torch.zeros(train_x.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=300)

    def closure():
        optimiser.zero_grad()
        loss = F.cross_entropy(train_x @ weight + bias, train_y) + 1e-3 * weight.square().sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return float(((val_x @ weight + bias).argmax(1) == val_y).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="registry names, optionally with builder arguments: name:key=value,...")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--train-clouds", type=int, default=1000, help="training clouds the probe is fitted on")
    parser.add_argument("--seed", type=int, default=1, help="seed of the networks' initial weights")
    parser.add_argument("--out", default=None, help="also write the table to this markdown file")
    args = parser.parse_args()
    lines = []

    def emit(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    data = ModelNet10DataModule(root=args.data_root, cache_dir=args.cache_dir, batch_size=50, augment=False,
                                val_fraction=0.1)
    data.prepare_data()
    data.setup("fit")
    # fixed training clouds too: sample them like validation clouds, in a seeded shuffled order
    emit("| network | builder arguments | random-feature linear probe, validation accuracy [%] | seconds |")
    emit("|---|---|---|---|")
    for spec in args.models:
        name, kwargs = parse_model(spec)
        torch.manual_seed(args.seed)
        model = create_model(name, num_points=data.num_points, **kwargs).train()
        start = time.perf_counter()
        torch.manual_seed(0)
        train_x, train_y = head_inputs(model, data.train_dataloader(), args.train_clouds)
        # shuffled: BatchNorm in training mode normalises each batch, and the validation loader's file
        # order would make every batch one class, normalising the class signal away
        val_loader = DataLoader(data.val_set, batch_size=50, shuffle=True, generator=torch.Generator().manual_seed(0))
        val_x, val_y = head_inputs(model, val_loader, 10**9)
        accuracy = linear_probe(train_x, train_y, val_x, val_y, data.num_classes)
        arguments = ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "defaults"
        emit(f"| {name} | {arguments} | {100 * accuracy:.1f} | {time.perf_counter() - start:.0f} |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

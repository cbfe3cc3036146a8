"""The plans of ``mgic-geo experiment results`` (:mod:`mgic_geo.experiments.results`), as data: each
run names its network, its config and the overrides that make its recipe, the epochs its schedule is
planned over and its wall-clock budget."""
from __future__ import annotations

from dataclasses import dataclass, field

ADAM = ("--model.init_args.optimizer", "adam", "--model.init_args.weight_decay", "0",
        "--model.init_args.min_lr", "1e-5")


@dataclass(frozen=True)
class Run:
    """One ``mgic-geo fit`` of a plan: ``name`` (its folder), the registry ``model``, the ``config``
    and the command-line ``overrides`` that make its recipe, the ``epochs`` the schedule is planned
    over, the wall-clock ``budget_minutes``, and a ``recipe`` line for the report."""

    name: str
    model: str
    config: str
    recipe: str
    epochs: int
    budget_minutes: float
    overrides: tuple[str, ...] = field(default=())
    note: str = ""


MODELNET_BUDGET = 15.0
# Networks that may not finish an epoch inside the budget validate every quarter epoch, so the budget
# still ends with a validation figure (the validation time counts against their budget).
QUARTERS = ("--trainer.val_check_interval", "0.25")
# Epochs planned per model so the cosine schedule can finish inside the budget on one CPU thread
# (from each model's epoch time on the 2-core machine); a run cut by the budget says so.
PLANS: dict[str, tuple[Run, ...]] = {
    "modelnet10": (
        Run("mgic_diffgcn_cpu30", "mgic_diffgcn", "experiments/modelnet10/mgic_diffgcn_cpu.yaml",
            "the CPU recipe (mgic_diffgcn_cpu.yaml): Adam 3e-3, cosine, label smoothing 0.2, augmentation",
            epochs=7, budget_minutes=30.0, note="the 30-minute CPU recipe"),
        Run("mgic_diffgcn_cpu30_fast", "mgic_diffgcn", "experiments/modelnet10/mgic_diffgcn_cpu.yaml",
            "the CPU recipe (mgic_diffgcn_cpu.yaml), as mgic_diffgcn_cpu30", epochs=7, budget_minutes=30.0,
            note="the same recipe after issue 14's speed-ups (shared sparse diffGCN operators, grid kNN); "
                 "run with --threads 2 on the otherwise idle machine"),
        Run("mgic_diffgcn", "mgic_diffgcn", "experiments/modelnet10/mgic_diffgcn_cpu.yaml",
            "Adam 3e-3, cosine", epochs=3, budget_minutes=MODELNET_BUDGET),
        Run("mgic_diffgcn_correction_zero", "mgic_diffgcn", "experiments/modelnet10/mgic_diffgcn_cpu.yaml",
            "Adam 3e-3, cosine; coarse-grid corrections start at scale 0 (the default)", epochs=3, budget_minutes=40.0,
            overrides=("--model.init_args.model_kwargs",
                       "{k: 10, mgic: {group_size: 8, coarsest: 16, zero_init_correction: true}, dropout: 0.5}"),
            note="with mgic_diffgcn_correction_one, run side by side: the measurement behind "
                 "MGICConfig.zero_init_correction's default"),
        Run("mgic_diffgcn_correction_one", "mgic_diffgcn", "experiments/modelnet10/mgic_diffgcn_cpu.yaml",
            "Adam 3e-3, cosine; coarse-grid corrections start at scale 1 (BN's default, the authors' code)", epochs=3,
            budget_minutes=40.0,
            overrides=("--model.init_args.model_kwargs",
                       "{k: 10, mgic: {group_size: 8, coarsest: 16, zero_init_correction: false}, dropout: 0.5}"),
            note="with mgic_diffgcn_correction_zero, run side by side"),
        Run("mgic_diffgcn_derivative", "mgic_diffgcn", "experiments/modelnet10/mgic_diffgcn_cpu.yaml",
            "Adam 3e-3, cosine; operator_scale=derivative (the operator before the fix)", epochs=3,
            budget_minutes=MODELNET_BUDGET,
            overrides=("--model.init_args.model_kwargs",
                       "{k: 10, group_size: 8, coarsest: 16, dropout: 0.5, operator_scale: derivative}"),
            note="the diffGCN operator as it was"),
        Run("mgic_diffgcn_paper_sgd", "mgic_diffgcn", "experiments/modelnet10/mgic_diffgcn.yaml",
            "the paper's (DGCNN's) recipe: SGD 0.1, momentum 0.9, wd 1e-4, cosine", epochs=3,
            budget_minutes=MODELNET_BUDGET),
        Run("diffgcn", "diffgcn", "experiments/modelnet10/diffgcn.yaml", "Adam 3e-3, cosine", epochs=3,
            budget_minutes=MODELNET_BUDGET, overrides=ADAM + ("--model.init_args.lr", "0.003")),
        Run("dgcnn", "dgcnn", "experiments/modelnet10/dgcnn.yaml", "Adam 3e-3, cosine", epochs=1,
            budget_minutes=MODELNET_BUDGET, overrides=ADAM + ("--model.init_args.lr", "0.003") + QUARTERS),
        Run("mgic_dgcnn", "mgic_dgcnn", "experiments/modelnet10/mgic_dgcnn.yaml", "Adam 3e-3, cosine", epochs=1,
            budget_minutes=MODELNET_BUDGET, overrides=ADAM + ("--model.init_args.lr", "0.003") + QUARTERS),
        Run("dgcnn_pyg_example", "dgcnn_pyg_example", "experiments/modelnet10/dgcnn_pyg_example.yaml",
            "Adam 1e-3, cosine (PyG's example uses Adam 1e-3)", epochs=1, budget_minutes=MODELNET_BUDGET,
            overrides=ADAM + ("--model.init_args.lr", "0.001") + QUARTERS),
    ),
    "cifar10": (
        Run("resnet56", "resnet56", "experiments/cifar10/resnet56.yaml", "Adam 1e-3, cosine", epochs=1,
            budget_minutes=10.0, overrides=ADAM + ("--model.init_args.lr", "0.001") + QUARTERS),
        Run("mgic_resnet56", "mgic_resnet56", "experiments/cifar10/mgic_resnet56.yaml", "Adam 1e-3, cosine",
            epochs=1, budget_minutes=10.0, overrides=ADAM + ("--model.init_args.lr", "0.001") + QUARTERS),
        Run("mgic_resnet56_correction_zero", "mgic_resnet56", "experiments/cifar10/mgic_resnet56.yaml",
            "Adam 1e-3, cosine; coarse-grid corrections start at scale 0 (the default)", epochs=1, budget_minutes=15.0,
            overrides=ADAM + ("--model.init_args.lr", "0.001") + QUARTERS
            + ("--model.init_args.model_kwargs", "{mgic: {zero_init_correction: true}}"),
            note="with mgic_resnet56_correction_one, run side by side: the measurement behind "
                 "MGICConfig.zero_init_correction's default"),
        Run("mgic_resnet56_correction_one", "mgic_resnet56", "experiments/cifar10/mgic_resnet56.yaml",
            "Adam 1e-3, cosine; coarse-grid corrections start at scale 1 (BN's default, the authors' code)", epochs=1,
            budget_minutes=15.0,
            overrides=ADAM + ("--model.init_args.lr", "0.001") + QUARTERS
            + ("--model.init_args.model_kwargs", "{mgic: {zero_init_correction: false}}"),
            note="with mgic_resnet56_correction_zero, run side by side"),
    ),
}
ACCURACY = {"modelnet10": ("val/overall_acc", "val/mean_class_acc"), "cifar10": ("val/top1_acc", "val/top5_acc")}

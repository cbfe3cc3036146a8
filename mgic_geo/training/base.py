"""What every task module shares: a registry network built by name, the optimiser and its schedule,
the learning-rate log, and what a checkpoint tells about itself.

The task modules (:class:`~mgic_geo.training.module.PointCloudClassifier`,
:class:`~mgic_geo.training.images.ImageClassifier`, :class:`~mgic_geo.training.images.ImageSegmenter`)
add their loss, metrics and ``test_results.json``.

Schedules (``scheduler=``), each a factor of ``lr`` computed from the epoch (``"poly"``: the step):

- ``"cosine"``: cosine annealing from ``lr`` to ``min_lr`` over ``trainer.max_epochs`` (DGCNN's);
- ``"step"``: ``lr * gamma ** (epoch // step_size)`` (the paper's image recipe: ÷10 every 30 epochs);
- ``"poly"``: ``lr * (1 - step / total_steps) ** power`` per optimiser step (DeepLabv3's, for
  segmentation), ``total_steps`` being Lightning's ``estimated_stepping_batches``;
- ``"none"``: a constant ``lr``.

Schedules are recomputed from ``trainer.max_epochs`` (or the step count) whenever they are read, so a
run resumed with a larger ``--trainer.max_epochs`` stretches the remaining cosine instead of restarting it.
"""
from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn

OPTIMIZERS = ("sgd", "adam")
SCHEDULERS = ("cosine", "step", "poly", "none")


class ConfigurationError(ValueError):
    """A configuration that cannot work (model and data disagree, an unknown name, ...)."""


def _available_models() -> list[str]:
    from mgic_geo.models import list_models

    return list(list_models())


def cosine_factor(epoch: int, epochs: int, lr: float, min_lr: float) -> float:
    """The cosine schedule as a factor of ``lr``: ``lr`` at epoch 0, ``min_lr`` at ``epochs`` and after.

    Equals ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=epochs, eta_min=min_lr)`` inside the run.
    """
    if lr <= 0:
        return 1.0
    t = min(max(epoch, 0), epochs) / max(epochs, 1)
    return (min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))) / lr


def step_factor(epoch: int, step_size: int, gamma: float) -> float:
    """``gamma ** (epoch // step_size)``: ``torch.optim.lr_scheduler.StepLR``'s factor."""
    return gamma ** (max(epoch, 0) // step_size)


def poly_factor(step: int, total_steps: int, power: float) -> float:
    """``(1 - step / total_steps) ** power``, 0 from ``total_steps`` on (DeepLab's "poly" policy)."""
    return max(0.0, 1.0 - min(max(step, 0), total_steps) / max(total_steps, 1)) ** power


def epochs_in_checkpoint(checkpoint: dict[str, Any]) -> int | None:
    """Training epochs finished when ``checkpoint`` was written.

    Lightning counts an epoch as processed before ``on_train_epoch_end`` (where checkpoints are saved)
    and as completed only after it, so the fit loop's ``processed`` counter is the number of finished
    epochs in both epoch-end and train-end checkpoints; ``epoch`` (0-based) is the fallback.
    """
    try:
        progress = checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]
        return int(max(progress["processed"], progress["completed"]))
    except (KeyError, TypeError):
        epoch = checkpoint.get("epoch")
        return None if epoch is None else int(epoch) + 1


def check_recipe(*, model: str, task: str, num_classes: int, optimizer: str, scheduler: str, lr: float,
                 min_lr: float, step_size: int = 1, gamma: float = 0.1, power: float = 0.9) -> None:
    """``ValueError`` naming the argument when a recipe cannot work, or when ``model`` is a network
    of another ``task`` than the module's (:func:`mgic_geo.models.model_task`)."""
    from mgic_geo.models import model_task

    available = _available_models()
    if model not in available:
        raise ValueError(f"unknown model {model!r}; available models: {', '.join(available)}")
    if model_task(model) not in (task, None):
        fitting = [name for name in available if model_task(name) in (task, None)]
        raise ValueError(f"model {model!r} is a network for {model_task(model).replace('_', ' ')}, not "
                         f"{task.replace('_', ' ')}; choose one of: {', '.join(fitting)}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; choose one of: {', '.join(SCHEDULERS)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"`num_classes` must be an integer >= 2, got {num_classes!r}")
    if not lr > 0 or not 0 <= min_lr <= lr:
        raise ValueError(f"need 0 <= min_lr <= lr and lr > 0, got lr={lr!r}, min_lr={min_lr!r}")
    if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size < 1:
        raise ValueError(f"`step_size` must be a positive number of epochs, got {step_size!r}")
    if not 0 < gamma <= 1:
        raise ValueError(f"`gamma` must be in (0, 1], got {gamma!r}")
    if not power > 0:
        raise ValueError(f"`power` must be positive, got {power!r}")


class RegistryTask(L.LightningModule):
    """A LightningModule around ``create_model(hparams.model, num_classes=..., **hparams.model_kwargs)``.

    Subclasses call ``save_hyperparameters()`` with at least ``model``, ``model_kwargs``,
    ``num_classes``, ``optimizer``, ``lr``, ``momentum``, ``weight_decay`` and ``scheduler`` (plus
    ``min_lr``, ``step_size``, ``gamma``, ``power`` for the schedules that use them), then
    :meth:`build_network`.
    """

    net: nn.Module

    def build_network(self) -> None:
        from mgic_geo.models import create_model

        hp = self.hparams
        self.net = create_model(hp.model, num_classes=hp.num_classes, **dict(hp.model_kwargs or {}))
        self.num_classes = hp.num_classes
        self.epochs_trained: int | None = None  # set from the checkpoint a test/validate run loads
        self.checkpoint_global_step: int | None = None

    @property
    def num_parameters(self) -> int:
        """Trainable parameters of the wrapped network (not counting the metrics)."""
        return sum(p.numel() for p in self.net.parameters() if p.requires_grad)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        data_classes = getattr(datamodule, "num_classes", None)
        if data_classes is not None and int(data_classes) != self.num_classes:
            raise ConfigurationError(
                f"the model has num_classes={self.num_classes} but the data has {data_classes} classes; "
                f"set --model.num_classes {data_classes}"
            )

    # -- learning rate --------------------------------------------------------------------------
    def lr_factor(self, index: int) -> float:
        """The schedule's factor of ``lr`` at epoch ``index`` (the step for ``"poly"``)."""
        hp, trainer = self.hparams, self.trainer
        if hp.scheduler == "cosine":
            epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs > 0 else None
            if epochs is None:
                raise ConfigurationError("the cosine schedule needs --trainer.max_epochs (a positive number of epochs)")
            return cosine_factor(index, epochs, hp.lr, hp.min_lr)
        if hp.scheduler == "step":
            return step_factor(index, hp.step_size, hp.gamma)
        if hp.scheduler == "poly":
            total = trainer.estimated_stepping_batches
            if not math.isfinite(total):
                raise ConfigurationError("the poly schedule needs --trainer.max_epochs or --trainer.max_steps")
            return poly_factor(index, int(total), hp.power)
        return 1.0

    def configure_optimizers(self):
        hp = self.hparams
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        else:
            optimizer = torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.scheduler == "none":
            return optimizer
        self.lr_factor(0)  # a schedule that cannot work fails now, not after the first epoch
        # a plain function: LambdaLR leaves functions out of its state_dict, so the schedule is always
        # recomputed from the hyperparameters and the trainer, never restored stale from a checkpoint
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda index: self.lr_factor(index))
        scheduler.mgic_schedule = True
        interval = "step" if hp.scheduler == "poly" else "epoch"
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}

    def on_train_start(self) -> None:
        # A resumed run restores the learning rate its checkpoint ended with, computed for the old
        # max_epochs; recompute it from the schedule (a no-op in a fresh run).
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if getattr(scheduler, "mgic_schedule", False):
                for group, base, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
                    group["lr"] = base * factor(scheduler.last_epoch)

    def on_train_epoch_start(self) -> None:
        if self.trainer.optimizers:
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            self.log("lr", lr, on_step=False, on_epoch=True, sync_dist=True)  # equal on every process

    def _write_results(self, **record) -> None:
        """``test_results.json`` of this test run (:func:`~mgic_geo.training.results.write_test_results`)."""
        from mgic_geo.training.results import write_test_results

        log_dir = self.trainer.log_dir  # a collective under DDP: every process must ask
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            write_test_results(self.trainer, self, log_dir=log_dir, **record)

    # -- checkpoints ----------------------------------------------------------------------------
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.epochs_trained = epochs_in_checkpoint(checkpoint)
        self.checkpoint_global_step = checkpoint.get("global_step")

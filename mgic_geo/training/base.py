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

Faults (:mod:`mgic_geo.training.fault`):

- a NaN or inf training loss (``nonfinite_loss=``): ``"stop"`` raises
  :class:`~mgic_geo.training.fault.NonFiniteLossError` before the weights are touched, naming the epoch,
  the global step and the last good checkpoint; ``"skip"`` leaves that batch out (no backward pass, no
  optimiser step), counts it in the logged metric ``skipped_nonfinite_batches`` and warns at the end;
- a checkpoint whose weights do not fit the network (another model, another width) is refused with a
  :class:`~mgic_geo.training.fault.CheckpointError` listing the missing, unexpected and mis-shaped keys,
  before any weight is copied; :meth:`RegistryTask.load_from_checkpoint` reads with
  ``torch.load(weights_only=True)`` whatever ``weights_only`` it is given.
"""
from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from mgic_geo.training.fault import (
    CheckpointError,
    NonFiniteLossError,
    is_reading_error,
    last_good_checkpoint,
    reading_error,
    state_dict_mismatch,
)

OPTIMIZERS = ("sgd", "adam")
SCHEDULERS = ("cosine", "step", "poly", "none")
NONFINITE_LOSS = ("stop", "skip")


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
                 min_lr: float, step_size: int = 1, gamma: float = 0.1, power: float = 0.9,
                 nonfinite_loss: str = "stop") -> None:
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
    if nonfinite_loss not in NONFINITE_LOSS:
        raise ValueError(f"unknown nonfinite_loss {nonfinite_loss!r}; choose one of: {', '.join(NONFINITE_LOSS)} "
                         "(what to do with a batch whose training loss is NaN or inf)")


class RegistryTask(L.LightningModule):
    """A LightningModule around ``create_model(hparams.model, num_classes=..., **hparams.model_kwargs)``.

    Subclasses call ``save_hyperparameters()`` with at least ``model``, ``model_kwargs``,
    ``num_classes``, ``optimizer``, ``lr``, ``momentum``, ``weight_decay`` and ``scheduler`` (plus
    ``min_lr``, ``step_size``, ``gamma``, ``power`` for the schedules that use them, and
    ``nonfinite_loss``), then :meth:`build_network`; their ``training_step`` returns
    :meth:`checked_loss` of the loss before logging anything about the batch.
    """

    net: nn.Module
    # Read by Lightning's ThroughputMonitor (which `mgic-geo fit` adds); None: report no FLOP rates.
    flops_per_batch: int | None = None

    def build_network(self) -> None:
        from mgic_geo.models import create_model

        hp = self.hparams
        self.net = create_model(hp.model, num_classes=hp.num_classes, **dict(hp.model_kwargs or {}))
        self.num_classes = hp.num_classes
        self.epochs_trained: int | None = None  # set from the checkpoint a test/validate run loads
        self.checkpoint_global_step: int | None = None
        self.skipped_nonfinite_batches = 0
        self._first_skipped: str | None = None
        self._checkpoint_hparams: dict[str, Any] | None = None

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

    # -- non-finite losses ----------------------------------------------------------------------
    @property
    def nonfinite_loss(self) -> str:
        return self.hparams.get("nonfinite_loss", "stop")  # checkpoints from before the option: "stop"

    def checked_loss(self, loss: torch.Tensor) -> torch.Tensor | None:
        """``loss`` if it is finite; else ``None`` (Lightning then skips backward and the optimiser step)
        under ``nonfinite_loss="skip"``, or :class:`NonFiniteLossError` under ``"stop"``.

        Costs one device synchronisation per step. Under DDP the processes agree (one non-finite loss
        anywhere counts for all), so that none of them waits in a gradient all-reduce the others skip.
        """
        bad = not bool(torch.isfinite(loss.detach()).all())
        if self._trainer is not None and self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return loss
        where = f"epoch {self.current_epoch}, global step {self.global_step}"
        if self.nonfinite_loss == "skip":
            self.skipped_nonfinite_batches += 1
            self._first_skipped = self._first_skipped or where
            return None
        good = last_good_checkpoint(self.trainer) if self._trainer is not None else None
        raise NonFiniteLossError(
            f"non-finite training loss ({loss.detach().float().sum().item()}) at {where}; stopped before updating "
            f"the weights; last good checkpoint: {good or 'none written yet'} (resume it with --ckpt_path, e.g. with a "
            f"lower --model.lr, or pass --model.nonfinite_loss skip to leave such batches out)")

    def on_train_epoch_end(self) -> None:
        if self.nonfinite_loss == "skip":
            self.log("skipped_nonfinite_batches", float(self.skipped_nonfinite_batches), on_step=False, on_epoch=True)

    def on_train_end(self) -> None:
        if self.skipped_nonfinite_batches:
            rank_zero_warn(f"skipped {self.skipped_nonfinite_batches} training batch(es) with a non-finite loss "
                           f"(nonfinite_loss='skip'); the first at {self._first_skipped or 'an earlier run'}")

    def _write_results(self, **record) -> None:
        """``test_results.json`` of this test run (:func:`~mgic_geo.training.results.write_test_results`)."""
        from mgic_geo.training.results import write_test_results

        log_dir = self.trainer.log_dir  # a collective under DDP: every process must ask
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            write_test_results(self.trainer, self, log_dir=log_dir, **record)

    # -- checkpoints ----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["skipped_nonfinite_batches"] = self.skipped_nonfinite_batches

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.epochs_trained = epochs_in_checkpoint(checkpoint)
        self.checkpoint_global_step = checkpoint.get("global_step")
        self.skipped_nonfinite_batches = int(checkpoint.get("skipped_nonfinite_batches", 0))
        self._checkpoint_hparams = checkpoint.get("hyper_parameters")

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict``, but with ``strict`` a checkpoint that does not fit is refused
        before any weight is copied (torch copies the fitting ones, then raises), with a
        :class:`CheckpointError` naming the checkpoint, the missing, unexpected and mis-shaped keys."""
        if strict:
            problem = state_dict_mismatch(self.state_dict(), state_dict)
            if problem:
                path = self._trainer.ckpt_path if self._trainer is not None else None
                raise CheckpointError(f"{path + ': ' if path else ''}the checkpoint does not fit {self._described()}"
                                      f"{self._checkpoint_origin()}: {problem}")
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _described(self) -> str:
        hp = self.hparams
        return f"{type(self).__name__}(model={hp.model!r}, model_kwargs={dict(hp.model_kwargs or {})!r})"

    def _checkpoint_origin(self) -> str:
        hp = self._checkpoint_hparams or {}
        if "model" not in hp:
            return ""
        return f" (it was saved from model={hp['model']!r}, model_kwargs={dict(hp.get('model_kwargs') or {})!r})"

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None, strict=None,
                             weights_only=None, **kwargs):
        """Lightning's ``load_from_checkpoint`` with ``torch.load(weights_only=True)`` whatever
        ``weights_only`` says: a file holding any other pickled object (which unpickling would call)
        is refused. A bad file or weights that do not fit raise :class:`CheckpointError` naming the file."""
        try:
            return super().load_from_checkpoint(checkpoint_path, map_location=map_location, hparams_file=hparams_file,
                                                strict=strict, weights_only=True, **kwargs)
        except CheckpointError as error:
            message = str(error)
            raise CheckpointError(message if message.startswith(str(checkpoint_path)) else
                                  f"{checkpoint_path}: {message}") from None
        except Exception as error:
            if is_reading_error(error):
                raise reading_error(checkpoint_path, error) from None
            raise

"""What every task module shares: a registry network built by name, the optimiser and its schedule,
the learning-rate log, and what a checkpoint tells about itself.

The task modules (:class:`~mgic_geo.training.module.PointCloudClassifier`,
:class:`~mgic_geo.training.images.ImageClassifier`, :class:`~mgic_geo.training.images.ImageSegmenter`)
add their loss, metrics and ``test_results.json``.

Schedules (``scheduler=``), torch's schedulers stepped per epoch (``"poly"``: per optimiser step):

- ``"cosine"``: ``CosineAnnealingLR`` from ``lr`` to ``min_lr`` over ``trainer.max_epochs`` (DGCNN's):
  ``min_lr + (lr - min_lr) * (1 + cos(pi * epoch / max_epochs)) / 2``;
- ``"step"``: ``StepLR``, ``lr * gamma ** (epoch // step_size)`` (the paper's image recipe: ÷10 every 30 epochs);
- ``"poly"``: ``PolynomialLR``, ``lr * (1 - step / total_steps) ** power`` per optimiser step (DeepLabv3's,
  for segmentation), ``total_steps`` being Lightning's ``estimated_stepping_batches``;
- ``"none"``: a constant ``lr``.

A resumed run restores its scheduler from the checkpoint, then gets the settings of the run's own
``trainer.max_epochs`` (or step count) and the learning rate they give at the restored epoch (or step),
so a run resumed with a larger ``--trainer.max_epochs`` stretches the remaining cosine instead of
restarting it.

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

import inspect
import math
import os
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, PolynomialLR, StepLR
from torchmetrics import Metric
from torchmetrics.classification import MulticlassConfusionMatrix

from mgic_geo.training.fault import (
    CheckpointError,
    NonFiniteLossError,
    check_checkpoint_hparams,
    check_weights,
    is_reading_error,
    last_good_checkpoint,
    read_checkpoint,
    reading_error,
    state_dict_mismatch,
)
from mgic_geo.training.recipe import (  # noqa: F401  (the recipe's names, re-exported from their earlier home)
    NONFINITE_LOSS,
    OPTIMIZERS,
    SCHEDULERS,
    ConfigurationError,
    check_recipe,
    epochs_in_checkpoint,
)

class RegistryTask(L.LightningModule):
    """A LightningModule around ``create_model(hparams.model, num_classes=..., **hparams.model_kwargs)``.

    Subclasses call ``save_hyperparameters()`` with at least ``model``, ``model_kwargs``,
    ``num_classes``, ``optimizer``, ``lr``, ``momentum``, ``weight_decay`` and ``scheduler`` (plus
    ``min_lr``, ``step_size``, ``gamma``, ``power`` for the schedules that use them, and
    ``nonfinite_loss``), then :meth:`build_network`; they define ``_step`` and name their metrics
    (:attr:`train_metric`, :meth:`validation_metrics`, :meth:`test_metrics`, and a ``test_count``
    ``SumMetric``), which the steps here update and log. :meth:`training_step` returns
    :meth:`checked_loss` of the loss before logging anything about the batch.
    """

    net: nn.Module
    #: ``(attribute, logged name)`` of the metric :meth:`training_step` updates and logs each epoch,
    #: e.g. ``("train_oa", "train/overall_acc")``; ``None``: the loss only
    train_metric: tuple[str, str] | None = None
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

    # -- learning rate ----------------------------------------------------------------------------
    def schedule(self) -> tuple[type[LRScheduler], dict[str, Any]]:
        """The torch scheduler of ``hparams.scheduler`` (not ``"none"``) and its settings, from the
        hyperparameters and the trainer (``max_epochs`` for ``"cosine"``, the step count for ``"poly"``)."""
        hp, trainer = self.hparams, self.trainer
        if hp.scheduler == "cosine":
            epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs > 0 else None
            if epochs is None:
                raise ConfigurationError("the cosine schedule needs --trainer.max_epochs (a positive number of epochs)")
            return CosineAnnealingLR, {"T_max": epochs, "eta_min": hp.min_lr}
        if hp.scheduler == "step":
            return StepLR, {"step_size": hp.step_size, "gamma": hp.gamma}
        total = trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ConfigurationError("the poly schedule needs --trainer.max_epochs or --trainer.max_steps")
        return PolynomialLR, {"total_iters": int(total), "power": hp.power}

    def configure_optimizers(self):
        hp = self.hparams
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        else:
            optimizer = torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.scheduler == "none":
            return optimizer
        kind, settings = self.schedule()  # a schedule that cannot work fails now, not after the first epoch
        scheduler = kind(optimizer, **settings)
        scheduler.mgic_schedule = True
        interval = "step" if hp.scheduler == "poly" else "epoch"
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}

    def on_train_start(self) -> None:
        # A resumed run restores the scheduler and learning rate its checkpoint ended with, set up for the
        # old max_epochs (or step count): give the scheduler this run's settings and set the learning rate
        # they give at the restored epoch (a no-op in a fresh run). The closed form is the one torch's
        # schedulers use for step(epoch); their chained updates go on from it.
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if getattr(scheduler, "mgic_schedule", False):
                vars(scheduler).update(self.schedule()[1])
                rates = scheduler._get_closed_form_lr()
                for group, lr in zip(scheduler.optimizer.param_groups, rates):
                    group["lr"] = lr
                scheduler._last_lr = list(rates)

    def on_train_epoch_start(self) -> None:
        if self.trainer.optimizers:
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            self.log("lr", lr, on_step=False, on_epoch=True, sync_dist=True)  # equal on every process

    # -- steps ----------------------------------------------------------------------------------
    def _step(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """``(loss, detached output for the metrics, target, batch size)`` of one batch."""
        raise NotImplementedError

    def validation_metrics(self) -> dict[str, Metric]:
        """The metrics :meth:`validation_step` updates, by logged name (the first one is shown in the
        progress bar)."""
        return {}

    def test_metrics(self) -> list[Metric]:
        """The metrics :meth:`test_step` updates; reset by :meth:`reset_test_metrics`."""
        return []

    def training_step(self, batch, batch_idx: int) -> torch.Tensor | None:
        loss, output, target, size = self._step(batch)
        if self.checked_loss(loss) is None:
            return None
        metric = getattr(self, self.train_metric[0]) if self.train_metric else None
        if metric is not None:
            metric(output, target)
        # not synchronised over DDP processes every step: the epoch value is this process's mean
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        if metric is not None:
            self.log(self.train_metric[1], metric, on_step=False, on_epoch=True, batch_size=size)
        return loss

    def _observe(self, stage: str, output: torch.Tensor, target: torch.Tensor) -> None:
        """Called with each validation (``stage="val"``) and test (``"test"``) batch's output and target,
        for what a subclass counts beyond its metrics."""

    def validation_step(self, batch, batch_idx: int) -> None:
        """Update and log the :meth:`validation_metrics` and the loss."""
        loss, output, target, size = self._step(batch)
        metrics = self.validation_metrics()
        for metric in metrics.values():
            metric(output, target)
        self._observe("val", output, target)
        self.log("val/loss", loss, on_epoch=True, batch_size=size, sync_dist=True)
        for index, (name, metric) in enumerate(metrics.items()):
            self.log(name, metric, on_epoch=True, prog_bar=index == 0, batch_size=size)

    def test_step(self, batch, batch_idx: int) -> None:
        """Update the :meth:`test_metrics` and ``test_count`` and log the loss."""
        loss, output, target, size = self._step(batch)
        for metric in self.test_metrics():
            metric.update(output, target)
        self._observe("test", output, target)
        self.test_count.update(torch.tensor(float(size), device=output.device))
        self.log("test/loss", loss, on_epoch=True, batch_size=size, sync_dist=True)

    def reset_test_metrics(self) -> None:
        """Reset the :meth:`test_metrics` and ``test_count`` (after they were computed)."""
        for metric in self.test_metrics() + [self.test_count]:
            metric.reset()

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
        # whatever read the file (a user's CheckpointIO too): weights holding NaN or inf are never loaded
        path = self._trainer.ckpt_path if self._trainer is not None else None
        check_weights(path or "the checkpoint", checkpoint.get("state_dict") or {})
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
        is refused. A bad file, weights holding NaN or inf, hyperparameters (with ``kwargs`` over them)
        asking for more classes than :data:`~mgic_geo.state_checks.MAX_NUM_CLASSES` or for a network
        the weights do not fit (checked on the ``meta`` device, before the module is built), and weights
        that do not fit raise :class:`CheckpointError` naming the file."""
        if isinstance(checkpoint_path, (str, os.PathLike)):
            checkpoint = read_checkpoint(checkpoint_path, map_location="cpu")  # unreadable, not plain data, NaN
            saved = checkpoint.get("hyper_parameters")
            saved = dict(saved) if isinstance(saved, dict) else {}
            if hparams_file is None:  # the arguments the module would be built with
                defaults = {name: parameter.default for name, parameter in
                            inspect.signature(cls.__init__).parameters.items()
                            if parameter.default is not inspect.Parameter.empty}
                hparams = {**defaults, **saved, **kwargs}
                model_kwargs = hparams.get("model_kwargs") or {}
                model_kwargs = dict(model_kwargs) if isinstance(model_kwargs, dict) else model_kwargs
                origin = "" if "model" not in saved else (
                    f" (it was saved from model={saved['model']!r}, model_kwargs="
                    f"{dict(saved.get('model_kwargs') or {})!r})")
                check_checkpoint_hparams(
                    checkpoint_path, hparams, checkpoint["state_dict"], origin=origin, strict=strict is not False,
                    described=f"{cls.__name__}(model={hparams.get('model')!r}, model_kwargs={model_kwargs!r})")
            del checkpoint
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


class ClassifierTask(RegistryTask):
    """A :class:`RegistryTask` that classifies whole samples, with the confusion matrices of its latest
    validation epoch and test run.

    After each validation epoch (not the sanity check) and each test run, ``last_confusion["val"]``
    and ``last_confusion["test"]`` hold its confusion matrix: int64 ``[C, C]`` counts, rows the true
    classes, columns the predictions, summed over DDP processes (torchmetrics'
    ``MulticlassConfusionMatrix``); :class:`~mgic_geo.training.plots.TrainingPlots` draws them.
    Subclasses call :meth:`track_confusion` in ``__init__`` and take :meth:`test_confusion_matrix` at
    the end of a test run.
    """

    def _observe(self, stage: str, output: torch.Tensor, target: torch.Tensor) -> None:
        getattr(self, f"{stage}_confusion").update(output, target)

    def track_confusion(self, num_classes: int) -> None:
        """Create ``val_confusion``, ``test_confusion`` and ``last_confusion``."""
        # their states are not saved in checkpoints
        self.val_confusion = MulticlassConfusionMatrix(num_classes)
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        self.last_confusion: dict[str, torch.Tensor] = {}

    def on_validation_epoch_end(self) -> None:
        # compute() sums the counts over all DDP processes (every process must call it); the sanity
        # check's batches are counted nowhere
        matrix = self.val_confusion.compute().cpu()
        self.val_confusion.reset()
        if not self.trainer.sanity_checking:
            self.last_confusion["val"] = matrix

    def test_confusion_matrix(self) -> None:
        """Keep the test run's matrix in ``last_confusion["test"]`` and reset the counts (every DDP
        process must call it)."""
        self.last_confusion["test"] = self.test_confusion.compute().cpu()
        self.test_confusion.reset()

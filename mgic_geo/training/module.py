"""``PointCloudClassifier``: a LightningModule around any point-cloud model of the registry.

The model is named, not passed: ``PointCloudClassifier(model="mgic_diffgcn", model_kwargs={...})``
builds it through :func:`mgic_geo.models.create_model`, so a checkpoint's hyperparameters are enough
to rebuild it (``PointCloudClassifier.load_from_checkpoint(path)``).

The optimiser recipe defaults to DGCNN's (Wang et al. 2019, the paper's [53], which §5.4 follows):
SGD, lr 0.1, momentum 0.9, weight decay 1e-4, cosine annealing from 0.1 to 1e-3 over the run's
epochs (``trainer.max_epochs``), cross-entropy with label smoothing 0.2.
"""
from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import SumMetric
from torchmetrics.classification import MulticlassAccuracy

from mgic_geo.training.results import write_test_results

OPTIMIZERS = ("sgd", "adam")


class ConfigurationError(ValueError):
    """A configuration that cannot work (model and data disagree, an unknown name, ...)."""


def _available_models() -> list[str]:
    from mgic_geo.models import list_models

    return list(list_models())


def cosine_factor(epoch: int, epochs: int, lr: float, min_lr: float) -> float:
    """The cosine schedule as a factor of ``lr``: ``lr`` at epoch 0, ``min_lr`` at ``epochs`` and after.

    Equals ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=epochs, eta_min=min_lr)`` inside the run;
    unlike it, the schedule is not stored in a checkpoint, so resuming with a larger
    ``--trainer.max_epochs`` stretches the remaining schedule instead of restarting the cosine.
    """
    if lr <= 0:
        return 1.0
    t = min(max(epoch, 0), epochs) / max(epochs, 1)
    return (min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))) / lr


class PointCloudClassifier(L.LightningModule):
    """Classifies point clouds with the registry model ``model``.

    Args:
        model: a name of :func:`mgic_geo.models.list_models` (``dgcnn``, ``diffgcn``, ``mgic_diffgcn``,
            ``mgic_dgcnn``, ``dgcnn_pyg_example``).
        model_kwargs: extra keyword arguments of ``create_model`` (widths, ``k``, group sizes, ...).
        num_classes: classes of the data set (10 for ModelNet-10); must match the data module's.
        optimizer: ``"sgd"`` (DGCNN's recipe) or ``"adam"``.
        lr: initial learning rate (DGCNN: 0.1 with SGD; 1e-3 is the usual choice with Adam).
        min_lr: the cosine schedule's final learning rate (DGCNN: 1e-3).
        momentum: SGD momentum (ignored by Adam).
        weight_decay: L2 weight decay of the optimiser (DGCNN: 1e-4, on all parameters).
        label_smoothing: DGCNN's definition (its ``cal_loss``): the target puts ``1 - label_smoothing``
            on the true class and ``label_smoothing / (num_classes - 1)`` on each other class. That is
            ``torch.nn.functional.cross_entropy(label_smoothing=label_smoothing * C / (C - 1))``.
        scheduler: ``"cosine"`` (per epoch, over ``trainer.max_epochs``) or ``"none"``.
    """

    def __init__(
        self,
        model: str = "mgic_diffgcn",
        model_kwargs: dict[str, Any] | None = None,
        num_classes: int = 10,
        optimizer: str = "sgd",
        lr: float = 0.1,
        min_lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        label_smoothing: float = 0.2,
        scheduler: str = "cosine",
    ) -> None:
        super().__init__()
        available = _available_models()
        if model not in available:
            raise ValueError(f"unknown model {model!r}; available models: {', '.join(available)}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
        if scheduler not in ("cosine", "none"):
            raise ValueError(f"unknown scheduler {scheduler!r}; choose one of: cosine, none")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"`num_classes` must be an integer >= 2, got {num_classes!r}")
        if not 0.0 <= label_smoothing <= (num_classes - 1) / num_classes:
            raise ValueError(f"`label_smoothing` must be in [0, {(num_classes - 1) / num_classes:g}] (the uniform "
                             f"target) for {num_classes} classes, got {label_smoothing!r}")
        if lr <= 0 or min_lr < 0 or min_lr > lr:
            raise ValueError(f"need 0 <= min_lr <= lr and lr > 0, got lr={lr!r}, min_lr={min_lr!r}")
        self.save_hyperparameters()
        from mgic_geo.models import create_model

        self.net = create_model(model, num_classes=num_classes, **dict(model_kwargs or {}))
        self.num_classes = num_classes
        # torch's smoothing spreads eps over all C classes (the true one included); DGCNN's over the others.
        self._torch_smoothing = label_smoothing * num_classes / (num_classes - 1)
        self.train_oa = MulticlassAccuracy(num_classes, average="micro")
        self.val_oa = MulticlassAccuracy(num_classes, average="micro")
        self.val_macc = MulticlassAccuracy(num_classes, average="macro")
        self.test_oa = MulticlassAccuracy(num_classes, average="micro")
        self.test_macc = MulticlassAccuracy(num_classes, average="macro")
        self.test_per_class = MulticlassAccuracy(num_classes, average=None)
        self.test_count = SumMetric()
        self.epochs_trained: int | None = None  # set from the checkpoint a test/validate run loads
        self.checkpoint_global_step: int | None = None

    @property
    def num_parameters(self) -> int:
        """Trainable parameters of the wrapped network (not counting the metrics)."""
        return sum(p.numel() for p in self.net.parameters() if p.requires_grad)

    def forward(self, pos: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        return self.net(pos, batch)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        data_classes = getattr(datamodule, "num_classes", None)
        if data_classes is not None and int(data_classes) != self.num_classes:
            raise ConfigurationError(
                f"the model has num_classes={self.num_classes} but the data has {data_classes} classes; "
                f"set --model.num_classes {data_classes}"
            )
        model_points = (self.hparams.model_kwargs or {}).get("num_points")
        data_points = getattr(datamodule, "num_points", None)
        if model_points is not None and data_points is not None and int(model_points) != int(data_points):
            raise ConfigurationError(
                f"model_kwargs.num_points={model_points} but the data has clouds of {data_points} points; "
                "give both the same value (or drop model_kwargs.num_points)"
            )

    # -- steps ----------------------------------------------------------------------------------
    def _step(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        logits = self(batch.pos, batch.batch)
        target = batch.y.view(-1)
        loss = F.cross_entropy(logits.float(), target, label_smoothing=self._torch_smoothing)
        return loss, logits.detach(), target, int(batch.num_graphs)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, logits, target, size = self._step(batch)
        self.train_oa(logits, target)
        # not synchronised over DDP processes every step: the epoch value is this process's mean
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        self.log("train/overall_acc", self.train_oa, on_step=False, on_epoch=True, batch_size=size)
        return loss

    def on_train_start(self) -> None:
        # A resumed run restores the learning rate its checkpoint ended with, computed for the old
        # max_epochs; recompute it from the schedule (a no-op in a fresh run).
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if getattr(scheduler, "mgic_cosine", False):
                for group, base, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
                    group["lr"] = base * factor(scheduler.last_epoch)

    def on_train_epoch_start(self) -> None:
        if self.trainer.optimizers:
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            self.log("lr", lr, on_step=False, on_epoch=True, sync_dist=True)  # equal on every process

    def validation_step(self, batch, batch_idx: int) -> None:
        loss, logits, target, size = self._step(batch)
        self.val_oa(logits, target)
        self.val_macc(logits, target)
        self.log("val/loss", loss, on_epoch=True, batch_size=size, sync_dist=True)
        self.log("val/overall_acc", self.val_oa, on_epoch=True, prog_bar=True, batch_size=size)
        self.log("val/mean_class_acc", self.val_macc, on_epoch=True, batch_size=size)

    def test_step(self, batch, batch_idx: int) -> None:
        loss, logits, target, size = self._step(batch)
        self.test_oa.update(logits, target)
        self.test_macc.update(logits, target)
        self.test_per_class.update(logits, target)
        self.test_count.update(torch.tensor(float(size), device=logits.device))
        self.log("test/loss", loss, on_epoch=True, batch_size=size, sync_dist=True)

    def on_test_epoch_end(self) -> None:
        # compute() synchronises the metric states over all DDP ranks (every rank must call it)
        overall, mean_class = self.test_oa.compute(), self.test_macc.compute()
        per_class = self.test_per_class.compute()
        samples = int(self.test_count.compute())
        self.log("test/overall_acc", overall, sync_dist=True)  # equal on every process already
        self.log("test/mean_class_acc", mean_class, sync_dist=True)
        self.test_oa.reset()
        self.test_macc.reset()
        self.test_per_class.reset()
        self.test_count.reset()
        log_dir = self.trainer.log_dir  # a collective under DDP: every process must ask
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            write_test_results(
                self.trainer, self, log_dir=log_dir,
                overall_accuracy=float(overall), mean_class_accuracy=float(mean_class),
                per_class_accuracy=[float(a) for a in per_class.tolist()], num_test_samples=samples,
            )

    # -- checkpoints ----------------------------------------------------------------------------
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.epochs_trained = epochs_in_checkpoint(checkpoint)
        self.checkpoint_global_step = checkpoint.get("global_step")

    # -- optimisation ---------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        else:
            optimizer = torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.scheduler == "none":
            return optimizer
        trainer = self.trainer
        epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs > 0 else None
        if epochs is None:
            raise ValueError("the cosine schedule needs --trainer.max_epochs (a positive number of epochs)")

        def factor(epoch: int) -> float:  # reads max_epochs now, so a resume with more epochs stretches it
            total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else epochs
            return cosine_factor(epoch, total, hp.lr, hp.min_lr)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        scheduler.mgic_cosine = True
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


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

"""``PointCloudClassifier``: a LightningModule around any point-cloud model of the registry.

The model is named, not passed: ``PointCloudClassifier(model="mgic_diffgcn", model_kwargs={...})``
builds it through :func:`mgic_geo.models.create_model`, so a checkpoint's hyperparameters are enough
to rebuild it (``PointCloudClassifier.load_from_checkpoint(path)``).

The optimiser recipe defaults to DGCNN's (Wang et al. 2019, the paper's [53], which §5.4 follows):
SGD, lr 0.1, momentum 0.9, weight decay 1e-4, cosine annealing from 0.1 to 1e-3 over the run's
epochs (``trainer.max_epochs``), cross-entropy with label smoothing 0.2.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import SumMetric
from torchmetrics.classification import MulticlassAccuracy

from mgic_geo.training.base import (  # noqa: F401  (re-exported: their home before base.py existed)
    OPTIMIZERS,
    ClassifierTask,
    ConfigurationError,
    check_recipe,
    epochs_in_checkpoint,
)


class PointCloudClassifier(ClassifierTask):
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
        nonfinite_loss: on a NaN or inf training loss, ``"stop"`` the run (naming the step and the last
            good checkpoint) or ``"skip"`` the batch (:meth:`~mgic_geo.training.base.RegistryTask.checked_loss`).

    The confusion matrices of the latest validation epoch and test run are in ``last_confusion``
    (:class:`~mgic_geo.training.base.ClassifierTask`).
    """

    train_metric = ("train_oa", "train/overall_acc")

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
        nonfinite_loss: str = "stop",
    ) -> None:
        super().__init__()
        if scheduler not in ("cosine", "none"):
            raise ValueError(f"unknown scheduler {scheduler!r}; choose one of: cosine, none")
        check_recipe(model=model, task="point_cloud_classification", num_classes=num_classes, optimizer=optimizer,
                     scheduler=scheduler, lr=lr, min_lr=min_lr, nonfinite_loss=nonfinite_loss)
        if not 0.0 <= label_smoothing <= (num_classes - 1) / num_classes:
            raise ValueError(f"`label_smoothing` must be in [0, {(num_classes - 1) / num_classes:g}] (the uniform "
                             f"target) for {num_classes} classes, got {label_smoothing!r}")
        self.save_hyperparameters()
        self.build_network()
        # torch's smoothing spreads eps over all C classes (the true one included); DGCNN's over the others.
        self._torch_smoothing = label_smoothing * num_classes / (num_classes - 1)
        self.train_oa = MulticlassAccuracy(num_classes, average="micro")
        self.val_oa = MulticlassAccuracy(num_classes, average="micro")
        self.val_macc = MulticlassAccuracy(num_classes, average="macro")
        self.test_oa = MulticlassAccuracy(num_classes, average="micro")
        self.test_macc = MulticlassAccuracy(num_classes, average="macro")
        self.test_per_class = MulticlassAccuracy(num_classes, average=None)
        self.test_count = SumMetric()
        self.track_confusion(num_classes)

    def forward(self, pos: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        return self.net(pos, batch)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
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

    def validation_metrics(self) -> dict:
        return {"val/overall_acc": self.val_oa, "val/mean_class_acc": self.val_macc}

    def test_metrics(self) -> list:
        return [self.test_oa, self.test_macc, self.test_per_class]

    def on_test_epoch_end(self) -> None:
        # compute() synchronises the metric states over all DDP ranks (every rank must call it)
        overall, mean_class = self.test_oa.compute(), self.test_macc.compute()
        per_class = self.test_per_class.compute()
        samples = int(self.test_count.compute())
        self.test_confusion_matrix()
        self.log("test/overall_acc", overall, sync_dist=True)  # equal on every process already
        self.log("test/mean_class_acc", mean_class, sync_dist=True)
        self.reset_test_metrics()
        self._write_results(metrics={"overall_accuracy": float(overall), "mean_class_accuracy": float(mean_class)},
                            per_class=[float(a) for a in per_class.tolist()], num_test_samples=samples)

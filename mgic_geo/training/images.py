"""Image tasks for Lightning: :class:`ImageClassifier` (CIFAR-10, ImageNet; Tables 2, 3, 4, 7, 8) and
:class:`ImageSegmenter` (LR-ASPP; Table 5), around any image model of the registry.

As with :class:`~mgic_geo.training.module.PointCloudClassifier`, the network is named, not passed, so a
checkpoint's hyperparameters rebuild it. The defaults are the paper's image recipe (§5.2): SGD with
momentum 0.9, weight decay 1e-4, cross-entropy, the learning rate divided by 10 every 30 epochs.

On CUDA the network and each batch are put in ``channels_last`` memory format (``channels_last=None``,
the default; ``True``/``False`` force it), which is what cuDNN's fastest convolution kernels use under
mixed precision; ``mgic-geo fit`` picks bf16 or fp16 AMP on CUDA when the config leaves
``trainer.precision`` unset (:mod:`mgic_geo.training.cli`).

Metrics are torchmetrics', taken at the last epoch (the validation loader is the test split, monitored
only): top-1 and top-5 accuracy (top-5 needs more than 5 classes), mean IoU over classes with
``ignore_index`` pixels left out (classes absent from both predictions and masks count
for nothing; their per-class IoU reads 0), and pixel accuracy.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import SumMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassJaccardIndex

from mgic_geo.training.base import RegistryTask, check_recipe


def _check_channels_last(channels_last: Any) -> None:
    if channels_last is not None and not isinstance(channels_last, bool):
        raise ValueError(f"`channels_last` must be true, false or null (on CUDA only), got {channels_last!r}")


class _ImageTask(RegistryTask):
    """channels_last handling shared by the image tasks."""

    _use_channels_last = False

    def setup(self, stage: str) -> None:
        super().setup(stage)
        wanted = self.hparams.channels_last
        if wanted is None:
            wanted = self.trainer.strategy.root_device.type == "cuda"
        self._use_channels_last = bool(wanted)
        if self._use_channels_last:
            self.net.to(memory_format=torch.channels_last)

    def _images(self, images: Tensor) -> Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self._use_channels_last else images


class ImageClassifier(_ImageTask):
    """Classifies images with the registry model ``model`` (``resnet56``, ``mgic_resnet56``,
    ``resnet50``, ``mgic_resnet50``, ``mobilenetv3_large``, ``mgic_mobilenetv3_large``, ...).

    Args:
        model: a name of :func:`mgic_geo.models.list_models` whose network maps ``[B, 3, H, W]``
            images to ``[B, num_classes]`` logits.
        model_kwargs: extra keyword arguments of ``create_model`` (``group_size``, ``coarsest``,
            ``width_mult``, ...).
        num_classes: classes of the data (10 for CIFAR-10, 1000 for ImageNet); must match the data's.
        optimizer: ``"sgd"`` or ``"adam"``.
        lr: initial learning rate (paper: 0.001 for CIFAR-10, 0.1 for ImageNet).
        momentum: SGD momentum (paper: 0.9).
        weight_decay: L2 weight decay on all parameters (paper: 1e-4).
        scheduler: ``"step"`` (paper), ``"cosine"``, ``"poly"`` or ``"none"``
            (:mod:`mgic_geo.training.base`).
        step_size: epochs between two learning-rate drops of ``"step"`` (paper: 30).
        gamma: factor of each drop (paper: 0.1).
        min_lr: final learning rate of ``"cosine"``.
        power: exponent of ``"poly"``.
        label_smoothing: torch's ``cross_entropy`` label smoothing (paper: 0).
        channels_last: ``None`` (on CUDA only), ``True`` or ``False``.
        nonfinite_loss: on a NaN or inf training loss, ``"stop"`` the run or ``"skip"`` the batch
            (:meth:`~mgic_geo.training.base.RegistryTask.checked_loss`).

    After each validation epoch (not the sanity check) and each test run, ``last_confusion["val"]``
    and ``last_confusion["test"]`` hold its confusion matrix: int64 ``[C, C]`` counts, rows the true
    classes, columns the predictions, summed over DDP processes (torchmetrics'
    ``MulticlassConfusionMatrix``); :class:`~mgic_geo.training.plots.TrainingPlots` draws them.

    Example::

        >>> from mgic_geo.training import ImageClassifier
        >>> module = ImageClassifier(model="mgic_resnet56", model_kwargs={"group_size": 8, "coarsest": 16})
        >>> module(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        model: str = "mgic_resnet56",
        model_kwargs: dict[str, Any] | None = None,
        num_classes: int = 10,
        optimizer: str = "sgd",
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        scheduler: str = "step",
        step_size: int = 30,
        gamma: float = 0.1,
        min_lr: float = 0.0,
        power: float = 0.9,
        label_smoothing: float = 0.0,
        channels_last: bool | None = None,
        nonfinite_loss: str = "stop",
    ) -> None:
        super().__init__()
        check_recipe(model=model, task="image_classification", num_classes=num_classes, optimizer=optimizer,
                     scheduler=scheduler, lr=lr, min_lr=min_lr, step_size=step_size, gamma=gamma, power=power,
                     nonfinite_loss=nonfinite_loss)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"`label_smoothing` must be in [0, 1), got {label_smoothing!r}")
        _check_channels_last(channels_last)
        self.save_hyperparameters()
        self.build_network()
        self.top_k = 5 if num_classes > 5 else None  # top-5 of 5 classes or fewer is always 1
        self.train_top1 = MulticlassAccuracy(num_classes, average="micro")
        self.val_top1 = MulticlassAccuracy(num_classes, average="micro")
        self.test_top1 = MulticlassAccuracy(num_classes, average="micro")
        self.test_per_class = MulticlassAccuracy(num_classes, average=None)
        if self.top_k:
            self.val_top5 = MulticlassAccuracy(num_classes, top_k=self.top_k, average="micro")
            self.test_top5 = MulticlassAccuracy(num_classes, top_k=self.top_k, average="micro")
        self.test_count = SumMetric()
        # confusion matrices (counts, [true, predicted]) of the latest validation epoch and test run, for
        # mgic_geo.training.plots.TrainingPlots; their states are not saved in checkpoints
        self.val_confusion = MulticlassConfusionMatrix(num_classes)
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        self.last_confusion: dict[str, Tensor] = {}

    def forward(self, images: Tensor) -> Tensor:
        return self.net(self._images(images))

    def _step(self, batch) -> tuple[Tensor, Tensor, Tensor, int]:
        images, target = batch
        logits = self(images)
        loss = F.cross_entropy(logits.float(), target, label_smoothing=self.hparams.label_smoothing)
        return loss, logits.detach(), target, int(target.shape[0])

    def training_step(self, batch, batch_idx: int) -> Tensor | None:
        loss, logits, target, size = self._step(batch)
        if self.checked_loss(loss) is None:
            return None
        self.train_top1(logits, target)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        self.log("train/top1_acc", self.train_top1, on_step=False, on_epoch=True, batch_size=size)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        loss, logits, target, size = self._step(batch)
        self.val_top1(logits, target)
        self.val_confusion.update(logits, target)
        self.log("val/loss", loss, on_epoch=True, batch_size=size, sync_dist=True)
        self.log("val/top1_acc", self.val_top1, on_epoch=True, prog_bar=True, batch_size=size)
        if self.top_k:
            self.val_top5(logits, target)
            self.log("val/top5_acc", self.val_top5, on_epoch=True, batch_size=size)

    def on_validation_epoch_end(self) -> None:
        # compute() sums the counts over all DDP processes (every process must call it); the sanity
        # check's batches are counted nowhere
        matrix = self.val_confusion.compute().cpu()
        self.val_confusion.reset()
        if not self.trainer.sanity_checking:
            self.last_confusion["val"] = matrix

    def test_step(self, batch, batch_idx: int) -> None:
        loss, logits, target, size = self._step(batch)
        self.test_top1.update(logits, target)
        self.test_per_class.update(logits, target)
        self.test_confusion.update(logits, target)
        if self.top_k:
            self.test_top5.update(logits, target)
        self.test_count.update(torch.tensor(float(size), device=logits.device))
        self.log("test/loss", loss, on_epoch=True, batch_size=size, sync_dist=True)

    def on_test_epoch_end(self) -> None:
        # compute() synchronises the metric states over all DDP ranks (every rank must call it)
        top1 = float(self.test_top1.compute())
        top5 = float(self.test_top5.compute()) if self.top_k else None
        per_class = [float(a) for a in self.test_per_class.compute().tolist()]
        samples = int(self.test_count.compute())
        self.last_confusion["test"] = self.test_confusion.compute().cpu()
        self.log("test/top1_acc", top1, sync_dist=True)
        if top5 is not None:
            self.log("test/top5_acc", top5, sync_dist=True)
        metrics = (self.test_top1, self.test_per_class, self.test_count, self.test_confusion)
        for metric in metrics + ((self.test_top5,) if self.top_k else ()):
            metric.reset()
        self._write_results(metrics={"top1_accuracy": top1, "top5_accuracy": top5}, per_class=per_class,
                            num_test_samples=samples)


class ImageSegmenter(_ImageTask):
    """Semantic segmentation with the registry model ``model`` (``lraspp_mgic_mobilenetv3_large``, ...),
    whose network maps ``[B, 3, H, W]`` images to ``[B, num_classes, H, W]`` logits (or torchvision's
    ``{"out": logits}``).

    Args:
        model: a name of :func:`mgic_geo.models.list_models`.
        model_kwargs: extra keyword arguments of ``create_model``.
        num_classes: classes of the masks (19 for Cityscapes); must match the data's.
        ignore_index: mask value left out of the loss and the metrics (255: Cityscapes' "void").
        optimizer, lr, momentum, weight_decay, scheduler, step_size, gamma, min_lr, power: as for
            :class:`ImageClassifier`; the defaults are DeepLabv3's recipe (the paper's [7]): SGD,
            lr 0.007, momentum 0.9, the ``"poly"`` schedule with power 0.9.
        channels_last: ``None`` (on CUDA only), ``True`` or ``False``.
        nonfinite_loss: ``"stop"`` or ``"skip"``, as for :class:`ImageClassifier`.
    """

    def __init__(
        self,
        model: str = "lraspp_mgic_mobilenetv3_large",
        model_kwargs: dict[str, Any] | None = None,
        num_classes: int = 19,
        ignore_index: int = 255,
        optimizer: str = "sgd",
        lr: float = 0.007,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        scheduler: str = "poly",
        step_size: int = 30,
        gamma: float = 0.1,
        min_lr: float = 0.0,
        power: float = 0.9,
        channels_last: bool | None = None,
        nonfinite_loss: str = "stop",
    ) -> None:
        super().__init__()
        check_recipe(model=model, task="semantic_segmentation", num_classes=num_classes, optimizer=optimizer,
                     scheduler=scheduler, lr=lr, min_lr=min_lr, step_size=step_size, gamma=gamma, power=power,
                     nonfinite_loss=nonfinite_loss)
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int) or 0 <= ignore_index < num_classes:
            raise ValueError(f"`ignore_index` must be an integer outside 0..{num_classes - 1} (a mask value that is "
                             f"no class), got {ignore_index!r}")
        _check_channels_last(channels_last)
        self.save_hyperparameters()
        self.build_network()
        self.ignore_index = ignore_index
        metric = {"num_classes": num_classes, "ignore_index": ignore_index}
        self.val_iou = MulticlassJaccardIndex(**metric, average="macro")
        self.test_iou = MulticlassJaccardIndex(**metric, average="macro")
        self.test_per_class = MulticlassJaccardIndex(**metric, average=None)
        self.test_pixel_acc = MulticlassAccuracy(**metric, average="micro")
        self.test_count = SumMetric()

    def forward(self, images: Tensor) -> Tensor:
        out = self.net(self._images(images))
        return out["out"] if isinstance(out, dict) else out

    def _step(self, batch) -> tuple[Tensor, Tensor, Tensor, int]:
        images, masks = batch
        logits = self(images)
        if logits.shape[-2:] != masks.shape[-2:]:
            raise ValueError(f"the network's output is {tuple(logits.shape[-2:])} pixels but the masks are "
                             f"{tuple(masks.shape[-2:])}; its logits must have the input's size")
        loss = F.cross_entropy(logits.float(), masks, ignore_index=self.ignore_index)
        return loss, logits.detach().argmax(dim=1), masks, int(masks.shape[0])

    def training_step(self, batch, batch_idx: int) -> Tensor | None:
        loss, _, _, size = self._step(batch)
        if self.checked_loss(loss) is None:
            return None
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        loss, predicted, masks, size = self._step(batch)
        self.val_iou(predicted, masks)
        self.log("val/loss", loss, on_epoch=True, batch_size=size, sync_dist=True)
        self.log("val/mean_iou", self.val_iou, on_epoch=True, prog_bar=True, batch_size=size)

    def test_step(self, batch, batch_idx: int) -> None:
        loss, predicted, masks, size = self._step(batch)
        for metric in (self.test_iou, self.test_per_class, self.test_pixel_acc):
            metric.update(predicted, masks)
        self.test_count.update(torch.tensor(float(size), device=predicted.device))
        self.log("test/loss", loss, on_epoch=True, batch_size=size, sync_dist=True)

    def on_test_epoch_end(self) -> None:
        mean_iou = float(self.test_iou.compute())
        pixel_accuracy = float(self.test_pixel_acc.compute())
        per_class = [float(a) for a in self.test_per_class.compute().tolist()]
        samples = int(self.test_count.compute())
        self.log("test/mean_iou", mean_iou, sync_dist=True)
        self.log("test/pixel_acc", pixel_accuracy, sync_dist=True)
        for metric in (self.test_iou, self.test_per_class, self.test_pixel_acc, self.test_count):
            metric.reset()
        self._write_results(metrics={"mean_iou": mean_iou, "pixel_accuracy": pixel_accuracy}, per_class=per_class,
                            per_class_key="per_class_iou", num_test_samples=samples)

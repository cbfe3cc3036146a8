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
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from mgic_geo.training.base import ClassifierTask, RegistryTask, check_recipe


class _ImageTask(RegistryTask):
    """The recipe arguments and the ``channels_last`` handling shared by the image tasks.

    Args:
        task (str): the registry task of the network (:func:`mgic_geo.models.model_task`).
        model (str): a name of :func:`mgic_geo.models.list_models`.
        model_kwargs (dict, optional): extra keyword arguments of ``create_model``.
        num_classes (int): classes of the data; must match the data's.
        optimizer (str): ``"sgd"`` or ``"adam"``.
        lr (float): initial learning rate.
        momentum (float): SGD momentum.
        weight_decay (float): L2 weight decay on all parameters.
        scheduler (str): ``"step"``, ``"cosine"``, ``"poly"`` or ``"none"`` (:mod:`mgic_geo.training.base`).
        step_size (int): epochs between two learning-rate drops of ``"step"``.
        gamma (float): factor of each drop of ``"step"``.
        min_lr (float): final learning rate of ``"cosine"``.
        power (float): exponent of ``"poly"``.
        channels_last (bool, optional): ``None`` (on CUDA only), ``True`` or ``False``.
        nonfinite_loss (str): on a NaN or inf training loss, ``"stop"`` the run or ``"skip"`` the batch
            (:meth:`~mgic_geo.training.base.RegistryTask.checked_loss`).
    """

    _use_channels_last = False

    def __init__(self, *, task: str, model: str, model_kwargs: dict[str, Any] | None, num_classes: int,
                 optimizer: str = "sgd", lr: float, momentum: float = 0.9, weight_decay: float = 1e-4, scheduler: str,
                 step_size: int = 30, gamma: float = 0.1, min_lr: float = 0.0, power: float = 0.9,
                 channels_last: bool | None = None, nonfinite_loss: str = "stop") -> None:
        super().__init__()
        check_recipe(model=model, task=task, num_classes=num_classes, optimizer=optimizer, scheduler=scheduler, lr=lr,
                     min_lr=min_lr, step_size=step_size, gamma=gamma, power=power, nonfinite_loss=nonfinite_loss)
        if channels_last is not None and not isinstance(channels_last, bool):
            raise ValueError(f"`channels_last` must be true, false or null (on CUDA only), got {channels_last!r}")
        # the arguments of this constructor and of the subclass's, which passes its own on
        self.save_hyperparameters(ignore="task")
        self.build_network()

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


class ImageClassifier(ClassifierTask, _ImageTask):
    """Classifies images with the registry model ``model`` (``resnet56``, ``mgic_resnet56``,
    ``resnet50``, ``mgic_resnet50``, ``mobilenetv3_large``, ``mgic_mobilenetv3_large``, ...).

    Args:
        model (str): a name of :func:`mgic_geo.models.list_models` whose network maps ``[B, 3, H, W]``
            images to ``[B, num_classes]`` logits.
        model_kwargs (dict, optional): extra keyword arguments of ``create_model`` (``group_size``,
            ``coarsest``, ``width_mult``, ...).
        num_classes (int): classes of the data (10 for CIFAR-10, 1000 for ImageNet); must match the data's.
        lr (float): initial learning rate (paper: 0.001 for CIFAR-10, 0.1 for ImageNet).
        scheduler (str): ``"step"`` (paper), ``"cosine"``, ``"poly"`` or ``"none"``
            (:mod:`mgic_geo.training.base`).
        label_smoothing (float): torch's ``cross_entropy`` label smoothing (paper: 0).
        **kwargs (optional): the rest of the recipe, with the paper's defaults (:class:`_ImageTask`):
            ``optimizer`` (``"sgd"``), ``momentum`` (0.9), ``weight_decay`` (1e-4), ``step_size`` (30
            epochs between two drops of ``"step"``), ``gamma`` (0.1, the factor of each drop),
            ``min_lr`` (0, the end of ``"cosine"``), ``power`` (0.9, of ``"poly"``), ``channels_last``
            (``None``: on CUDA only) and ``nonfinite_loss`` (``"stop"`` the run or ``"skip"`` the batch).

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

    train_metric = ("train_top1", "train/top1_acc")

    def __init__(self, model: str = "mgic_resnet56", model_kwargs: dict[str, Any] | None = None, num_classes: int = 10,
                 lr: float = 0.1, scheduler: str = "step", label_smoothing: float = 0.0, **kwargs) -> None:
        super().__init__(task="image_classification", model=model, model_kwargs=model_kwargs, num_classes=num_classes,
                         lr=lr, scheduler=scheduler, **kwargs)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"`label_smoothing` must be in [0, 1), got {label_smoothing!r}")
        self.top_k = 5 if num_classes > 5 else None  # top-5 of 5 classes or fewer is always 1
        self.train_top1 = MulticlassAccuracy(num_classes, average="micro")
        self.val_top1 = MulticlassAccuracy(num_classes, average="micro")
        self.test_top1 = MulticlassAccuracy(num_classes, average="micro")
        self.test_per_class = MulticlassAccuracy(num_classes, average=None)
        if self.top_k:
            self.val_top5 = MulticlassAccuracy(num_classes, top_k=self.top_k, average="micro")
            self.test_top5 = MulticlassAccuracy(num_classes, top_k=self.top_k, average="micro")
        self.test_count = SumMetric()
        self.track_confusion(num_classes)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(self._images(images))

    def _step(self, batch) -> tuple[Tensor, Tensor, Tensor, int]:
        images, target = batch
        logits = self(images)
        loss = F.cross_entropy(logits.float(), target, label_smoothing=self.hparams.label_smoothing)
        return loss, logits.detach(), target, int(target.shape[0])

    def validation_metrics(self) -> dict:
        return {"val/top1_acc": self.val_top1, **({"val/top5_acc": self.val_top5} if self.top_k else {})}

    def test_metrics(self) -> list:
        return [self.test_top1, self.test_per_class] + ([self.test_top5] if self.top_k else [])

    def on_test_epoch_end(self) -> None:
        # compute() synchronises the metric states over all DDP ranks (every rank must call it)
        top1 = float(self.test_top1.compute())
        top5 = float(self.test_top5.compute()) if self.top_k else None
        per_class = [float(a) for a in self.test_per_class.compute().tolist()]
        samples = int(self.test_count.compute())
        self.test_confusion_matrix()
        self.log("test/top1_acc", top1, sync_dist=True)
        if top5 is not None:
            self.log("test/top5_acc", top5, sync_dist=True)
        self.reset_test_metrics()
        self._write_results(metrics={"top1_accuracy": top1, "top5_accuracy": top5}, per_class=per_class,
                            num_test_samples=samples)


class ImageSegmenter(_ImageTask):
    """Semantic segmentation with the registry model ``model`` (``lraspp_mgic_mobilenetv3_large``, ...),
    whose network maps ``[B, 3, H, W]`` images to ``[B, num_classes, H, W]`` logits (or torchvision's
    ``{"out": logits}``).

    Args:
        model (str): a name of :func:`mgic_geo.models.list_models`.
        model_kwargs (dict, optional): extra keyword arguments of ``create_model``.
        num_classes (int): classes of the masks (19 for Cityscapes); must match the data's.
        ignore_index (int): mask value left out of the loss and the metrics (255: Cityscapes' "void").
        lr (float): initial learning rate (DeepLabv3's recipe, the paper's [7]: 0.007).
        scheduler (str): ``"poly"`` (DeepLabv3's, with ``power`` 0.9), ``"step"``, ``"cosine"`` or ``"none"``.
        **kwargs (optional): the rest of the recipe, as for :class:`ImageClassifier` (``optimizer``
            ``"sgd"``, ``momentum`` 0.9, ``weight_decay``, ``step_size``, ``gamma``, ``min_lr``, ``power``,
            ``channels_last``, ``nonfinite_loss``).
    """

    def __init__(self, model: str = "lraspp_mgic_mobilenetv3_large", model_kwargs: dict[str, Any] | None = None,
                 num_classes: int = 19, ignore_index: int = 255, lr: float = 0.007, scheduler: str = "poly",
                 **kwargs) -> None:
        super().__init__(task="semantic_segmentation", model=model, model_kwargs=model_kwargs, num_classes=num_classes,
                         lr=lr, scheduler=scheduler, **kwargs)
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int) or 0 <= ignore_index < num_classes:
            raise ValueError(f"`ignore_index` must be an integer outside 0..{num_classes - 1} (a mask value that is "
                             f"no class), got {ignore_index!r}")
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

    def validation_metrics(self) -> dict:
        return {"val/mean_iou": self.val_iou}

    def test_metrics(self) -> list:
        return [self.test_iou, self.test_per_class, self.test_pixel_acc]

    def on_test_epoch_end(self) -> None:
        mean_iou = float(self.test_iou.compute())
        pixel_accuracy = float(self.test_pixel_acc.compute())
        per_class = [float(a) for a in self.test_per_class.compute().tolist()]
        samples = int(self.test_count.compute())
        self.log("test/mean_iou", mean_iou, sync_dist=True)
        self.log("test/pixel_acc", pixel_accuracy, sync_dist=True)
        self.reset_test_metrics()
        self._write_results(metrics={"mean_iou": mean_iou, "pixel_accuracy": pixel_accuracy}, per_class=per_class,
                            per_class_key="per_class_iou", num_test_samples=samples)

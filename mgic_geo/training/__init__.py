"""Training and testing the networks of the paper with Lightning: point clouds on ModelNet-10
(§5.4, Table 6), image classification on CIFAR-10 / ImageNet (§5.2, Tables 2-4, 7, 8) and LR-ASPP
segmentation (§5.3, Table 5).

Entry points: ``mgic-geo fit --config experiments/<data>/<model>.yaml`` and
``mgic-geo test --config ... --ckpt_path last`` (:mod:`mgic_geo.training.cli`); the LightningModules
:class:`PointCloudClassifier` (:mod:`mgic_geo.training.module`), :class:`ImageClassifier` and
:class:`ImageSegmenter` (:mod:`mgic_geo.training.images`), all built on
:class:`~mgic_geo.training.base.RegistryTask`.

Output layout (``<root>`` = ``trainer.default_root_dir``, ``outputs/<data>/<model>`` by default and
in the shipped configs)::

    <root>/checkpoints/last.ckpt          the latest epoch
    <root>/checkpoints/best.ckpt          the epoch with the best validation accuracy (fits that validate)
    <root>/checkpoints/epoch<NNN>.ckpt    every `checkpoint.every_n_epochs` epochs (NNN 0-based)
    <root>/logs/version_<N>/              one per fit/validate/test run: metrics.csv (CSV logger),
                                          events.out.tfevents.* (TensorBoard), hparams.yaml, config.yaml
    <root>/logs/version_<N>/test_results.json   written by every `test` run
    <root>/logs/version_<N>/learning_curves.png, .json, confusion_val.png   by every `fit`
    <root>/logs/version_<N>/confusion_test.png   by every `test` (mgic_geo.training.plots.TrainingPlots)

Results convention: the table readers (``mgic-geo table 6``, ``table 2`` ...) scan a results
directory (``outputs/modelnet10`` for Table 6, ``outputs/cifar10``, ``outputs/imagenet`` and
``outputs/cityscapes`` for the image tables) recursively for ``test_results.json``
(:func:`collect_test_results`); the keys are listed in :mod:`mgic_geo.training.results`. Accuracies
and IoUs there are fractions in [0, 1], of the checkpoint `test` was given. Nothing is selected on
the test split: ModelNet-10 validates on a held-out share of the training files (``val_fraction``)
or a ``val/`` folder, and so do image roots without an evaluation split of their own.
"""
from mgic_geo.training.results import RESULTS_FILENAME, collect_test_results

__all__ = ["PointCloudClassifier", "ImageClassifier", "ImageSegmenter", "collect_test_results", "RESULTS_FILENAME",
           "main"]


def __getattr__(name):  # the LightningModules import lightning and the models: load them on use
    if name == "PointCloudClassifier":
        from mgic_geo.training.module import PointCloudClassifier

        return PointCloudClassifier
    if name in ("ImageClassifier", "ImageSegmenter"):
        from mgic_geo.training import images

        return getattr(images, name)
    if name == "main":
        from mgic_geo.training.cli import main

        return main
    raise AttributeError(f"module 'mgic_geo.training' has no attribute {name!r}")

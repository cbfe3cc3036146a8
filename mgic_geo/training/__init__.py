"""Training and testing the point-cloud networks on ModelNet-10 (paper §5.4, Table 6) with Lightning.

Entry points: ``mgic-geo fit --config experiments/modelnet10/<model>.yaml`` and
``mgic-geo test --config ... --ckpt_path last`` (:mod:`mgic_geo.training.cli`), the LightningModule
:class:`PointCloudClassifier` (:mod:`mgic_geo.training.module`).

Output layout (``<root>`` = ``trainer.default_root_dir``, ``outputs/modelnet10/<model>`` by default
and in the shipped configs)::

    <root>/checkpoints/last.ckpt          the latest epoch (what `test` should evaluate)
    <root>/checkpoints/epoch<NNN>.ckpt    every `checkpoint.every_n_epochs` epochs (NNN 0-based)
    <root>/logs/version_<N>/              one per fit/validate/test run: metrics.csv (CSV logger),
                                          events.out.tfevents.* (TensorBoard), hparams.yaml, config.yaml
    <root>/logs/version_<N>/test_results.json   written by every `test` run

Results convention: Table 6 readers (``mgic-geo table 6``) scan a results directory, by default
``outputs/modelnet10``, recursively for ``test_results.json`` (:func:`collect_test_results`); the
keys are listed in :mod:`mgic_geo.training.results`. Accuracies there are fractions in [0, 1], taken
at the last epoch (nothing is selected on the test split: the val loader is the test split and is
only monitored).
"""
from mgic_geo.training.results import RESULTS_FILENAME, collect_test_results

__all__ = ["PointCloudClassifier", "collect_test_results", "RESULTS_FILENAME", "main"]


def __getattr__(name):  # the LightningModule imports lightning and the models: load it on use
    if name == "PointCloudClassifier":
        from mgic_geo.training.module import PointCloudClassifier

        return PointCloudClassifier
    if name == "main":
        from mgic_geo.training.cli import main

        return main
    raise AttributeError(f"module 'mgic_geo.training' has no attribute {name!r}")

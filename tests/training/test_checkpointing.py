"""Which validation metric picks best.ckpt for each task (the fits that write and use best.ckpt are in
test_training.py)."""
from pathlib import Path

import pytest
import torch

from mgic_geo.training import ImageClassifier, ImageSegmenter, PointCloudClassifier
from mgic_geo.training.checkpointing import BEST_METRICS, BestCheckpoint, best_metric


@pytest.mark.parametrize("task, metric", [(PointCloudClassifier, "val/overall_acc"), (ImageClassifier, "val/top1_acc"),
                                          (ImageSegmenter, "val/mean_iou")])
def test_each_task_names_a_metric_its_validation_step_logs(task, metric):
    assert best_metric(object.__new__(task)) == metric
    with torch.device("meta"):
        module = task()
    assert metric in module.validation_metrics()  # RegistryTask.validation_step logs each of them
    subclass = type("Mine", (task,), {})
    assert best_metric(object.__new__(subclass)) == metric  # found through the base classes


def test_other_modules_name_their_own_metric_or_none():
    class Named:
        best_metric = "val/f1"

    assert best_metric(Named()) == "val/f1" and best_metric(object()) is None
    assert set(BEST_METRICS) == {"PointCloudClassifier", "ImageClassifier", "ImageSegmenter"}


def test_the_callback_keeps_one_file_named_best(tmp_path):
    callback = BestCheckpoint(str(tmp_path), "val/overall_acc")
    assert callback.filename == "best" and callback.save_top_k == 1 and callback.mode == "max"
    assert callback.save_last is False and callback.monitor == "val/overall_acc"


@pytest.mark.parametrize("val_fraction", [0.0, 0.2])
def test_last_checkpoint_follows_every_epoch_whatever_every_n_epochs(tmp_path, restore_env, val_fraction):
    """Lightning writes last.ckpt only beside a periodic checkpoint; ours after every epoch."""
    import torch

    from mgic_geo.cli import main

    root = tmp_path / "run"
    demo = Path(__file__).resolve().parents[2] / "experiments" / "modelnet10" / "demo.yaml"
    assert main(["fit", "--config", str(demo), "--data.root", str(tmp_path / "data"),
                 "--data.synthetic_shapes", "[4, 1]", "--data.num_points", "64", "--data.batch_size", "8",
                 "--data.val_fraction", str(val_fraction), "--trainer.max_epochs", "3",
                 "--checkpoint.every_n_epochs", "2", "--trainer.default_root_dir", str(root),
                 "--trainer.enable_progress_bar", "false"]) == 0
    checkpoints = root / "checkpoints"
    assert (checkpoints / "epoch001.ckpt").is_file() and not (checkpoints / "epoch002.ckpt").exists()
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["epoch"] == 2

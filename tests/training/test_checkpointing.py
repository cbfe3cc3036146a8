"""Which validation metric picks best.ckpt for each task (the fits that write and use best.ckpt are in
test_training.py)."""
import inspect

import pytest

from mgic_geo.training import ImageClassifier, ImageSegmenter, PointCloudClassifier
from mgic_geo.training.checkpointing import BEST_METRICS, BestCheckpoint, best_metric


@pytest.mark.parametrize("task, metric", [(PointCloudClassifier, "val/overall_acc"), (ImageClassifier, "val/top1_acc"),
                                          (ImageSegmenter, "val/mean_iou")])
def test_each_task_names_a_metric_its_validation_step_logs(task, metric):
    assert best_metric(object.__new__(task)) == metric
    assert f'self.log("{metric}"' in inspect.getsource(task.validation_step)
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

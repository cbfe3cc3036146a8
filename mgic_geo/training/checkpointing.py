"""``best.ckpt``: the checkpoint of the epoch with the best validation accuracy, kept beside ``last.ckpt``.

``mgic-geo fit`` adds a :class:`BestCheckpoint` to the trainer when the task names a validation metric
(:func:`best_metric`): ``val/overall_acc`` for :class:`~mgic_geo.training.PointCloudClassifier`,
``val/top1_acc`` for :class:`~mgic_geo.training.ImageClassifier`, ``val/mean_iou`` for
:class:`~mgic_geo.training.ImageSegmenter`, the higher the better. It saves ``<dirpath>/best.ckpt``
whenever validation gives a new best value (the earlier epoch wins a tie), so the file exists once
validation has run once; without validation (no validation split) it writes nothing and warns about
nothing. A fresh fit (not a resume) first deletes an earlier run's ``best.ckpt`` in the folder, so that
``--ckpt_path best`` (which names that file, :data:`BEST_NAME`) never picks a checkpoint that the
latest run did not choose.
"""
from __future__ import annotations

import os

from lightning.pytorch.callbacks import ModelCheckpoint

BEST_NAME = "best"
#: the validation metric (logged by the task's ``validation_step``) that picks ``best.ckpt``, per task class
BEST_METRICS = {
    "PointCloudClassifier": "val/overall_acc",
    "ImageClassifier": "val/top1_acc",
    "ImageSegmenter": "val/mean_iou",
}


def best_metric(model) -> str | None:
    """The metric that picks ``best.ckpt`` for ``model`` (mode max): its ``best_metric`` attribute when it
    has one, else :data:`BEST_METRICS` by class (or base class) name; ``None`` for other modules."""
    named = getattr(model, "best_metric", None)
    if isinstance(named, str):
        return named
    return next((BEST_METRICS[cls.__name__] for cls in type(model).__mro__ if cls.__name__ in BEST_METRICS), None)


class BestCheckpoint(ModelCheckpoint):
    """A ``ModelCheckpoint`` keeping one file, ``<dirpath>/best.ckpt``, of the epoch with the highest
    ``monitor``. Unlike a plain one, it is silent where there is no validation data (the metric is then
    never logged); a metric missing although validation ran is still Lightning's error.

    Args:
        dirpath (str): the checkpoint folder (the ``checkpoint.`` ModelCheckpoint's).
        monitor (str): the validation metric, higher is better.
    """

    def __init__(self, dirpath: str, monitor: str):
        super().__init__(dirpath=dirpath, filename=BEST_NAME, monitor=monitor, mode="max", save_top_k=1,
                         save_last=False, auto_insert_metric_name=False, enable_version_counter=False)

    def on_fit_start(self, trainer, pl_module) -> None:
        super().on_fit_start(trainer, pl_module)
        stale = os.path.join(self.dirpath, BEST_NAME + self.FILE_EXTENSION)
        if trainer.ckpt_path is None and os.path.isfile(stale):  # a fresh fit: an earlier run's choice
            trainer.strategy.remove_checkpoint(stale)

    def _save_topk_checkpoint(self, trainer, monitor_candidates) -> None:
        if self.monitor not in monitor_candidates and not sum(trainer.num_val_batches or [0]):
            return  # no validation split: nothing to choose by
        super()._save_topk_checkpoint(trainer, monitor_candidates)


class EpochCheckpoint(ModelCheckpoint):
    """The ``checkpoint.`` ModelCheckpoint of ``mgic-geo fit``: ``ModelCheckpoint`` whose ``last.ckpt``
    follows every epoch. Lightning 2.6 writes ``last.ckpt`` only when it writes a periodic checkpoint
    too, so with ``every_n_epochs: 5`` a fit of 7 epochs ended with ``last.ckpt`` of epoch 5 (which is
    how the first released weights came to be those of epoch 5 of 7); a resumed run would have lost
    up to ``every_n_epochs`` epochs instead of one."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_behind(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_behind(trainer)

    def _save_last_if_behind(self, trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer) \
                and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

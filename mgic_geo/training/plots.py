"""Pictures of a run: learning curves and confusion matrices as PNG files next to the run's logs.

:class:`TrainingPlots` is a Lightning callback (``mgic-geo fit / validate / test`` always add it) that
writes into the trainer's log dir, ``<root>/logs/version_<N>/`` (``trainer.log_dir``, where
``test_results.json`` goes too; with ``--trainer.logger false`` that is ``trainer.default_root_dir``
itself, so a later run there overwrites the pictures):

- ``learning_curves.png``: two panels against the epoch: the losses (``train/loss`` per epoch,
  ``val/loss``) and the other epoch metrics logged under ``train/`` and ``val/`` (accuracies, IoU);
  the values drawn are in ``learning_curves.json`` beside it (``{"epochs": [...], "<metric>":
  [value or null, ...]}``, rewritten after every training epoch). The history is kept in the
  checkpoints, so the curves of a resumed fit start at epoch 0 (of the run resumed from), not at the
  epoch it resumed.
- ``confusion_val.png``: the confusion matrix of the latest validation epoch (``fit`` and
  ``validate``); ``confusion_test.png``: that of the test run. Rows are the true classes, columns
  the predictions, each cell shows its count and is coloured by its share of the row (the recall of
  the row's class on the diagonal); classes are named by the data module's ``class_names`` where it
  has them. The matrices come from the task module's ``last_confusion`` (``{"val": tensor, "test":
  tensor}``, int64 ``[C, C]``, computed over all processes by torchmetrics'
  ``MulticlassConfusionMatrix``); a module without it gets learning curves only.

During a fit the two pictures are drawn after the first training epoch, then after an epoch only
when ``refresh_seconds`` (60) have passed since the last drawing, and always at the end of the fit:
drawing both took about 0.7 s on this project's 2-core CPU, which after every epoch would add some
17 s to the 25 short epochs of the ModelNet demo, while a long run is still refreshed every minute.
A run that is killed leaves the pictures of its last drawing (the resumed run redraws them).

Only global rank 0 draws and writes; each file is written under a temporary name and renamed, so a
reader never sees half a picture. Drawing can never stop a run: any failure is reported once, as a
warning, and the run goes on. Matplotlib is used without pyplot (a ``Figure`` drawn by Agg), so
neither a display nor the user's pyplot state is touched.

:func:`plot_learning_curves` and :func:`plot_confusion` draw the same pictures from plain data.
"""
from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import lightning as L
import torch

CURVES_FILENAME = "learning_curves.png"
CURVES_DATA_FILENAME = "learning_curves.json"
CONFUSION_FILENAMES = {"val": "confusion_val.png", "test": "confusion_test.png"}
# Cells are annotated with their counts, and classes named on the axes, up to these many classes.
MAX_ANNOTATED_CLASSES = 30
MAX_LABELLED_CLASSES = 60


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def save_figure(figure, path: str | os.PathLike) -> Path:
    """``figure.savefig(path)`` through a temporary file in the same folder, renamed over ``path``
    (the folder is created); the format follows the suffix (``.png``, ``.pdf``, ``.svg``, ...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        figure.savefig(partial, format=path.suffix.lstrip(".").lower() or "png")
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()
    return path


def _metric_label(name: str) -> str:
    return name[: -len("_epoch")] if name.endswith("_epoch") else name


def plot_learning_curves(history: Mapping[int, Mapping[str, float]], path: str | os.PathLike | None = None):
    """Learning curves from ``history`` (``{epoch: {metric: value}}``, 0-based epochs).

    Left panel: the metrics whose name contains ``loss``; right panel: the others (accuracies, IoU),
    both against the epoch (1-based on the axis: epoch 1 is the first epoch trained). A metric missing
    in an epoch leaves a gap. Returns the matplotlib ``Figure``; writes it to ``path`` if given.
    """
    figure = _new_figure(10, 4)
    axes = figure.subplots(1, 2)
    epochs = sorted(history)
    names = sorted({name for values in history.values() for name in values})
    panels = ([n for n in names if "loss" in n], [n for n in names if "loss" not in n])
    titles = ("loss", "accuracy" if any("acc" in n for n in panels[1]) else "metrics")
    for ax, panel, title in zip(axes, panels, titles):
        for name in panel:
            points = [(epoch + 1, history[epoch][name]) for epoch in epochs if name in history[epoch]]
            if not points:
                continue
            xs, ys = zip(*points)
            style = "--" if name.startswith("train/") else "-"
            ax.plot(xs, ys, style, marker="o" if len(xs) < 30 else None, markersize=3, label=_metric_label(name))
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "nothing logged", ha="center", va="center", transform=ax.transAxes)
        if epochs:
            ax.xaxis.get_major_locator().set_params(integer=True)
    if path is not None:
        save_figure(figure, path)
    return figure


def plot_confusion(matrix, class_names: Sequence[str] | None = None, *, title: str = "",
                   path: str | os.PathLike | None = None):
    """A confusion matrix ``matrix[true, predicted]`` (counts, ``[C, C]``) as a picture.

    Each cell is coloured by its share of its row (0 for an empty row) and, up to
    ``MAX_ANNOTATED_CLASSES`` classes, shows its count; the title gets the overall accuracy (trace /
    total). Returns the matplotlib ``Figure``; writes it to ``path`` if given.
    """
    counts = torch.as_tensor(matrix).detach().cpu().to(torch.int64)
    if counts.dim() != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"a confusion matrix must be square, got shape {tuple(counts.shape)}")
    n = counts.shape[0]
    names = list(class_names) if class_names is not None and len(class_names) == n else [str(i) for i in range(n)]
    rows = counts.sum(1, keepdim=True)
    shares = (counts.double() / rows.clamp(min=1)).numpy()
    total = int(counts.sum())
    side = min(max(4.0, 0.45 * n + 2.5), 30.0)
    figure = _new_figure(side + 1.2, side)
    ax = figure.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    figure.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    if n <= MAX_ANNOTATED_CLASSES:
        for i in range(n):
            for j in range(n):
                value = int(counts[i, j])
                if value or i == j:
                    ax.text(j, i, str(value), ha="center", va="center", fontsize=8,
                            color="white" if shares[i, j] > 0.5 else "black")
    if n <= MAX_LABELLED_CLASSES:
        ax.set_xticks(range(n), names, rotation=90 if max(map(len, names)) > 3 else 0, fontsize=8)
        ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = f"accuracy {100 * int(counts.trace()) / total:.1f} % of {total}" if total else "no samples"
    ax.set_title(f"{title}: {accuracy}" if title else accuracy)
    if path is not None:
        save_figure(figure, path)
    return figure


def _class_names(trainer) -> list[str] | None:
    datamodule = getattr(trainer, "datamodule", None)
    try:
        names = getattr(datamodule, "class_names", None)
        return [str(name) for name in names] if names is not None else None
    except Exception:  # a property that scans folders: a picture is no reason to fail
        return None


def _scalar(value: Any) -> float | None:
    try:
        value = float(value.detach().float().cpu()) if isinstance(value, torch.Tensor) else float(value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return value if math.isfinite(value) else None


class TrainingPlots(L.Callback):
    """Writes ``learning_curves.png`` (+ ``.json``), ``confusion_val.png`` and ``confusion_test.png``
    into ``trainer.log_dir`` (module docstring). Only global rank 0 writes; a failure to draw is
    warned about once and never stops the run.

    Args:
        curves: draw the learning curves (``fit`` only).
        confusion: draw the confusion matrices (modules with ``last_confusion`` only).
        refresh_seconds: during a fit, least time between two drawings after the first epoch (0: after
            every epoch); the end of the fit always draws.

    What is recorded, per epoch: after the training epoch, every metric of
    ``trainer.callback_metrics`` whose name starts with ``train/`` (``_step`` values left out); after
    each validation run of a fit (not the sanity check), every one starting with ``val/``. The
    history is part of the callback's state in checkpoints, so a resumed fit draws the whole run.
    """

    def __init__(self, curves: bool = True, confusion: bool = True, refresh_seconds: float = 60.0) -> None:
        if not refresh_seconds >= 0:
            raise ValueError(f"`refresh_seconds` must be a non-negative number of seconds, got {refresh_seconds!r}")
        self.curves = curves
        self.confusion = confusion
        self.refresh_seconds = float(refresh_seconds)
        self.history: dict[int, dict[str, float]] = {}
        self._log_dir: str | None = None
        self._warned = False
        self._drawn_at: float | None = None  # time.monotonic() of the last drawing in this fit
        self._val_confusion: tuple[Any, str] | None = None  # (matrix, title) of the latest validation, not drawn yet

    # -- where -----------------------------------------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        self._drawn_at, self._val_confusion = None, None
        # trainer.log_dir broadcasts rank 0's folder under DDP: a collective every process must join,
        # so it is asked here, where all of them are, not in a rank-0-only branch.
        self._log_dir = trainer.log_dir

    def _folder(self, trainer) -> Path | None:
        folder = self._log_dir if self._log_dir is not None else trainer.default_root_dir
        return Path(folder) if folder else None

    def _guarded(self, what: str, draw, *args) -> None:
        try:
            draw(*args)
        except Exception as error:  # a picture must never end a run
            if not self._warned:
                self._warned = True
                warnings.warn(f"TrainingPlots: could not write {what} ({type(error).__name__}: {error}); the run goes "
                              "on without it (further failures are not reported)", RuntimeWarning, stacklevel=2)

    # -- recording -------------------------------------------------------------------------------
    def _record(self, trainer, prefix: str) -> None:
        values = self.history.setdefault(int(trainer.current_epoch), {})
        for name, value in trainer.callback_metrics.items():
            if name.startswith(prefix) and not name.endswith("_step"):
                scalar = _scalar(value)
                if scalar is not None:
                    values[_metric_label(name)] = scalar

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        fitting = trainer.state.fn == "fit"
        if fitting:
            self._record(trainer, "val/")
        matrix = (getattr(pl_module, "last_confusion", None) or {}).get("val")
        if not (self.confusion and trainer.is_global_zero and matrix is not None):
            return
        title = f"validation, epoch {trainer.current_epoch + 1}" if fitting else "validation"
        self._val_confusion = (matrix.clone(), title)
        if not fitting:  # `validate`: now
            self._draw_pending_confusion(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._record(trainer, "train/")
        if not trainer.is_global_zero:
            return
        if self.curves:
            self._guarded(CURVES_DATA_FILENAME, self._write_curve_data, trainer)
        now = time.monotonic()
        if self._drawn_at is None or now - self._drawn_at >= self.refresh_seconds:
            self._drawn_at = now
            self._draw_fit(trainer)

    def on_fit_end(self, trainer, pl_module) -> None:
        # always: the last epochs may not have been drawn, and the last validation may come after the
        # last training epoch's end (val_check_interval < 1)
        if trainer.is_global_zero:
            if self.curves:
                self._guarded(CURVES_DATA_FILENAME, self._write_curve_data, trainer)
            self._draw_fit(trainer)

    def on_test_end(self, trainer, pl_module) -> None:
        matrix = (getattr(pl_module, "last_confusion", None) or {}).get("test")
        if self.confusion and trainer.is_global_zero and matrix is not None:
            self._guarded(CONFUSION_FILENAMES["test"], self._draw_confusion, trainer, matrix, "test", "test")

    # -- drawing ---------------------------------------------------------------------------------
    def _draw_fit(self, trainer) -> None:
        if self.curves and self.history:
            self._guarded(CURVES_FILENAME, self._draw_curves, trainer)
        self._draw_pending_confusion(trainer)

    def _draw_pending_confusion(self, trainer) -> None:
        if self._val_confusion is not None:
            matrix, title = self._val_confusion
            self._val_confusion = None
            self._guarded(CONFUSION_FILENAMES["val"], self._draw_confusion, trainer, matrix, "val", title)

    def _write_curve_data(self, trainer) -> None:
        folder = self._folder(trainer)
        if folder is None or not self.history:
            return
        epochs = sorted(self.history)
        names = sorted({name for values in self.history.values() for name in values})
        data = {"epochs": epochs, **{name: [self.history[e].get(name) for e in epochs] for name in names}}
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{CURVES_DATA_FILENAME}.partial"
        partial.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(partial, folder / CURVES_DATA_FILENAME)

    def _draw_curves(self, trainer) -> None:
        folder = self._folder(trainer)
        if folder is not None:
            plot_learning_curves(self.history, folder / CURVES_FILENAME)

    def _draw_confusion(self, trainer, matrix, split: str, title: str) -> None:
        folder = self._folder(trainer)
        if folder is not None:
            plot_confusion(matrix, _class_names(trainer), title=title, path=folder / CONFUSION_FILENAMES[split])

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"history": {int(epoch): dict(values) for epoch, values in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        history = state_dict.get("history") or {}
        self.history = {int(epoch): {str(k): float(v) for k, v in values.items()} for epoch, values in history.items()}

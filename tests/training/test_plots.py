"""Pictures of a run (:mod:`mgic_geo.training.plots`): ``mgic-geo fit`` writes learning curves and the
validation confusion matrix next to its logs, ``mgic-geo test`` the test confusion matrix; the matrices
are the counts of the predictions; drawing never stops a run. Tiny fits on generated shapes."""
import json
import warnings

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from mgic_geo.cli import main
from mgic_geo.data.layout import CLASSES
from mgic_geo.training import plots
from mgic_geo.training.plots import TrainingPlots, plot_confusion, plot_learning_curves


def tiny_config(tmp_path, **trainer) -> str:
    config = {
        "seed_everything": 0,
        "trainer": {"default_root_dir": str(tmp_path / "run"), "max_epochs": 2, "accelerator": "cpu", "devices": 1,
                    "enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 1, **trainer},
        "model": {"class_path": "mgic_geo.training.PointCloudClassifier", "init_args": {
            "model": "mgic_diffgcn", "model_kwargs": {"k": 4, "dropout": 0.0}, "optimizer": "adam", "lr": 0.003,
            "min_lr": 0.0003, "weight_decay": 0.0}},
        "data": {"class_path": "mgic_geo.data.ModelNet10DataModule", "init_args": {
            "root": str(tmp_path / "synthetic"), "source": "synthetic", "synthetic_shapes": [2, 1], "num_points": 64,
            "batch_size": 8, "augment": False}},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
        return image.size


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_fit_and_test_write_curves_and_confusion_matrices(tmp_path, restore_env, one_thread):
    config = tiny_config(tmp_path)
    assert main(["fit", "--config", config]) == 0
    logs = tmp_path / "run" / "logs"
    fit_dir = logs / "version_0"
    for name in ("learning_curves.png", "confusion_val.png"):
        width, height = png_size(fit_dir / name)
        assert 300 <= width <= 3000 and 300 <= height <= 3000, (name, width, height)
    curves = json.loads((fit_dir / "learning_curves.json").read_text())
    assert curves["epochs"] == [0, 1]
    assert {"train/loss", "train/overall_acc", "val/loss", "val/overall_acc", "val/mean_class_acc"} <= set(curves)
    assert all(value is not None for name in ("train/loss", "val/overall_acc") for value in curves[name])
    # the values drawn are the logged ones (the CSV logger's)
    import csv

    with open(fit_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    logged = [float(r["val/overall_acc"]) for r in rows if r.get("val/overall_acc")]
    assert curves["val/overall_acc"] == pytest.approx(logged)
    logged = [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]
    assert curves["train/loss"] == pytest.approx(logged)

    # the history travels in the checkpoint: a resumed fit draws the whole run
    assert main(["fit", "--config", config, "--ckpt_path", "last", "--trainer.max_epochs", "3"]) == 0
    resumed = json.loads((logs / "version_1" / "learning_curves.json").read_text())
    assert resumed["epochs"] == [0, 1, 2]
    assert resumed["val/overall_acc"][:2] == curves["val/overall_acc"]

    assert main(["test", "--config", config, "--ckpt_path", "last"]) == 0
    test_dir = logs / "version_2"
    png_size(test_dir / "confusion_test.png")
    assert not (test_dir / "learning_curves.png").exists()  # no training in a test run
    assert not list(logs.rglob(".*partial*"))


def test_confusion_matrix_is_the_count_of_predictions(tmp_path, restore_env, one_thread, monkeypatch):
    """The matrices the module hands the callback equal ones counted by hand from its predictions."""
    import lightning as L

    from mgic_geo.data import ModelNet10DataModule
    from mgic_geo.training import PointCloudClassifier

    L.seed_everything(0)
    data = ModelNet10DataModule(root=str(tmp_path / "synthetic"), source="synthetic", synthetic_shapes=(10, 2),
                                num_points=64, batch_size=7, augment=False)
    module = PointCloudClassifier(model="mgic_diffgcn", model_kwargs={"k": 4, "dropout": 0.0}, optimizer="adam",
                                  lr=0.01, min_lr=0.001)
    drawn = []

    def counted_curves(*args, **kwargs):
        drawn.append(1)
        return plot_learning_curves(*args, **kwargs)

    monkeypatch.setattr(plots, "plot_learning_curves", counted_curves)
    trainer = L.Trainer(default_root_dir=str(tmp_path / "run"), max_epochs=2, accelerator="cpu", devices=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[TrainingPlots(refresh_seconds=3600)])
    trainer.fit(module, datamodule=data)
    assert len(drawn) == 2  # after the first epoch, then not before an hour has passed, and at the end
    trainer.test(module, datamodule=data, verbose=False)

    def counted(loader):
        expected = torch.zeros(10, 10, dtype=torch.int64)
        module.eval()
        with torch.no_grad():
            for batch in loader:
                predicted = module(batch.pos, batch.batch).argmax(1)
                for true, guess in zip(batch.y.view(-1).tolist(), predicted.tolist()):
                    expected[true, guess] += 1
        return expected

    expected = counted(data.test_dataloader())
    assert int(expected.sum()) == 20
    assert torch.equal(module.last_confusion["test"], expected)
    # validation ran after the last training epoch: with the final weights
    expected = counted(data.val_dataloader())
    assert int(expected.sum()) > 0
    assert torch.equal(module.last_confusion["val"], expected)
    # without a logger the pictures go to default_root_dir
    for name in ("learning_curves.png", "confusion_val.png", "confusion_test.png"):
        png_size(tmp_path / "run" / name)


def test_plot_confusion_counts_and_row_shares():
    matrix = torch.tensor([[3, 1, 0], [0, 0, 0], [2, 0, 2]])
    figure = plot_confusion(matrix, ["a", "b", "c"], title="validation")
    ax = figure.axes[0]
    shares = ax.images[0].get_array()
    np.testing.assert_allclose(np.asarray(shares), [[0.75, 0.25, 0.0], [0.0, 0.0, 0.0], [0.5, 0.0, 0.5]])
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert texts == {(0, 0): "3", (0, 1): "1", (1, 1): "0", (2, 0): "2", (2, 2): "2"}
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    assert ax.get_title() == "validation: accuracy 62.5 % of 8"
    with pytest.raises(ValueError, match="must be square"):
        plot_confusion(torch.zeros(2, 3))


def test_plot_learning_curves_panels(tmp_path):
    history = {0: {"train/loss": 2.0, "train/overall_acc": 0.2, "val/loss": 2.1, "val/overall_acc": 0.1},
               1: {"train/loss": 1.5, "train/overall_acc": 0.4},  # no validation this epoch: a gap
               2: {"train/loss": 1.0, "train/overall_acc": 0.6, "val/loss": 1.2, "val/overall_acc": 0.5}}
    figure = plot_learning_curves(history, tmp_path / "curves.png")
    losses, accuracies = figure.axes
    assert sorted(line.get_label() for line in losses.lines) == ["train/loss", "val/loss"]
    assert sorted(line.get_label() for line in accuracies.lines) == ["train/overall_acc", "val/overall_acc"]
    val = next(line for line in accuracies.lines if line.get_label() == "val/overall_acc")
    assert list(val.get_xdata()) == [1, 3] and list(val.get_ydata()) == [0.1, 0.5]
    png_size(tmp_path / "curves.png")


def test_a_failing_picture_never_stops_the_run(tmp_path, restore_env, one_thread, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no fonts today")

    monkeypatch.setattr(plots, "plot_learning_curves", broken)
    monkeypatch.setattr(plots, "plot_confusion", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["fit", "--config", tiny_config(tmp_path), "--trainer.logger", "false"]) == 0
    ours = [w for w in caught if "TrainingPlots" in str(w.message)]
    assert len(ours) == 1 and "no fonts today" in str(ours[0].message), [str(w.message) for w in caught]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "run" / "confusion_val.png").exists()


def test_class_names_label_the_axes(tmp_path):
    trainer = type("T", (), {"datamodule": type("D", (), {"class_names": list(CLASSES)})()})()
    assert plots._class_names(trainer) == list(CLASSES)
    figure = plot_confusion(torch.eye(10, dtype=torch.int64), plots._class_names(trainer))
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == list(CLASSES)


def test_image_classifier_curves_and_confusion(tmp_path, restore_env, one_thread):
    """The image side: top-1 curves, matrices from ImageClassifier, CIFAR-10 class names on the axes."""
    import lightning as L

    from mgic_geo.data import CIFAR10DataModule
    from mgic_geo.training import ImageClassifier

    L.seed_everything(0)
    data = CIFAR10DataModule(root=str(tmp_path / "images"), source="synthetic", synthetic_images=(3, 2),
                             batch_size=16, image_size=16)
    module = ImageClassifier(model="resnet56", optimizer="adam", lr=0.003, scheduler="none", weight_decay=0.0)
    callback = TrainingPlots(refresh_seconds=0)
    trainer = L.Trainer(default_root_dir=str(tmp_path / "run"), max_epochs=1, accelerator="cpu", devices=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[callback])
    trainer.fit(module, datamodule=data)
    trainer.test(module, datamodule=data, verbose=False)
    assert {"train/loss", "train/top1_acc", "val/top1_acc", "val/top5_acc"} <= set(callback.history[0])
    assert int(module.last_confusion["test"].sum()) == 20
    assert int(module.last_confusion["val"].sum()) > 0
    for name in ("learning_curves.png", "confusion_val.png", "confusion_test.png"):
        png_size(tmp_path / "run" / name)
    assert plots._class_names(trainer) == data.class_names and len(data.class_names) == 10

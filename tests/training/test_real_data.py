"""A short ``mgic-geo fit`` of the Table-6 MGIC-diffGCN on a few hundred real ModelNet-10 clouds
(``../shared/data/modelnet10-train``, read only): the training loss falls and the held-out clouds are
classified better than chance. Skipped where the shared data are absent. Nothing is written into
the shared folder: the subset root holds links to its files and every output goes to tmp_path."""
import csv
import os
from pathlib import Path

import pytest
import yaml

from mgic_geo.cli import main
from mgic_geo.data.layout import CLASSES

REAL_TRAIN = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "modelnet10-train"
PER_CLASS = 30


def subset_root(tmp_path: Path) -> Path:
    if not (REAL_TRAIN / "bathtub" / "train").is_dir():
        pytest.skip(f"the shared ModelNet-10 train split is not there ({REAL_TRAIN.resolve()})")
    root = tmp_path / "modelnet10-subset"
    for name in CLASSES:
        folder = root / name / "train"
        folder.mkdir(parents=True)
        for file in sorted((REAL_TRAIN / name / "train").glob("*.pcd"))[:PER_CLASS]:
            os.symlink(file.resolve(), folder / file.name)
    return root


def test_a_short_fit_on_real_clouds_learns(tmp_path, restore_env):
    root = subset_root(tmp_path)
    config = {
        "seed_everything": 0,
        "trainer": {"default_root_dir": str(tmp_path / "run"), "max_epochs": 4, "accelerator": "cpu", "devices": 1,
                    "enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 1},
        "model": {"class_path": "mgic_geo.training.PointCloudClassifier", "init_args": {
            "model": "mgic_diffgcn", "model_kwargs": {"k": 10, "dropout": 0.0}, "optimizer": "adam", "lr": 0.003,
            "min_lr": 0.0003, "weight_decay": 0.0}},
        "data": {"class_path": "mgic_geo.data.ModelNet10DataModule", "init_args": {
            "root": str(root), "cache_dir": str(tmp_path / "cache"), "num_points": 256, "batch_size": 16,
            "augment": False, "val_fraction": 0.2}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["fit", "--config", str(path)]) == 0
    with open(next((tmp_path / "run" / "logs").glob("version_*/metrics.csv")), newline="") as handle:
        rows = list(csv.DictReader(handle))
    losses = [float(row["train/loss_epoch"]) for row in rows if row.get("train/loss_epoch")]
    accuracy = [float(row["val/overall_acc"]) for row in rows if row.get("val/overall_acc")]
    print("losses", losses, "val accuracy", accuracy)
    assert len(losses) == 4 and len(accuracy) == 4
    assert losses[-1] < 0.85 * losses[0], losses
    assert max(accuracy) > 0.3, accuracy  # 60 held-out clouds of 10 classes: chance is 0.1
    assert not any(p.name == "processed_mgic" for p in REAL_TRAIN.iterdir())

import json

import pytest
import torch

from mgic_geo.cli import main
from mgic_geo.complexity import profile
from mgic_geo.experiments.table6 import table6
from mgic_geo.models import create_model


def test_measured_columns_are_the_profile_of_each_model(tmp_path):
    rows = table6(points=128, results=tmp_path)
    assert [row["model"] for row in rows] == ["dgcnn", "diffgcn", "mgic_diffgcn", "diffgcn_dgcnn", "mgic_diffgcn_dgcnn",
                                              "mgic_dgcnn"]
    measured = profile(create_model("mgic_diffgcn"), torch.randn(128, 3))
    row = rows[2]
    assert row["params [M] paper"] == 0.11 and row["FLOPs [M] paper"] == 13.7 and row["accuracy [%] paper"] == 92.9
    assert row["params [M] ours"] == round(measured.params / 1e6, 3)
    assert row["MACs [M] ours"] == round(measured.macs / 1e6, 2)
    assert row["kNN distance MACs [M] ours"] == round(measured.knn_macs / 1e6, 2)
    assert row["overall accuracy [%] ours"] == "no run"


def test_accuracy_comes_from_the_newest_run(tmp_path):
    for folder, accuracy in (("old", 0.5), ("new", 0.75)):
        (tmp_path / folder).mkdir()
        record = {"model": "dgcnn", "overall_accuracy": accuracy, "mean_class_accuracy": accuracy - 0.1,
                  "epochs": 3, "source": "synthetic"}
        (tmp_path / folder / "test_results.json").write_text(json.dumps(record))
    row = table6(points=64, results=tmp_path)[0]
    assert row["overall accuracy [%] ours"] == "75.0" and row["mean-class accuracy [%] ours"] == "65.0"
    assert row["run"].startswith("3 epochs, synthetic data (") and "new" in row["run"]


def test_a_broken_results_file_is_named(tmp_path):
    (tmp_path / "test_results.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"test_results.json: not a test_results.json written by `mgic-geo test`"):
        table6(points=64, results=tmp_path)


def test_cli_prints_and_writes_the_table(tmp_path, capsys):
    assert main(["table", "6", "--points", "64", "--results", str(tmp_path / "none"), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "| MGIC-diffGCN | mgic_diffgcn | 0.11 |" in printed
    assert (tmp_path / "table6.md").read_text().strip() in printed.strip()
    assert main(["table", "6", "--points", "0", "--out", str(tmp_path)]) == 2
    assert "mgic-geo: error: `--points` must be a positive integer, got 0" in capsys.readouterr().err


def test_mgic_rows_show_the_official_level_rule(tmp_path):
    rows = {row["model"]: row for row in table6(points=128, results=tmp_path)}
    assert rows["dgcnn"]["params [M] ours, official rule"] == "-"
    assert isinstance(rows["mgic_diffgcn"]["params [M] ours, official rule"], float)
    assert isinstance(rows["mgic_diffgcn"]["MACs [M] ours, official rule"], float)


def test_the_papers_skeleton_rows_carry_the_papers_diffgcn_figures(tmp_path):
    rows = {row["model"]: row for row in table6(points=128, results=tmp_path)}
    for ours, described in (("diffgcn", "diffgcn_dgcnn"), ("mgic_diffgcn", "mgic_diffgcn_dgcnn")):
        assert rows[described]["params [M] paper"] == rows[ours]["params [M] paper"]
        assert rows[described]["FLOPs [M] paper"] == rows[ours]["FLOPs [M] paper"]
    measured = profile(create_model("mgic_diffgcn_dgcnn"), torch.randn(128, 3))
    assert rows["mgic_diffgcn_dgcnn"]["MACs [M] ours"] == round(measured.macs / 1e6, 2)

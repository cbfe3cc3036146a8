import json

import pytest
import torch

from mgic_geo.cli import main
from mgic_geo.complexity import profile
from mgic_geo.experiments.image_tables import TABLES, image_table
from mgic_geo.models import create_model


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_row_is_measured_beside_the_paper(table, tmp_path):
    title, rows = image_table(table, results=tmp_path)
    assert title.startswith(f"Table {table}:") and len(rows) == len(TABLES[table][4])
    for row, (label, model, *_rest) in zip(rows, TABLES[table][4]):
        assert row["network"] == label and row["model"] == model
        assert row["params [M] ours"] > 0 and row["accuracy [%] ours"] == "no run"


def test_measured_figures_are_the_profile_of_the_model(tmp_path):
    _, rows = image_table("2", results=tmp_path)
    measured = profile(create_model("mgic_resnet56", group_size=8, coarsest=16), torch.randn(1, 3, 32, 32))
    assert rows[1]["params [M] ours"] == round(measured.params / 1e6, 3)
    assert rows[1]["MACs [M] ours"] == round(measured.macs / 1e6, 1)


def test_accuracy_comes_from_a_matching_run(tmp_path):
    record = {"model": "mgic_resnet56", "model_kwargs": {"group_size": 4, "coarsest": 16}, "top1_accuracy": 0.9}
    (tmp_path / "test_results.json").write_text(json.dumps(record))
    _, rows = image_table("8", results=tmp_path)
    assert [row["accuracy [%] ours"] for row in rows] == ["no run", "no run", "no run", "90.0"]


def test_cli_and_bad_table(tmp_path, capsys):
    assert main(["table", "7", "--results", str(tmp_path), "--out", str(tmp_path)]) == 0
    assert "| s_c=16 | mgic_resnet56 | 0.47 |" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"no image table '6'; the image tables are 2, 3, 4, 5, 7, 8"):
        image_table("6")


def test_a_broken_results_file_is_named(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "test_results.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"run/test_results.json: not a test_results.json written by `mgic-geo test`"):
        image_table("2", results=tmp_path)


def test_mgic_rows_show_the_official_level_rule_beside_the_papers(tmp_path):
    from mgic_geo import MGICConfig

    _, rows = image_table("2", results=tmp_path)
    assert rows[0]["params [M] ours, official rule"] == "-" and rows[0]["MACs [M] ours, official rule"] == "-"
    official = profile(create_model("mgic_resnet56", mgic=MGICConfig(group_size=8, coarsest=16, level_rule="official")),
                       torch.randn(1, 3, 32, 32))
    assert rows[1]["params [M] ours, official rule"] == round(official.params / 1e6, 3)
    assert rows[1]["MACs [M] ours, official rule"] == round(official.macs / 1e6, 1)
    assert rows[1]["params [M] ours, official rule"] != rows[1]["params [M] ours"]  # stage 1 coarsens under it

import json

import pytest

from mgic_geo.cli import main
from mgic_geo.experiments.figure3 import figure3_points, validation_runs


def test_points_pair_the_papers_figures_with_ours_and_the_png_is_written(tmp_path, capsys):
    record = {"model": "mgic_resnet56", "model_kwargs": {"mgic": {"group_size": 4, "coarsest": 16}},
              "top1_accuracy": 0.9}
    (tmp_path / "test_results.json").write_text(json.dumps(record))
    points = figure3_points(results=tmp_path)
    labels = [point["label"] for point in points]
    assert labels[0] == "ResNet-56" and len(labels) == len(set(labels)) == 7  # (8, 16) and (16, 16) once each
    shared = points[labels.index("MGIC (s_g=16, s_c=16)")]
    assert shared["paper_macs"] == [65, 85] and shared["paper_accuracy"] == [94.3, 94.7]  # Tables 7 and 8 differ
    assert points[labels.index("MGIC (s_g=4, s_c=16)")]["accuracy"] == 90.0
    assert sum(point["accuracy"] is None for point in points) == 6

    out = tmp_path / "figures" / "figure3.png"
    assert main(["figure", "3", "--results", str(tmp_path), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "MGIC (s_g=4, s_c=16): paper 45 M / 92.8 %; ours 66.1 M / 90.0 %" in printed


def _run(root, name, model, command, accuracies):
    (root / name / "logs" / "version_0").mkdir(parents=True)
    (root / name / "run_info.json").write_text(json.dumps({"name": name, "model": model, "command": command}))
    lines = ["epoch,step,val/top1_acc"] + [f"0,{99 + 100 * i},{a}" for i, a in enumerate(accuracies)]
    (root / name / "logs" / "version_0" / "metrics.csv").write_text("\n".join(lines) + "\n")


def test_real_runs_at_the_table_setting_add_their_last_validation_accuracy(tmp_path, capsys):
    runs = tmp_path / "runs"
    _run(runs, "resnet56", "resnet56", ["fit", "--config", "x.yaml"], [0.2, 0.388])
    _run(runs, "mgic_other", "mgic_resnet56", ["fit", "--model.init_args.model_kwargs", "{mgic: {coarsest: 32}}"], [0.5])
    points = figure3_points(results=tmp_path / "none", runs=runs)
    by_label = {point["label"]: point for point in points}
    assert by_label["ResNet-56"]["validation"] == {"accuracy": 38.8, "steps": 200, "name": "resnet56"}
    # a run with a setting of its own is not a row of the tables; no run, no point
    assert all(point["validation"] is None for label, point in by_label.items() if label != "ResNet-56")
    out = tmp_path / "figure3.png"
    assert main(["figure", "3", "--results", str(tmp_path / "none"), "--runs", str(runs), "--out", str(out)]) == 0
    assert "ours, validation split of run resnet56 (200 steps): 38.8 %" in capsys.readouterr().out


def test_a_run_info_that_is_not_one_is_named(tmp_path):
    runs = tmp_path / "runs"
    (runs / "broken").mkdir(parents=True)
    for text in ("{not json", "[1, 2]", '{"name": "x"}', '"a string"'):
        (runs / "broken" / "run_info.json").write_text(text)
        with pytest.raises(ValueError, match=r"broken/run_info.json: not a run_info.json of `mgic-geo experiment "
                                             r"results` \(a JSON object with 'name', 'model' and 'command'\)"):
            validation_runs(runs)

import json

from mgic_geo.cli import main
from mgic_geo.experiments.figure3 import figure3_points


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

"""`mgic-geo bench all`: one report with the machine, the headline ratios, every table and the plots
(quick mode: tiny sizes, the report's structure is what is tested, not the figures)."""
import pytest

from mgic_geo.bench.all import bench_all, headline, library_versions
from mgic_geo.cli import main


def test_quick_report_has_header_tables_plots_and_commands(tmp_path):
    report = bench_all(tmp_path / "docs", quick=True, device="cpu", sections=("block", "knn"))
    text = report.read_text()
    assert text.startswith("# Benchmarks") and "QUICK MODE" in text
    assert "- machine: " in text and "torch threads" in text and "- libraries: python " in text and "torch 2." in text
    assert "MGIC block vs dense block, graph, c = 32 (cpu)" in text and "MGIC block vs dense block, image, c = 32" in text
    assert "naive: cdist" in text and "takes" in text  # a kNN headline against ours
    assert "### Dense block vs MGIC block" in text and "### Batched kNN graph" in text
    assert "## kNN against the points per cloud" in text
    for image in ("bench_block.png", "bench_knn.png"):
        assert (tmp_path / "docs" / "images" / image).stat().st_size > 1000
        assert f"(images/{image})" in text
    assert "mgic-geo bench block --widths 32" in text and "mgic-geo bench knn --batch 1 --points 64" in text


def test_headline_reads_the_modelnet_ratio():
    rows = [{"device": "cpu", "model": "mgic_diffgcn", "samples / s": "18", "peak memory [MiB]": "500"},
            {"device": "cpu", "model": "dgcnn_pyg_example", "samples / s": "3.6", "peak memory [MiB]": "3000"}]
    assert headline([], [], rows) == [
        "ModelNet-10 training (cpu): mgic_diffgcn 5.00x the samples/s of dgcnn_pyg_example, with 6.00x less peak memory"]


def test_headline_leaves_out_traffic_that_was_not_counted():
    row = {"device": "cpu", "case": "graph", "c": "64", "speed-up (dense/MGIC)": "0.9",
           "memory ratio (dense/MGIC)": "0.3", "MAC ratio (dense/MGIC)": "2.3", "MGIC GiB moved": "nan"}
    assert headline([row], [], [], block_label="Compiled MGIC block vs compiled dense block") == [
        "Compiled MGIC block vs compiled dense block, graph, c = 64 (cpu): time dense/MGIC 0.90x, peak memory "
        "dense/MGIC 0.30x, MACs dense/MGIC 2.3x (above 1 favours MGIC)"]


def test_versions_and_bad_sections(tmp_path, capsys):
    assert "lightning " in library_versions()
    with pytest.raises(ValueError, match=r"`--sections` must be some of block, block_compiled, grouped, knn, modelnet, got \['gpu'\]"):
        bench_all(tmp_path, sections=("gpu",))
    assert main(["bench", "all", "--sections", "gpu", "--out", str(tmp_path)]) == 2
    assert "mgic-geo: error: `--sections` must be some of" in capsys.readouterr().err


def test_comparison_with_a_previous_report(tmp_path):
    import csv

    from mgic_geo.bench.all import comparison

    previous = tmp_path / "before"
    (previous / "modelnet").mkdir(parents=True)
    with (previous / "modelnet" / "modelnet.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["device", "model", "samples / s"])
        writer.writeheader()
        writer.writerows([{"device": "cpu", "model": "mgic_diffgcn", "samples / s": "15"},
                          {"device": "cpu", "model": "dgcnn_pyg_example", "samples / s": "3"}])
    now = [{"device": "cpu", "model": "mgic_diffgcn", "samples / s": "60"},
           {"device": "cpu", "model": "dgcnn_pyg_example", "samples / s": "4"}]
    lines = comparison(previous, [], [], now)
    assert lines[0] == "| figure | previous | now | now / previous |"
    assert "| ModelNet-10 training (cpu): mgic_diffgcn samples/s | 15 | 60 | 4 |" in lines
    assert "| ModelNet-10 training (cpu): mgic_diffgcn / dgcnn_pyg_example samples/s | 5 | 15 | 3 |" in lines
    assert comparison(tmp_path / "empty", [], [], now) == []
    with pytest.raises(ValueError, match="`--previous` must be a folder of earlier benchmark tables"):
        bench_all(tmp_path / "out", previous=tmp_path / "missing")

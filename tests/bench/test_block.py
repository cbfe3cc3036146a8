"""``mgic-geo bench block``: a tiny run end to end, the analytic MAC count, and option checking.

Speed is what the benchmark itself reports; nothing here asserts on times beyond "positive".
"""
import argparse
import csv
import math

import pytest
import torch

from mgic_geo.bench import block as bench
from mgic_geo.bench import block_command, block_table, machine

TINY = dict(widths=(16, 32), nodes=256, batch=2, size=8, repeats=1, warmup=1)
TINY_ARGS = ["--widths", "16", "32", "--nodes", "256", "--batch", "2", "--size", "8", "--repeats", "1"]


def run_cli(argv):
    """``mgic-geo bench block ARGV`` without building the whole CLI (its other commands are
    separate modules)."""
    parser = argparse.ArgumentParser()
    block_command.add_arguments(parser)
    return block_command.run(parser.parse_args(argv))


@pytest.fixture(scope="module")
def tiny_rows():
    # One real run shared by the tests below: each measurement forks its own worker process.
    return bench.bench_block(**TINY, device="cpu", progress=False)


def test_tiny_run_returns_both_cases_and_widths(tiny_rows):
    assert [(row["device"], row["case"], row["c"]) for row in tiny_rows] == [
        ("cpu", "graph", 16), ("cpu", "graph", 32), ("cpu", "image", 16), ("cpu", "image", 32),
    ]
    for row in tiny_rows:
        assert set(row) == set(block_table.COLUMNS)
        for variant in bench.VARIANTS:
            assert math.isfinite(row[f"{variant} ms"]) and row[f"{variant} ms"] > 0
            assert math.isfinite(row[f"{variant} peak MiB"]) and row[f"{variant} peak MiB"] >= 0
        for variant in ("dense", "MGIC"):
            assert row[f"{variant} params"] > 0 and row[f"{variant} GMAC"] > 0
            assert row[f"{variant} GiB moved"] > 0
        assert row["speed-up (dense/MGIC)"] == pytest.approx(row["dense ms"] / row["MGIC ms"])
        assert row["bandwidth GB/s"] > 0
        assert row["MGIC floor ms"] == pytest.approx(row["MGIC GiB moved"] * 2**30 / (row["bandwidth GB/s"] * 1e9) * 1e3)


def test_tiny_run_builds_the_requested_hierarchy(tiny_rows):
    by_width = {(row["case"], row["c"]): row for row in tiny_rows}
    for case in bench.CASES:
        # c = 16 = s_c: no coarsening, the MGIC block is the dense block (paper level rule).
        plain = by_width[case, 16]
        assert plain["MGIC levels"] == 1
        assert plain["MGIC params"] == plain["dense params"] and plain["MAC ratio (dense/MGIC)"] == 1
        # c = 32: one coarsening, grouped fine level, so fewer MACs than dense.
        cycled = by_width[case, 32]
        assert cycled["MGIC levels"] == 2 and cycled["MAC ratio (dense/MGIC)"] > 1


def spec(case, variant, width, **kwargs):
    options = dict(
        device="cpu", case=case, variant=variant, width=width, nodes=100, batch=2, size=5, group_size=8,
        coarsest=16, warmup=0, repeats=1, channels_last=False, seed=0, num_threads=1,
    )
    return bench.Measurement(**(options | kwargs))


def test_mac_count_matches_the_dense_formulas():
    nodes, batch, size, width = 100, 2, 5, 24
    assert bench.count_macs(spec("graph", "dense", width)) == nodes * width**2
    assert bench.count_macs(spec("image", "dense", width)) == batch * size * size * 9 * width**2


def test_mac_count_of_an_mgic_block_sums_levels_and_transfers():
    # c = 32, s_g = 8, s_c = 16: widths [32, 16], groups [4, 1]. Fine grouped 1x1: 32 * 8;
    # R and P: 16 * 8 each; coarse full 1x1: 16 * 16.
    mgic = bench.build_block("graph", "MGIC", 32, group_size=8, coarsest=16)
    assert mgic.widths == [32, 16] and mgic.groups == [4, 1]
    assert bench.count_macs(spec("graph", "MGIC", 32, nodes=10)) == 10 * (32 * 8 + 2 * 16 * 8 + 16 * 16)


def test_cli_prints_and_writes_markdown_and_csv(tiny_rows, tmp_path, monkeypatch, capsys):
    # The measuring is covered above; here only the table path, so reuse the rows.
    monkeypatch.setattr(block_command, "bench_block", lambda **kwargs: tiny_rows)
    assert run_cli([*TINY_ARGS, "--device", "cpu", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("machine: ") and "torch threads" in printed
    assert "| device | case | c |" in printed and "speed-up (dense/MGIC)" in printed
    markdown = (tmp_path / "block.md").read_text()
    assert "| cpu | image | 32 |" in markdown and "ru_maxrss" in markdown
    with (tmp_path / "block.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and list(rows[0]) == list(block_table.COLUMNS)


@pytest.mark.parametrize(
    "options, named",
    [
        (dict(widths=()), "--widths"),
        (dict(widths=(16, 0)), "--widths"),
        (dict(nodes=0), "--nodes"),
        (dict(batch=-1), "--batch"),
        (dict(size=0), "--size"),
        (dict(group_size=0), "--group-size"),
        (dict(coarsest=0), "--coarsest"),
        (dict(repeats=0), "--repeats"),
        (dict(warmup=-1), "--warmup"),
        (dict(nodes=2.5), "--nodes"),
        (dict(cases=("mesh",)), "--cases"),
        (dict(cases=()), "--cases"),
        (dict(device="tpu"), "--device"),
    ],
)
def test_bad_options_raise_value_error_naming_the_option(options, named):
    with pytest.raises(ValueError, match=named):
        bench.bench_block(**{**TINY, **options}, progress=False)


def test_cuda_requested_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="--device.*CUDA is not available"):
        bench.bench_block(**TINY, device="cuda", progress=False)
    with pytest.raises(ValueError, match="--device.*CUDA is not available"):
        run_cli([*TINY_ARGS, "--device", "cuda"])
    assert machine.resolve_devices("auto") == ["cpu"]


def test_cli_rejects_bad_options_before_measuring(tmp_path, monkeypatch):
    def must_not_run(**kwargs):
        raise AssertionError("bench_block ran despite a bad option")

    monkeypatch.setattr(block_command, "bench_block", must_not_run)
    with pytest.raises(ValueError, match="--nodes"):
        run_cli(["--nodes", "0", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--widths"):
        run_cli(["--widths", "64", "-3", "--out", str(tmp_path)])
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(ValueError, match="--out"):
        run_cli(["--out", str(not_a_dir)])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tiny_run_on_cuda():
    rows = bench.bench_block(**TINY, device="cuda", channels_last=True, progress=False)
    assert {row["device"] for row in rows} == {"cuda"} and len(rows) == 4
    for row in rows:
        assert row["dense ms"] > 0 and row["MGIC ms"] > 0
        assert row["dense peak MiB"] >= 0 and row["MGIC peak MiB"] >= 0


def test_checkpoint_option_reaches_the_mgic_block_only():
    assert bench.build_block("graph", "MGIC", 32, checkpoint=True).checkpoint
    assert not bench.build_block("graph", "MGIC", 32).checkpoint
    assert not hasattr(bench.build_block("image", "dense", 32, checkpoint=True), "checkpoint")
    parser = argparse.ArgumentParser()
    block_command.add_arguments(parser)
    assert parser.parse_args(["--checkpoint"]).checkpoint and not parser.parse_args([]).checkpoint
    notes = block_table.method_notes(warmup=1, repeats=1, group_size=8, coarsest=16, nodes=8, batch=1, size=4,
                               channels_last=False, devices=["cpu"], checkpoint=True)
    assert "checkpoint=True" in notes[0]


def test_compiled_measurements_wrap_the_block_and_count_no_traffic():
    measured = spec("graph", "mgic", 32, compile=True)
    block, x, grad_output = bench._prepare(measured)
    assert hasattr(block, "_orig_mod") and isinstance(block._orig_mod, bench.MGICBlock)
    assert "compiled" in measured.describe()
    assert bench._describe_block(measured, block)["levels"] == len(block._orig_mod.widths)
    assert math.isnan(bench._traffic(block, x, grad_output)["traffic_bytes"])
    notes = block_table.method_notes(warmup=1, repeats=1, group_size=8, coarsest=16, nodes=8, batch=1, size=4,
                               channels_last=False, devices=["cpu"], compile=True)
    assert any("torch.compile" in line for line in notes)

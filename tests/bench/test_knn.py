"""``mgic-geo bench knn``: a tiny run end to end, the agreement check, and option checking.

Speed is what the benchmark itself reports; nothing here asserts on times beyond "positive".
"""
import csv

import pytest
import torch

from mgic_geo.bench import knn as bench
from mgic_geo.cli import main

TINY = dict(batch=3, points=32, k=(2, 4), dims=(3, 8), repeats=1, device="cpu")
TINY_ARGS = ["--batch", "3", "--points", "32", "--k", "2", "4", "--dims", "3", "8", "--repeats", "1", "--device", "cpu"]
TORCH_METHODS = (bench.OURS, bench.NAIVE)
LIBRARIES = (bench.TORCH_CLUSTER, bench.PYG_LIB)


@pytest.fixture(scope="module")
def tiny_rows():
    return bench.bench_knn(**TINY)


def test_tiny_run_has_a_row_for_every_method_and_configuration(tiny_rows):
    measured = [bench.OURS, bench.NAIVE] + [m for m in LIBRARIES if bench.installed(m)]
    ok = [(row["D"], row["k"], row["method"]) for row in tiny_rows if row["status"] == "ok"]
    assert ok == [(d, k, m) for d in (3, 8) for k in (2, 4) for m in measured]
    missing = [row["method"] for row in tiny_rows if row["status"].startswith("not installed")]
    assert missing == [m for m in LIBRARIES if not bench.installed(m)]
    for row in tiny_rows:
        assert row["device"] == "cpu" and set(bench.COLUMNS) <= set(row)
        if row["status"] == "ok":
            assert row["ms"] > 0 and 0 < row["min ms"] <= row["ms"]
    ours = {(row["D"], row["k"]): row for row in tiny_rows if row["method"] == bench.OURS}
    for row in tiny_rows:
        if row["method"] == bench.NAIVE:
            assert row["time / ours"] == pytest.approx(row["ms"] / ours[row["D"], row["k"]]["ms"])
            assert row["distance buffer MiB (analytic)"] == 3 * 32 * 32 * 4 / bench.MIB
    assert all(row["time / ours"] == 1 for row in ours.values())


def test_analytic_distance_buffers_at_the_default_sizes():
    # Ours holds one chunk of MAX_DISTANCE_ELEMENTS float32 scores (4 MiB); naive all B N^2 (128 MiB).
    assert bench.distance_buffer_bytes(bench.OURS, 32, 1024, 4) == 4 * bench.MIB
    assert bench.distance_buffer_bytes(bench.OURS, 32, 1024, 4, k=10) == 4 * bench.MIB
    assert bench.distance_buffer_bytes(bench.OURS, 32, 1024, 4, k=20) == 5 * bench.MIB  # rows padded to 64 k = 1280
    assert bench.distance_buffer_bytes(bench.NAIVE, 32, 1024, 4) == 128 * bench.MIB
    assert bench.distance_buffer_bytes(bench.TORCH_CLUSTER, 32, 1024, 4) is None


def test_naive_graph_is_ours_up_to_order_of_neighbours():
    x, cloud = bench.make_points(3, 32, 8, seed=1, device="cpu")
    ours = bench.METHODS[bench.OURS](x, cloud, 3, 32, 4)
    naive = bench.METHODS[bench.NAIVE](x, cloud, 3, 32, 4)
    assert naive.shape == ours.shape == (2, 3 * 32 * 4)
    assert torch.equal(naive[1], ours[1])  # same targets, target by target
    assert torch.equal(naive[0].view(-1, 4).sort(1).values, ours[0].view(-1, 4).sort(1).values)


def _second_to_kth_plus_one(x, cloud, clouds, points, k):
    """Right structure, wrong neighbours: drops each point's nearest neighbour."""
    source, target = bench.METHODS[bench.OURS](x, cloud, clouds, points, k + 1)
    return torch.stack([source.view(-1, k + 1)[:, 1:].flatten(), target.view(-1, k + 1)[:, 1:].flatten()])


def _across_clouds(x, cloud, clouds, points, k):
    source, target = bench._naive(x, cloud, clouds, points, k)
    return torch.stack([(source + points) % (clouds * points), target])


def _too_few_edges(x, cloud, clouds, points, k):
    return bench._naive(x, cloud, clouds, points, k)[:, :-1]


@pytest.mark.parametrize(
    "wrong, message",
    [(_second_to_kth_plus_one, r"naive: cdist \[B, N, N\] \+ topk disagrees with ours at D=3, k=2: 96 of 96 targets"),
     (_across_clouds, "edges between different clouds"),
     (_too_few_edges, "287 edges, expected 96 points x k=3 = 288")],
)
def test_a_method_that_disagrees_stops_the_run(monkeypatch, wrong, message):
    monkeypatch.setitem(bench.METHODS, bench.NAIVE, wrong)
    with pytest.raises(bench.DisagreementError, match=message):
        bench.bench_knn(**{**TINY, "k": (2,) if wrong is _second_to_kth_plus_one else (3,)})


def test_installed_libraries_are_checked_and_timed(monkeypatch):
    # Stand-ins for torch-cluster and pyg-lib: the same rows and checks as when they are installed.
    monkeypatch.setattr(bench, "installed", lambda method: True)
    monkeypatch.setitem(bench.METHODS, bench.TORCH_CLUSTER, bench._ours)
    monkeypatch.setitem(bench.METHODS, bench.PYG_LIB, _second_to_kth_plus_one)
    with pytest.raises(bench.DisagreementError, match="pyg-lib: .* disagrees with ours"):
        bench.bench_knn(**{**TINY, "k": (2,), "dims": (3,)})
    monkeypatch.setitem(bench.METHODS, bench.PYG_LIB, bench._naive)
    rows = bench.bench_knn(**{**TINY, "k": (2,), "dims": (3,)})
    assert [row["method"] for row in rows] == list(bench.METHODS)
    assert all(row["status"] == "ok" and row["distance buffer MiB (analytic)"] == "n/a" for row in rows[2:])
    lines = bench.notes(rows, machine="m", batch=3, points=32, repeats=1, device="cpu", seed=0)
    for name in ("naive", "torch-cluster", "pyg-lib"):
        assert any(line.startswith(f"{name} / ours time (above 1: ours is faster): D=3 k=2: ") for line in lines)


def test_cli_writes_the_table(tmp_path, capsys):
    assert main(["bench", "knn", *TINY_ARGS, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "naive / ours time (above 1: ours is faster): D=3 k=2:" in out and "torch " + torch.__version__ in out
    with (tmp_path / "knn.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sum(row["status"] == "ok" for row in rows) >= 2 * 2 * len(TORCH_METHODS)
    assert len(rows) == 2 * 2 * sum(map(bench.installed, bench.METHODS)) + sum(not bench.installed(m) for m in bench.METHODS)
    assert (tmp_path / "knn.md").read_text().startswith("## Batched kNN graph")


def test_cli_threads_option_is_noted_and_restored(tmp_path, capsys):
    before = torch.get_num_threads()
    assert main(["bench", "knn", *TINY_ARGS, "--k", "2", "--dims", "3", "--threads", "1", "--out", str(tmp_path)]) == 0
    assert "threads: torch.set_num_threads(1) during the measurement" in capsys.readouterr().out
    assert torch.get_num_threads() == before


def test_cli_reports_a_disagreement_without_a_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(bench.METHODS, bench.NAIVE, _second_to_kth_plus_one)
    assert main(["bench", "knn", *TINY_ARGS, "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mgic-geo: error: naive: cdist [B, N, N] + topk disagrees with ours at D=3, k=2")
    assert "Traceback" not in err and not (tmp_path / "knn.csv").exists()


BAD = [
    (["--points", "0"], "`--points` must be a positive integer, got 0"),
    (["--batch", "-2"], "`--batch` must be a positive integer, got -2"),
    (["--k", "3", "0"], "`--k` must be a positive integer, got 0"),
    (["--dims", "0"], "`--dims` must be a positive integer, got 0"),
    (["--repeats", "0"], "`--repeats` must be a positive integer, got 0"),
    (["--seed", "-1"], "`--seed` must be a non-negative integer, got -1"),
    (["--points", "8", "--k", "8"], "`--k` 8 must be smaller than `--points` 8"),
    (["--device", "tpu"], "`--device` must be one of"),
    (["--threads", "0"], "`--threads` must be a positive integer, got 0"),
]
if not torch.cuda.is_available():
    BAD.append((["--device", "cuda"], "`--device cuda` was requested but CUDA is not available"))


@pytest.mark.parametrize("argv, message", BAD)
def test_bad_options_are_an_error_message(tmp_path, capsys, argv, message):
    assert main(["bench", "knn", "--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mgic-geo: error: {message}")
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_bad_options_to_bench_knn_name_the_option():
    with pytest.raises(ValueError, match="`--k` must be a positive integer, got 0"):
        bench.bench_knn(**{**TINY, "k": (0,)})
    with pytest.raises(ValueError, match="`--dims` needs at least one value"):
        bench.bench_knn(**{**TINY, "dims": ()})

import argparse

import pytest

from mgic_geo.bench import grouped


def run(argv):
    parser = argparse.ArgumentParser()
    grouped.add_arguments(parser)
    return grouped.run(parser.parse_args(argv))


def test_tiny_run_times_every_formulation(tmp_path, capsys):
    assert run(["--channels", "32", "--nodes", "64", "--batch", "2", "--size", "4", "--repeats", "1", "--out", str(tmp_path)]) == 0
    rows = (tmp_path / "grouped.csv").read_text().splitlines()[1:]
    assert len(rows) == sum(len(f) for f in grouped.FORMULATIONS.values())
    assert "conv1d(groups=g)" in capsys.readouterr().out


def test_every_alternative_computes_the_cores_map():
    # bench_grouped checks this itself before timing; a wrong formulation raises here.
    rows = grouped.bench_grouped(channels=16, in_per_group=4, out_per_group=8, nodes=8, batch=1, size=3, repeats=1)
    assert all(row["fwd+bwd ms"] > 0 for row in rows)


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(channels=0), "`--channels` must be a positive integer, got 0"),
     (dict(channels=30, in_per_group=8), "`--in-per-group` 8 must divide `--channels` 30"),
     (dict(repeats=-1), "`--repeats` must be a positive integer, got -1")],
)
def test_bad_options_name_the_option(kwargs, message):
    with pytest.raises(ValueError, match=message):
        grouped.bench_grouped(**kwargs)

import argparse

import pytest

from mgic_geo.experiments import scaling


def run(argv):
    parser = argparse.ArgumentParser()
    scaling.add_arguments(parser)
    return scaling.run(parser.parse_args(argv))


def test_rows_follow_eq_8():
    rows = scaling.scaling_rows([64, 256, 1024], group_size=8, coarsest=16)
    for row in rows:
        assert row["MGIC conv weights"] == row["Eq. 8 sum"] < row["Eq. 8 bound"]
        # transfer operators and batch norms come on top of the conv weights, below 2 s_g c + BN
        extra = row["MGIC params"] - row["MGIC conv weights"]
        assert 0 < extra < 2 * 8 * row["c"] + 4 * 2 * row["c"]
        assert row["dense params"] == row["c"] ** 2 * 9 + 2 * row["c"]
    # dense grows 4x per doubling, MGIC about 2x: the ratio keeps growing
    ratios = [row["MACs ratio"] for row in rows]
    assert ratios == sorted(ratios) and ratios[-1] > 50
    assert rows[-1]["dense MACs [M]"] == pytest.approx(1024 * 1024 * 9 * 32 * 32 / 1e6)


def test_command_writes_table_csv_and_plot(tmp_path, capsys):
    assert run(["--out", str(tmp_path), "--widths", "64", "128"]) == 0
    for name in ("scaling.md", "scaling.csv", "scaling.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "scaling.csv").read_text().count("\n") == 3
    assert "| 128 |" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [(["--widths", "0"], "`--widths`"), (["--group-size", "-1"], "`--group-size`")])
def test_bad_options_name_the_option(tmp_path, argv, message):
    with pytest.raises(ValueError, match=message):
        run(["--out", str(tmp_path), *argv])


def test_out_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "file"
    target.write_text("keep me")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        run(["--out", str(target)])
    assert target.read_text() == "keep me"

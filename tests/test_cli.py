import subprocess
import sys

from mgic_geo.cli import main


def test_help_lists_the_commands(capsys):
    try:
        main(["experiment", "--help"])
    except SystemExit as exit:
        assert exit.code == 0
    out = capsys.readouterr().out
    assert "reconstruction" in out and "scaling" in out


def test_bad_input_is_an_error_message_not_a_traceback(tmp_path, capsys):
    assert main(["experiment", "scaling", "--out", str(tmp_path), "--widths", "-3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mgic-geo: error: `--widths` must be a positive integer, got -3")
    assert "Traceback" not in err


def test_console_script_runs_an_experiment(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mgic_geo.cli", "experiment", "scaling", "--out", str(tmp_path), "--widths", "32"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "scaling.md").exists()


def test_version(capsys):
    from mgic_geo import __version__

    try:
        main(["--version"])
    except SystemExit as exit:
        assert exit.code == 0
    assert capsys.readouterr().out.strip() == f"mgic-geo {__version__}"

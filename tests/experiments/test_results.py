"""``mgic-geo experiment results``: the plan's commands, and the report read back from run folders
(a real tiny fit's logs, so the metric names are the ones Lightning writes)."""
import json
import shlex

import pytest

from mgic_geo.cli import main
from mgic_geo.experiments import results


def test_every_planned_run_names_an_existing_config_and_a_registered_model():
    from mgic_geo.models import list_models

    for plan, runs in results.PLANS.items():
        assert len({run.name for run in runs}) == len(runs), plan
        for run in runs:
            assert (results.Path(__file__).resolve().parents[2] / run.config).is_file(), run.config
            assert run.model in list_models()


def test_fit_command_carries_budget_epochs_root_and_threads_free_overrides(tmp_path):
    run = next(r for r in results.PLANS["modelnet10"] if r.name == "mgic_diffgcn_derivative")
    command = results.fit_command(run, root=tmp_path / "r", data_root="DATA", cache_dir="CACHE")
    text = shlex.join(command)
    assert "--trainer.max_time 00:00:15:00" in text and "--trainer.max_epochs 3" in text
    assert "--data.init_args.root DATA" in text and "--data.init_args.cache_dir CACHE" in text
    assert "operator_scale: derivative" in text


def test_unknown_run_and_missing_arguments_are_clear_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown run"):
        results.run_plan("modelnet10", ["nope"], runs=tmp_path, data_root=str(tmp_path), threads=1, cache_dir=None)
    assert main(["experiment", "results", "--runs", str(tmp_path)]) == 2
    assert "nothing to do" in capsys.readouterr().err
    assert main(["experiment", "results", "--plan", "modelnet10", "--run", "all", "--data-root",
                 str(tmp_path / "none")]) == 2
    assert "--data-root" in capsys.readouterr().err


def test_report_from_a_real_tiny_fit(tmp_path, monkeypatch):
    import yaml

    for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):  # seed_everything sets them: undo after the test
        monkeypatch.setenv(name, "0")
        monkeypatch.delenv(name)
    root = tmp_path / "runs" / "modelnet10" / "mgic_diffgcn"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "seed_everything": 0,
        "trainer": {"default_root_dir": str(root), "max_epochs": 2, "accelerator": "cpu", "devices": 1,
                    "enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 5},
        "model": {"class_path": "mgic_geo.training.PointCloudClassifier", "init_args": {
            "model": "mgic_diffgcn", "model_kwargs": {"k": 10}, "optimizer": "adam", "lr": 0.003, "min_lr": 0.0003}},
        "data": {"class_path": "mgic_geo.data.ModelNet10DataModule", "init_args": {
            "root": str(tmp_path / "synthetic"), "source": "synthetic", "synthetic_shapes": [10, 2], "num_points": 128,
            "batch_size": 16, "augment": False, "val_fraction": 0.2}},
    }))
    assert main(["fit", "--config", str(config)]) == 0
    (root / "run_info.json").write_text(json.dumps({
        "name": "mgic_diffgcn", "model": "mgic_diffgcn", "config": str(config), "recipe": "tiny", "note": "",
        "command": ["-m", "mgic_geo.cli", "fit", "--config", str(config)], "epochs_planned": 3,
        "budget_minutes": 1.0, "wall_seconds": 12.0, "threads": 1, "exit_status": 0, "device": "CPU",
        "data_root": "synthetic"}))
    epochs = results.read_epochs(root)
    assert [e["epoch"] for e in epochs] == [0, 1] and all("val/overall_acc" in e for e in epochs)
    row = results.result_row("modelnet10", root)
    assert row["epochs done / planned"] == "2 / 3" and row["params [M]"] == 0.091 and row["steps"] > 0
    assert row["val overall_acc [%] (last)"] == f"{100 * epochs[-1]['val/overall_acc']:.1f}"
    path = results.write_report(tmp_path / "runs", tmp_path / "docs")
    text = path.read_text()
    assert "| mgic_diffgcn | mgic_diffgcn | 0.091 |" in text
    assert "Stopped by the wall-clock budget before the planned epochs" in text  # 2 of 3 epochs
    assert "validation split" in text and "OMP_NUM_THREADS=1 mgic-geo fit --config" in text


def test_train_samples_per_second_is_the_median_of_the_logged_rates(tmp_path):
    logs = tmp_path / "logs" / "version_0"
    logs.mkdir(parents=True)
    (logs / "metrics.csv").write_text("epoch,step,train/device/samples_per_sec,val/overall_acc\n"
                                      "0,19,60.0,\n0,39,80.0,\n0,39,,0.5\n1,59,70.0,\n")
    assert results._samples_per_second(tmp_path) == "70.0"
    assert results._samples_per_second(tmp_path / "missing") == "-"
    (logs / "metrics.csv").write_text("epoch,step,val/overall_acc\n0,9,0.5\n")  # a run from before the monitor
    assert results._samples_per_second(tmp_path) == "-"

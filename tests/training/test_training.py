"""``mgic-geo fit / test / validate`` end to end on generated shapes: checkpoints, logs, resume,
test_results.json, DDP on two CPU processes, and the CLI's error messages. All outputs go to tmp_path."""
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mgic_geo.cli import main


def write_config(path: Path, tmp_path: Path, **overrides) -> Path:
    """A tiny fit of ``mgic_diffgcn``, the Table-6 network, on synthetic data (chance: 0.1)."""
    config = {
        "seed_everything": 0,
        "trainer": {
            "default_root_dir": str(tmp_path / "run"),
            "max_epochs": 6,
            "accelerator": "cpu",
            "devices": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "log_every_n_steps": 5,
        },
        "model": {"class_path": "mgic_geo.training.PointCloudClassifier", "init_args": {
            "model": "mgic_diffgcn",
            "model_kwargs": {"k": 10, "dropout": 0.0},
            "optimizer": "adam",
            "lr": 0.003,
            "min_lr": 0.0003,
            "weight_decay": 0.0,
        }},
        "data": {"class_path": "mgic_geo.data.ModelNet10DataModule", "init_args": {
            "root": str(tmp_path / "synthetic"),
            "source": "synthetic",
            "synthetic_shapes": [20, 5],
            "num_points": 128,
            "batch_size": 16,
            "augment": False,
        }},
        "checkpoint": {"every_n_epochs": 3},
    }
    for key, value in overrides.items():
        if "." not in key:
            config[key] = value
            continue
        section, name = key.split(".", 1)
        config[section].get("init_args", config[section])[name] = value
    path.write_text(yaml.safe_dump(config))
    return path


def read_metrics(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def error_line(stderr: str) -> str:
    """The ``mgic-geo: error:`` line of ``stderr`` (Lightning logs "Seed set to 0" before it)."""
    return next((line for line in stderr.splitlines() if line.startswith("mgic-geo: error:")), stderr)


def finished_epochs(checkpoint: Path) -> int:
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    return state["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]


def test_fit_test_validate_and_resume(tmp_path, restore_env, capsys):
    from mgic_geo.training import PointCloudClassifier, collect_test_results

    config = write_config(tmp_path / "tiny.yaml", tmp_path)
    run = tmp_path / "run"
    assert main(["fit", "--config", str(config)]) == 0

    checkpoints = run / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "epoch002.ckpt", "epoch005.ckpt", "last.ckpt"]
    assert finished_epochs(checkpoints / "last.ckpt") == 6
    fit_logs = run / "logs" / "version_0"
    assert (fit_logs / "config.yaml").is_file() and (fit_logs / "hparams.yaml").is_file()
    assert list(fit_logs.glob("events.out.tfevents.*")), "no TensorBoard event file"
    rows = read_metrics(fit_logs / "metrics.csv")
    val_epochs = [int(r["epoch"]) for r in rows if r.get("val/overall_acc")]
    assert val_epochs == [0, 1, 2, 3, 4, 5]  # the held-out validation split (20 shapes) every epoch
    assert all(r.get("val/mean_class_acc") for r in rows if r.get("val/overall_acc"))
    # Lightning's ThroughputMonitor: samples per second over the last 20 batches, data loading included
    rates = [float(r["train/device/samples_per_sec"]) for r in rows if r.get("train/device/samples_per_sec")]
    assert rates and all(rate > 0 for rate in rates)
    # best.ckpt: the first epoch with the highest validation accuracy
    accuracy = [float(r["val/overall_acc"]) for r in rows if r.get("val/overall_acc")]
    best_epoch = accuracy.index(max(accuracy))
    assert finished_epochs(checkpoints / "best.ckpt") == best_epoch + 1

    # test the last checkpoint: test_results.json in the test run's log dir
    assert main(["test", "--config", str(config), "--ckpt_path", "last"]) == 0
    results_path = run / "logs" / "version_1" / "test_results.json"
    results = json.loads(results_path.read_text())
    assert results["model"] == "mgic_diffgcn" and results["epochs"] == 6 and results["num_test_samples"] == 50
    assert results["overall_accuracy"] >= 0.3, results  # chance is 0.1
    assert 0.0 < results["mean_class_accuracy"] <= 1.0
    assert results["source"] == "synthetic" and results["num_points"] == 128 and results["seed"] == 0
    assert results["checkpoint"] == str((checkpoints / "last.ckpt").resolve())
    assert results["precision"] == "32-true" and results["device"] == "cpu" and results["world_size"] == 1
    assert results["params"] == PointCloudClassifier.load_from_checkpoint(checkpoints / "last.ckpt").num_parameters
    assert [r["path"] for r in collect_test_results(tmp_path)] == [str(results_path)]

    # test the best checkpoint: `--ckpt_path best` names best.ckpt in a new process
    assert main(["test", "--config", str(config), "--ckpt_path", "best"]) == 0
    best = json.loads((run / "logs" / "version_2" / "test_results.json").read_text())
    assert best["checkpoint"] == str((checkpoints / "best.ckpt").resolve()) and best["epochs"] == best_epoch + 1
    assert best["num_test_samples"] == 50

    # validate in bf16 autocast on the CPU
    assert main(["validate", "--config", str(config), "--ckpt_path", str(checkpoints / "epoch002.ckpt"),
                 "--trainer.precision", "bf16-mixed"]) == 0

    # resume: the epoch count and the cosine schedule go on from the checkpoint
    assert main(["fit", "--config", str(config), "--ckpt_path", "last", "--trainer.max_epochs", "7"]) == 0
    assert finished_epochs(checkpoints / "last.ckpt") == 7
    assert (checkpoints / "best.ckpt").is_file()  # kept (or improved) by a resumed fit
    rows = read_metrics(run / "logs" / "version_4" / "metrics.csv")
    assert sorted({int(r["epoch"]) for r in rows}) == [6]
    lr = [float(r["lr"]) for r in rows if r.get("lr")]
    assert lr == pytest.approx([0.0003 + (0.003 - 0.0003) * (1 + math.cos(math.pi * 6 / 7)) / 2], rel=1e-5)  # cosine 6/7
    capsys.readouterr()


def test_a_train_only_root_validates_on_held_out_shapes_and_cannot_be_tested(tmp_path, restore_env, capsys):
    """The layout of the shared ModelNet-10 training split: no test/ folders. Fit validates on the held-out
    shapes and keeps best.ckpt; test fails naming the missing folders; without validation no best.ckpt."""
    import shutil
    import warnings

    from mgic_geo.data import CLASSES, write_synthetic_modelnet

    root = write_synthetic_modelnet(tmp_path / "train_only", shapes_per_class=(6, 1))
    (root / "synthetic_modelnet.json").unlink()
    for name in CLASSES:
        shutil.rmtree(root / name / "test")
    config = write_config(tmp_path / "tiny.yaml", tmp_path, **{
        "data.root": str(root), "data.source": "auto", "data.num_points": 64, "trainer.max_epochs": 2})
    assert main(["fit", "--config", str(config)]) == 0
    checkpoints = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]
    rows = read_metrics(tmp_path / "run" / "logs" / "version_0" / "metrics.csv")
    assert [int(r["epoch"]) for r in rows if r.get("val/overall_acc")] == [0, 1]
    assert main(["validate", "--config", str(config), "--ckpt_path", "best"]) == 0
    capsys.readouterr()
    assert main(["test", "--config", str(config), "--ckpt_path", "best"]) == 2
    err = error_line(capsys.readouterr().err)
    assert err.startswith(f"mgic-geo: error: ModelNet-10 data root {str(root)!r}: no test split: missing the folders "
                          f"{root / 'bathtub' / 'test'}, {root / 'bed' / 'test'}"), err

    # no validation split: nothing to choose by, so no best.ckpt (a fresh fit drops the earlier run's), no
    # warning about the metric, and `best` is an error
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["fit", "--config", str(config), "--data.val_fraction", "0", "--trainer.max_epochs", "1"]) == 0
    assert not [w for w in caught if "monitor" in str(w.message)], [str(w.message) for w in caught]
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt"]
    capsys.readouterr()
    assert main(["test", "--config", str(config), "--ckpt_path", "best"]) == 2
    assert error_line(capsys.readouterr().err).startswith(
        f"mgic-geo: error: --ckpt_path best: no {checkpoints / 'best.ckpt'} (a fit writes it")


def test_ddp_on_two_cpu_processes_torchrun_fit_and_lightning_launched_test(tmp_path):
    config = write_config(tmp_path / "ddp.yaml", tmp_path, **{
        "data.synthetic_shapes": [5, 1], "data.num_points": 64, "data.batch_size": 8,
        "trainer.max_epochs": 1, "trainer.log_every_n_steps": 1})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PL_", "RANK", "LOCAL_RANK", "WORLD_SIZE"))}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "mgic_geo.cli", "fit", "--config", str(config), "--trainer.accelerator", "cpu",
               "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.max_epochs", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Starting with 2 processes" in output, output[-4000:]
    assert "GLOBAL_RANK: 0" in output and "GLOBAL_RANK: 1" in output, output[-4000:]
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert finished_epochs(checkpoint) == 1
    # 50 shapes in train/, 10 held out for validation: 40 training shapes, 20 per process, 2 steps of 8 per process
    assert torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"] == 2

    # test on two processes started by Lightning itself (no torchrun): rank 0 writes the results
    command = [sys.executable, "-m", "mgic_geo.cli", "test", "--config", str(config), "--ckpt_path", "last",
               "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    results = json.loads(next((tmp_path / "run").rglob("test_results.json")).read_text())
    assert results["world_size"] == 2 and results["num_test_samples"] == 10 and results["epochs"] == 1


def test_missing_config_file_is_an_error_naming_it(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert main(["fit", "--config", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mgic-geo: error: config file not found: {missing}") and "Traceback" not in err


def test_missing_checkpoint_is_an_error(tmp_path, capsys):
    config = write_config(tmp_path / "tiny.yaml", tmp_path)
    assert main(["test", "--config", str(config), "--ckpt_path", str(tmp_path / "none.ckpt")]) == 2
    assert capsys.readouterr().err.startswith("mgic-geo: error: checkpoint not found:")


def test_unknown_model_lists_the_available_ones(tmp_path, restore_env, capsys):
    from mgic_geo.models import list_models

    config = write_config(tmp_path / "tiny.yaml", tmp_path)
    assert main(["fit", "--config", str(config), "--model.model", "pointnet"]) == 2
    err = capsys.readouterr().err
    assert error_line(err).startswith("mgic-geo: error: unknown model 'pointnet'; available models:")
    assert all(name in err for name in list_models())
    assert not (tmp_path / "run").exists()


def test_bad_model_kwarg_and_bad_data_root_are_one_line_errors(tmp_path, restore_env, capsys):
    config = write_config(tmp_path / "tiny.yaml", tmp_path)
    assert main(["fit", "--config", str(config), "--model.model_kwargs", "{width: 3}"]) == 2
    assert "takes no argument(s) 'width'" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["fit", "--config", str(config), "--data.source", "meshes", "--data.root", str(empty)]) == 2
    err = capsys.readouterr().err
    assert error_line(err).startswith(f"mgic-geo: error: ModelNet-10 data root {str(empty)!r}")


def test_bad_override_is_lightning_cli_usage_error(tmp_path, capsys):
    config = write_config(tmp_path / "tiny.yaml", tmp_path)
    with pytest.raises(SystemExit) as exit:
        main(["fit", "--config", str(config), "--trainer.max_epochs", "many"])
    assert exit.value.code == 2
    assert "max_epochs" in capsys.readouterr().err


def test_help_lists_the_lightning_commands(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("fit", "validate", "test"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 AMP (16-mixed) needs a CUDA device")
def test_fp16_amp_fit_on_cuda(tmp_path, restore_env):
    config = write_config(tmp_path / "cuda.yaml", tmp_path, **{"trainer.accelerator": "cuda", "trainer.max_epochs": 1,
                                                               "trainer.precision": "16-mixed"})
    assert main(["fit", "--config", str(config)]) == 0
    assert main(["test", "--config", str(config), "--ckpt_path", "last"]) == 0
    results = json.loads(next((tmp_path / "run").rglob("test_results.json")).read_text())
    assert results["precision"] == "16-mixed" and results["device"].startswith("cuda")

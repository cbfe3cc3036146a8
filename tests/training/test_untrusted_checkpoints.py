"""Untrusted checkpoints on every path that loads one (docs/reliability.md, section 3): ``mgic-geo
test | validate | fit --ckpt_path``, ``RegistryTask.load_from_checkpoint``, ``load_classifier``,
``mgic-geo predict`` and released weights. Each bad file ends in one line naming the file and what was
expected, and nothing is evaluated, built or written: weights holding NaN or inf, ``--ckpt_path
last`` / ``best`` with no checkpoint, hyperparameters asking for a bigger network than the weights,
pickled payloads, raw pickles and truncated files (one message on every path). Checkpoints are
written with the mode the umask gives. The checkpoints are made here from an untrained tiny network,
not by a fit, so that these tests take seconds.
"""
import os
import pickle
import re
import resource
import stat
from pathlib import Path

import lightning
import pytest
import torch
import yaml

from mgic_geo.cli import main
from mgic_geo.inference import load_classifier
from mgic_geo.models.weights_file import load_release_bytes
from mgic_geo.state_checks import MAX_NUM_CLASSES
from mgic_geo.training import PointCloudClassifier
from mgic_geo.training.fault import CheckpointError, SafeCheckpointIO

MODEL = {"model": "mgic_diffgcn", "model_kwargs": {"k": 4, "dropout": 0.0}, "optimizer": "adam", "lr": 0.003,
         "min_lr": 0.0003, "weight_decay": 0.0}
SHAPES = (2, 1)  # per class in train/ and test/


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one intra-op thread, as the subprocesses have


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    from mgic_geo.data import write_synthetic_modelnet

    root = tmp_path_factory.mktemp("shapes")
    write_synthetic_modelnet(root, shapes_per_class=SHAPES, seed=0)
    return root


@pytest.fixture(scope="module")
def good() -> dict:
    """A Lightning checkpoint (as ``mgic-geo fit`` writes one) of an untrained tiny classifier."""
    torch.manual_seed(0)
    task = PointCloudClassifier(**MODEL)
    return {"state_dict": task.state_dict(), "pytorch-lightning_version": lightning.__version__, "epoch": 0,
            "global_step": 0, "hyper_parameters": {**dict(task.hparams),
                                                   "_class_path": "mgic_geo.training.PointCloudClassifier"}}


def write_config(tmp_path: Path, data_root: Path) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {"default_root_dir": str(tmp_path / "run"), "max_epochs": 1, "accelerator": "cpu", "devices": 1,
                    "precision": "32-true", "enable_progress_bar": False, "enable_model_summary": False,
                    "logger": False},
        "model": {"class_path": "mgic_geo.training.PointCloudClassifier", "init_args": MODEL},
        "data": {"class_path": "mgic_geo.data.ModelNet10DataModule", "init_args": {
            "root": str(data_root), "source": "synthetic", "synthetic_shapes": list(SHAPES), "num_points": 32,
            "batch_size": 10, "augment": False}},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def error_line(text: str) -> str:
    return next((line for line in text.splitlines() if line.startswith("mgic-geo: error:")), text[-2000:])


def refused_everywhere(path: Path, expected: str, config: Path, capsys, *, tmp_path: Path,
                       commands=("test", "validate", "fit")) -> None:
    """``expected`` (a message naming ``path``) from each CLI command, the Python loaders and
    ``mgic-geo predict``, with exit status 2, no traceback, and no results or predictions written."""
    for command in commands:
        assert main([command, "--config", str(config), "--ckpt_path", str(path)]) == 2, command
        err = capsys.readouterr().err
        assert error_line(err) == f"mgic-geo: error: {expected}", (command, err[-3000:])
        assert "Traceback" not in err
    with pytest.raises(CheckpointError) as error:
        PointCloudClassifier.load_from_checkpoint(path, weights_only=False)
    assert str(error.value) == expected
    with pytest.raises(ValueError) as error:
        load_classifier(path)
    assert str(error.value) == expected
    out = tmp_path / "predicted.csv"
    assert main(["predict", "--ckpt", str(path), "--synthetic", "2", "--num-points", "32", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert error_line(err) == f"mgic-geo: error: `--ckpt` {expected}" and "Traceback" not in err
    assert not out.exists()
    assert not list(tmp_path.rglob("test_results.json")) and not (tmp_path / "run" / "checkpoints").exists()


# -- item 1: non-finite weights -------------------------------------------------------------------
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_weights_are_refused_on_every_load_path_naming_the_tensor(tmp_path, shapes, good, capsys,
                                                                            restore_env, value):
    config = write_config(tmp_path, shapes)
    name = "net.head.8.weight"  # the classifier's
    poisoned = {**good, "state_dict": dict(good["state_dict"])}
    poisoned["state_dict"][name] = poisoned["state_dict"][name].clone()
    poisoned["state_dict"][name].view(-1)[3] = value
    path = tmp_path / "poisoned.ckpt"
    torch.save(poisoned, path)
    expected = f"{path}: refused: 1 tensor(s) hold NaN or inf: {name}"
    refused_everywhere(path, expected, config, capsys, tmp_path=tmp_path)

    # `--ckpt_path last` reads through SafeCheckpointIO: test, validate and resume refuse it too
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    last = folder / "last.ckpt"
    torch.save(poisoned, last)
    for command in ("test", "validate", "fit"):
        assert main([command, "--config", str(config), "--ckpt_path", "last"]) == 2, command
        err = capsys.readouterr().err
        assert error_line(err) == f"mgic-geo: error: {last}: refused: 1 tensor(s) hold NaN or inf: {name}", err[-3000:]
    assert not list(tmp_path.rglob("test_results.json")) and sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]


# -- item 2: --ckpt_path last / best without a checkpoint ----------------------------------------
@pytest.mark.parametrize("command", ["test", "validate"])
def test_last_or_best_without_a_checkpoint_is_an_error_naming_the_folder(tmp_path, shapes, capsys, restore_env,
                                                                         command):
    config = write_config(tmp_path, shapes)
    folder = tmp_path / "run" / "checkpoints"
    assert main([command, "--config", str(config), "--ckpt_path", "last"]) == 2
    err = capsys.readouterr().err
    assert error_line(err) == (
        f"mgic-geo: error: --ckpt_path last: no checkpoint to {command}: no last*.ckpt in {folder} (mgic-geo fit with "
        "this configuration writes last.ckpt there); nothing was evaluated"), err[-3000:]
    assert main([command, "--config", str(config), "--ckpt_path", "best"]) == 2
    assert error_line(capsys.readouterr().err).startswith(f"mgic-geo: error: --ckpt_path best: no {folder}/best.ckpt (")
    assert not list(tmp_path.rglob("test_results.json"))


# -- item 3: hyperparameters that do not fit the weights ------------------------------------------
def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("num_classes", [4_000_000, 2_000_000_000])
def test_a_huge_num_classes_is_refused_before_anything_is_built(tmp_path, shapes, good, capsys, restore_env,
                                                                num_classes):
    config = write_config(tmp_path, shapes)
    path = tmp_path / "huge.ckpt"
    torch.save({**good, "hyper_parameters": {**good["hyper_parameters"], "num_classes": num_classes}}, path)
    before = max_rss_mib()
    expected = (f"{path}: its hyperparameters give num_classes={num_classes}, expected an integer from 2 to "
                f"{MAX_NUM_CLASSES}; nothing was built")
    refused_everywhere(path, expected, config, capsys, tmp_path=tmp_path)
    assert max_rss_mib() - before < 200  # a 4,000,000-class head of 64 inputs alone is 1 GB of float32 weights


def test_hparams_asking_for_a_bigger_network_than_the_weights_are_refused_unbuilt(tmp_path, shapes, good, capsys,
                                                                                  restore_env):
    config = write_config(tmp_path, shapes)
    path = tmp_path / "wider.ckpt"
    hparams = {**good["hyper_parameters"], "num_classes": MAX_NUM_CLASSES}
    torch.save({**good, "hyper_parameters": hparams}, path)
    kwargs = {"k": 4, "dropout": 0.0}
    for command in ("test", "fit"):
        assert main([command, "--config", str(config), "--ckpt_path", str(path)]) == 2
        line = error_line(capsys.readouterr().err)
        assert line.startswith(f"mgic-geo: error: {path}: the checkpoint does not fit PointCloudClassifier("
                               f"model='mgic_diffgcn', model_kwargs={kwargs!r}): 2 shape mismatches (net."), line
        assert re.search(rf"\[10, \d+\] in the checkpoint vs \[{MAX_NUM_CLASSES}, \d+\] in the model", line), line
        assert line.endswith("; nothing was built")
    with pytest.raises(CheckpointError, match=rf"^{path}: the checkpoint does not fit PointCloudClassifier\(model="
                                              r"'mgic_diffgcn', .* \(it was saved from model='mgic_diffgcn', .*"
                                              r"2 shape mismatches \(net\."):
        PointCloudClassifier.load_from_checkpoint(path)
    with pytest.raises(ValueError, match=rf"^{path}: its weights do not fit 'mgic_diffgcn' built from its "
                                         r"hyperparameters: 2 shape mismatches \(net\..*; nothing was built$"):
        load_classifier(path)


def test_a_tensor_claiming_more_elements_than_the_file_stores_is_refused(tmp_path, shapes, good, capsys,
                                                                         restore_env):
    config = write_config(tmp_path, shapes)
    name = next(k for k, v in good["state_dict"].items() if v.dim() == 2)
    real = good["state_dict"][name]
    expanded = {**good, "state_dict": {**good["state_dict"], name: real[0].clone().expand(real.shape)}}
    path = tmp_path / "expanded.ckpt"
    torch.save(expanded, path)
    expected = (f"{path}: refused: 1 tensor(s) claim more elements than the file stores for them: "
                f"{name} {list(real.shape)}")
    refused_everywhere(path, expected, config, capsys, tmp_path=tmp_path, commands=("test",))


# -- item 4: pickled payloads, raw pickles and truncated files: one message on every path -------------
class Payload:
    """Unpickling this runs a shell command (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


SAFE = "(checkpoints are read with torch.load(weights_only=True))"


def bad_files(folder: Path, good: dict, marker: Path) -> dict[str, str]:
    """Files that are not checkpoints, by name, and the one message every path gives for each."""
    evil = {**good, "payload": Payload(marker)}
    torch.save(evil, folder / "zip_payload.ckpt")
    torch.save(evil, folder / "legacy_payload.ckpt", _use_new_zipfile_serialization=False)
    with open(folder / "raw.pkl", "wb") as file:
        pickle.dump(evil, file)  # protocol 5, as pickle writes today
    torch.save(good, folder / "whole.ckpt")
    data = (folder / "whole.ckpt").read_bytes()
    (folder / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    global_ = ("refused to load: the file holds a pickled reference to posix.system, which is neither weights nor "
               f"plain data, and unpickling it could run code {SAFE}")
    return {
        "zip_payload.ckpt": global_,
        "legacy_payload.ckpt": global_,
        "raw.pkl": ("refused to load: a raw pickle, not a zip archive as torch.save writes, with pickle features that "
                    "torch.load(weights_only=True) does not accept (UnpicklingError: Unsupported operand 149); it "
                    f"was not unpickled, as that could run code {SAFE}"),
        "truncated.ckpt": ("not a readable checkpoint (RuntimeError: PytorchStreamReader failed reading zip archive: "
                           "failed finding central directory; the file is damaged or truncated)"),
    }


@pytest.mark.parametrize("name", ["zip_payload.ckpt", "legacy_payload.ckpt", "raw.pkl", "truncated.ckpt"])
def test_pickled_and_damaged_files_give_one_message_on_every_path(tmp_path, shapes, good, capsys, restore_env, name):
    config = write_config(tmp_path, shapes)
    marker = tmp_path / "pwned"
    folder = tmp_path / "files"
    folder.mkdir()
    path = folder / name
    expected = f"{path}: {bad_files(folder, good, marker)[name]}"
    refused_everywhere(path, expected, config, capsys, tmp_path=tmp_path, commands=("test", "fit"))
    with pytest.raises(ValueError) as error:  # a released weights file's bytes
        load_release_bytes(path.read_bytes(), path)
    assert str(error.value) == expected.replace("checkpoints are read", "weights are read").replace(
        "readable checkpoint", "readable weights file")
    assert not marker.exists()


def test_no_message_repeats_the_advice_to_load_with_weights_only_false(tmp_path, good):
    from mgic_geo.state_checks import load_error_message

    marker = tmp_path / "pwned"
    bad_files(tmp_path, good, marker)
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with open(tmp_path / "plain.pkl", "wb") as file:
        pickle.dump({"state_dict": {}}, file, protocol=2)
    torch.save({"module": torch.nn.ReLU()}, tmp_path / "module.ckpt")
    messages, advised = [], 0
    for path in sorted(tmp_path.iterdir()):
        if path.name == "whole.ckpt":
            continue
        with pytest.raises(Exception) as error:
            torch.load(path, weights_only=True)
        advised += bool(re.search(r"weights_only.{0,20}False", str(error.value)))  # what torch says
        message = load_error_message(path, error.value, kind="checkpoint", plural="checkpoints")
        messages.append(message)
        assert message.startswith(f"{path}: ") and "\n" not in message
        assert not re.search(r"False|trusted source|safe_globals|file an issue", message), message
    assert len(messages) == 8 and advised >= 5 and not marker.exists()


# -- item 5: the umask -----------------------------------------------------------------------------
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_checkpoints_and_releases_follow_the_umask(tmp_path, good, umask, mode):
    from mgic_geo.models.release import _write_atomically

    previous = os.umask(umask)
    try:
        SafeCheckpointIO().save_checkpoint(good, tmp_path / "last.ckpt")
        _write_atomically(tmp_path / "release.json", lambda file: file.write(b"{}"))
        with open(tmp_path / "plain.ckpt", "wb") as file:  # what torch.save to a path gives
            torch.save(good, file)
    finally:
        os.umask(previous)
    for name in ("last.ckpt", "release.json", "plain.ckpt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name

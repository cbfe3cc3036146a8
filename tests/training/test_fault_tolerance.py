"""Fault tolerance of ``mgic-geo fit`` (:mod:`mgic_geo.training.fault`): a real ``fit`` killed with
SIGKILL at a random point resumes to the weights and metrics of an uninterrupted run; checkpoints
survive a crash while writing; SIGTERM / SIGUSR1 save ``last.ckpt``; NaN losses stop or are skipped;
checkpoints that pickle code or belong to another model are refused. All outputs go to tmp_path.

The figures quoted in docs/reliability.md are printed: ``pytest tests/training/test_fault_tolerance.py -s``.
"""
import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from mgic_geo.cli import main

STEPS_PER_EPOCH = 6  # 60 training clouds (6 per class), batches of 10
TRAIN_SHAPES = STEPS_PER_EPOCH + 1  # per class in train/: the data module holds one of each class out for validation
PROBE = '''
import os
from lightning.pytorch.callbacks import Callback


class StepProbe(Callback):
    """Appends "<pid> <global step> <epoch>" after every training step, for the test to time its signals."""

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_end(self, trainer, *args):
        with open(self.path, "a") as file:
            file.write(f"{os.getpid()} {trainer.global_step} {trainer.current_epoch}\\n")
'''


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one intra-op thread, as the subprocesses have


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """One synthetic ModelNet-10 root shared by the runs (written once: concurrent runs must not race)."""
    from mgic_geo.data import write_synthetic_modelnet

    root = tmp_path_factory.mktemp("shapes")
    write_synthetic_modelnet(root, shapes_per_class=(TRAIN_SHAPES, 1), seed=0)
    return root


def write_config(path: Path, run: Path, data_root: Path, *, epochs: int = 4, probe: Path | None = None,
                 **model) -> Path:
    """A tiny seeded ``mgic_diffgcn`` fit with augmentation and dropout, so that resuming must restore
    the shuffle and the random state, not only the weights."""
    config = {
        "seed_everything": 0,
        "trainer": {"default_root_dir": str(run), "max_epochs": epochs, "accelerator": "cpu", "devices": 1,
                    "precision": "32-true", "enable_progress_bar": False, "enable_model_summary": False,
                    "log_every_n_steps": 1},
        "model": {"class_path": "mgic_geo.training.PointCloudClassifier", "init_args": {
            "model": "mgic_diffgcn", "model_kwargs": {"k": 8, "dropout": 0.5}, "optimizer": "adam", "lr": 0.003,
            "min_lr": 0.0003, "weight_decay": 0.0, **model}},
        "data": {"class_path": "mgic_geo.data.ModelNet10DataModule", "init_args": {
            "root": str(data_root), "source": "synthetic", "synthetic_shapes": [TRAIN_SHAPES, 1], "num_points": 64,
            "batch_size": 10, "augment": True}},
    }
    if probe is not None:
        config["trainer"]["callbacks"] = [{"class_path": "fault_probe.StepProbe", "init_args": {"path": str(probe)}}]
    path.write_text(yaml.safe_dump(config))
    return path


def fit_process(config: Path, tmp_path: Path, *extra: str) -> subprocess.Popen:
    """A real ``mgic-geo fit`` in its own process (one thread, so that its sums are deterministic)."""
    (tmp_path / "fault_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PL_", "RANK", "LOCAL_RANK", "WORLD_SIZE"))}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
               PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    return subprocess.Popen([sys.executable, "-m", "mgic_geo.cli", "fit", "--config", str(config), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out + err


def probed(probe: Path, pid: int) -> tuple[int, int] | None:
    """The last ``(global step, epoch)`` process ``pid`` reported, if any."""
    if not probe.is_file():
        return None
    lines = [line.split() for line in probe.read_text().splitlines()]
    steps = [(int(step), int(epoch)) for owner, step, epoch in (line for line in lines if len(line) == 3)
             if int(owner) == pid]
    return steps[-1] if steps else None


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def max_difference(a, b) -> float:
    """Largest absolute difference between two nested checkpoint structures of equal shape (tensors,
    numbers, containers); ``inf`` where their structure differs."""
    if torch.is_tensor(a) and torch.is_tensor(b):
        if a.shape != b.shape or a.dtype != b.dtype:
            return float("inf")
        if not a.is_floating_point():
            return 0.0 if torch.equal(a, b) else float("inf")
        return float((a - b).abs().max()) if a.numel() else 0.0
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return float("inf")
        return max((max_difference(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return float("inf")
        return max((max_difference(x, y) for x, y in zip(a, b)), default=0.0)
    return 0.0 if a == b else float("inf")


# Logged by Lightning's ThroughputMonitor per stage (train/..., validate/...): wall-clock times and
# rates, which no two runs share, and its counters.
THROUGHPUT = {"time", "batches", "samples", "batches_per_sec", "samples_per_sec"}


def metrics_rows(run: Path, version: int | None = None) -> list[dict]:
    """The metrics.csv rows of ``run``'s last (or ``version``) log folder, empty cells and the
    throughput monitor's timings left out (and the rows that held only those)."""
    folders = sorted((run / "logs").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    folder = folders[-1] if version is None else run / "logs" / f"version_{version}"
    with open(folder / "metrics.csv", newline="") as file:
        rows = [{k: v for k, v in row.items() if v and k.split("/")[-1] not in THROUGHPUT}
                for row in csv.DictReader(file)]
    return [row for row in rows if set(row) - {"step"}]


def error_line(text: str) -> str:
    return next((line for line in text.splitlines() if line.startswith("mgic-geo:")), text[-2000:])


# -- 1. kill and resume ---------------------------------------------------------------------------
KILLS = 2
EPOCHS = 5


def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run(tmp_path, shapes, restore_env, capsys):
    """Real ``mgic-geo fit`` processes are killed (SIGKILL) at random steps after the first checkpoint;
    the last resume and the uninterrupted reference run in this process (imports paid once)."""
    seed = random.SystemRandom().randrange(2**32)
    chooser = random.Random(seed)
    probe = tmp_path / "probe.txt"
    total = EPOCHS * STEPS_PER_EPOCH
    started = time.perf_counter()
    config = write_config(tmp_path / "faulty.yaml", tmp_path / "faulty", shapes, epochs=EPOCHS, probe=probe)
    last = tmp_path / "faulty" / "checkpoints" / "last.ckpt"
    faults = []
    while len(faults) < KILLS:
        resumed_at = load(last)["global_step"] if last.is_file() else 0
        victim = fit_process(config, tmp_path, *(["--ckpt_path", "last"] if faults else []))
        # a random step after the first checkpoint of the run and at least one step into this process
        target = chooser.randint(max(resumed_at, STEPS_PER_EPOCH) + 1, total - 2)
        while (probed(probe, victim.pid) or (0, 0))[0] < target or not last.is_file():
            assert victim.poll() is None, f"the run ended before it could be killed:\n{finish(victim)[1][-3000:]}"
            time.sleep(0.005)
        time.sleep(chooser.uniform(0.0, 0.05))  # anywhere in the step: forward, backward, logging, saving
        victim.kill()  # SIGKILL
        victim.wait()
        killed_step, killed_epoch = probed(probe, victim.pid)
        kept = load(last)  # the previous checkpoint is intact whatever the kill interrupted
        faults.append({"killed_at_step": killed_step, "killed_in_epoch": killed_epoch,
                       "checkpoint_step": kept["global_step"], "lost_steps": killed_step - kept["global_step"]})
        assert 0 <= killed_step - kept["global_step"] <= STEPS_PER_EPOCH, faults  # at most one epoch lost
        assert kept["global_step"] % STEPS_PER_EPOCH == 0, faults  # an end-of-epoch checkpoint
    restore_env.syspath_prepend(str(tmp_path))  # the probe's module, named in the configs
    assert main(["fit", "--config", str(config), "--ckpt_path", "last"]) == 0
    reference = write_config(tmp_path / "reference.yaml", tmp_path / "reference", shapes, epochs=EPOCHS, probe=probe)
    assert main(["fit", "--config", str(reference)]) == 0
    capsys.readouterr()
    elapsed = time.perf_counter() - started

    resumed, uninterrupted = load(last), load(tmp_path / "reference" / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == uninterrupted["global_step"] == total
    assert resumed["state_dict"].keys() == uninterrupted["state_dict"].keys()
    assert all(torch.equal(resumed["state_dict"][k], uninterrupted["state_dict"][k]) for k in resumed["state_dict"])
    weights = max_difference(resumed["state_dict"], uninterrupted["state_dict"])
    optimizer = max_difference(resumed["optimizer_states"], uninterrupted["optimizer_states"])
    assert weights == 0.0 and optimizer == 0.0

    # the last resumed run logged what the uninterrupted run logged for the same epochs, to the bit
    rows = metrics_rows(tmp_path / "faulty")
    first_epoch = int(rows[0]["epoch"])
    expected = [row for row in metrics_rows(tmp_path / "reference") if int(row["epoch"]) >= first_epoch]
    assert rows == expected and any("val/overall_acc" in row for row in rows)
    stale = sorted(p.name for p in last.parent.glob(".*.partial"))
    with capsys.disabled():
        print(f"\n[kill/resume] seed {seed}: {len(faults)} SIGKILLs of real `mgic-geo fit` processes ({EPOCHS} epochs "
              f"x {STEPS_PER_EPOCH} steps, dropout and augmentation on, CPU)")
        for number, fault in enumerate(faults, 1):
            print(f"[kill/resume]   fault {number}: killed after global step {fault['killed_at_step']} (epoch "
                  f"{fault['killed_in_epoch']}); resumed from step {fault['checkpoint_step']}: {fault['lost_steps']} "
                  f"steps = {fault['lost_steps'] / STEPS_PER_EPOCH:.2f} epoch lost")
        print(f"[kill/resume] final weights vs uninterrupted run: {len(resumed['state_dict'])} tensors, max |diff| = "
              f"{weights:g}; optimizer state max |diff| = {optimizer:g}; the {len(rows)} metrics.csv rows of epochs "
              f"{first_epoch}..{EPOCHS - 1} identical; stale partial files: {len(stale)}; wall time {elapsed:.1f} s "
              f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")


@pytest.mark.parametrize("data", ["modelnet_workers", "cifar"])
def test_stopped_and_resumed_run_equals_an_uninterrupted_one(tmp_path, shapes, restore_env, capsys, data):
    """In-process: 3 epochs in one go == 2 epochs, then ``--ckpt_path last`` for the third; the ModelNet
    data through a DataLoader worker, the CIFAR-10 stand-ins with crop and flip in the main process."""
    if data == "cifar":
        config = tmp_path / "cifar.yaml"
        config.write_text(yaml.safe_dump({
            "seed_everything": 0,
            "trainer": {"default_root_dir": str(tmp_path / "run"), "max_epochs": 3, "accelerator": "cpu", "devices": 1,
                        "enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 1},
            "model": {"class_path": "mgic_geo.training.ImageClassifier", "init_args": {
                "model": "mobilenetv3_small", "optimizer": "adam", "lr": 0.003, "weight_decay": 0.0}},
            "data": {"class_path": "mgic_geo.data.CIFAR10DataModule", "init_args": {
                "root": str(tmp_path / "images"), "source": "synthetic", "synthetic_images": [3, 1], "batch_size": 10,
                "image_size": 16}},
        }))
    else:  # the cosine schedule depends on max_epochs, which the first part changes: a constant rate
        config = write_config(tmp_path / "modelnet.yaml", tmp_path / "run", shapes, epochs=3, scheduler="none")
        overrides = yaml.safe_load(config.read_text())
        overrides["data"]["init_args"]["num_workers"] = 1
        config.write_text(yaml.safe_dump(overrides))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert main(["fit", "--config", str(config)]) == 0
    uninterrupted = load(last)
    assert main(["fit", "--config", str(config), "--trainer.max_epochs", "2"]) == 0
    assert load(last)["global_step"] == 2 * uninterrupted["global_step"] // 3
    assert main(["fit", "--config", str(config), "--ckpt_path", "last"]) == 0
    resumed = load(last)
    capsys.readouterr()
    difference = max_difference(resumed["state_dict"], uninterrupted["state_dict"])
    assert resumed["global_step"] == uninterrupted["global_step"] and difference == 0.0
    resumed_rows = metrics_rows(tmp_path / "run", version=2)
    assert resumed_rows == [row for row in metrics_rows(tmp_path / "run", version=0) if row["epoch"] == "2"]
    with capsys.disabled():
        print(f"\n[resume:{data}] 3 epochs vs 2 + resumed 1: max |weight diff| = {difference:g} over "
              f"{len(resumed['state_dict'])} tensors, epoch-2 metrics identical ({len(resumed_rows)} rows)")


# -- 2. atomic checkpoints ------------------------------------------------------------------------
def test_a_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from mgic_geo.training import fault
    from mgic_geo.training.fault import SafeCheckpointIO

    io, path = SafeCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    good = {"state_dict": {"w": torch.arange(4.0)}, "global_step": 3}
    io.save_checkpoint(good, path)
    before = path.read_bytes()

    def crash(checkpoint, file):  # half a checkpoint reaches the disk, then the "disk is full"
        file.write(before[: len(before) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fault.torch, "save", crash)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"state_dict": {"w": torch.ones(4)}, "global_step": 4}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.arange(4.0))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # the partial file is gone


def test_sigkill_while_writing_keeps_the_previous_checkpoint(tmp_path):
    """A child process (forked: torch is loaded already) is killed in the middle of writing."""
    from mgic_geo.training import fault
    from mgic_geo.training.fault import SafeCheckpointIO

    io, path = SafeCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.zeros(1000)}, "global_step": 1}, path)
    before = path.read_bytes()
    child = os.fork()
    if child == 0:  # pragma: no cover  (the child never returns)
        try:
            def stall(checkpoint, file):
                file.write(b"PK\x03\x04" + bytes(5000))
                file.flush()
                time.sleep(60)

            fault.torch.save = stall
            io.save_checkpoint({"state_dict": {"w": torch.ones(1000)}, "global_step": 2}, path)
        finally:
            os._exit(1)
    deadline = time.time() + 30
    while not any(p.stat().st_size > 0 for p in tmp_path.glob(".last.ckpt.*.partial")):
        assert time.time() < deadline, "the child never started writing"
        time.sleep(0.01)
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    partial = list(tmp_path.glob(".last.ckpt.*.partial"))
    assert path.read_bytes() == before and len(partial) == 1
    assert io.load_checkpoint(path)["global_step"] == 1
    print(f"\n[atomic] SIGKILL mid-write: last.ckpt unchanged ({len(before)} bytes), "
          f"{partial[0].stat().st_size}-byte partial file left beside it")


def test_nonfinite_weights_are_never_written(tmp_path):
    from mgic_geo.training.fault import NonFiniteWeightsError, SafeCheckpointIO

    io, path = SafeCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"net.w": torch.ones(2)}}, path)
    with pytest.raises(NonFiniteWeightsError, match=f"refused to write {path}: 1 weight tensor.*net.b"):
        io.save_checkpoint({"state_dict": {"net.w": torch.ones(2), "net.b": torch.tensor([1.0, float("nan")])}}, path)
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["net.w"], torch.ones(2))


# -- 3. pre-emption signals -----------------------------------------------------------------------
def test_sigterm_saves_last_ckpt_at_the_current_step_and_the_run_resumes(tmp_path, shapes, restore_env, capsys):
    probe = tmp_path / "probe.txt"
    config = write_config(tmp_path / "tiny.yaml", tmp_path / "run", shapes, epochs=50, probe=probe)
    process = fit_process(config, tmp_path)
    signalled_at = STEPS_PER_EPOCH + 2  # mid-epoch, after an end-of-epoch checkpoint exists
    while (probed(probe, process.pid) or (0, 0))[0] < signalled_at:
        assert process.poll() is None, finish(process)[1][-3000:]
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    code, output = finish(process)
    line = error_line(output)
    checkpoint = load(tmp_path / "run" / "checkpoints" / "last.ckpt")
    step, epoch = checkpoint["global_step"], checkpoint["epoch"]
    assert code == 128 + signal.SIGTERM, output[-3000:]
    assert "Traceback" not in output
    assert line == (f"mgic-geo: received SIGTERM at epoch {epoch}, global step {step}: saved "
                    f"{tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}; resume with --ckpt_path last")
    assert signalled_at <= step < signalled_at + STEPS_PER_EPOCH  # at the step under way, not an epoch later

    end = epoch + 2
    restore_env.syspath_prepend(str(tmp_path))  # the probe's module, named in the config
    assert main(["fit", "--config", str(config), "--ckpt_path", "last", "--trainer.max_epochs", str(end)]) == 0
    resumed = load(tmp_path / "run" / "checkpoints" / "last.ckpt")
    capsys.readouterr()
    assert resumed["global_step"] == end * STEPS_PER_EPOCH
    assert resumed["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"] == end
    print(f"\n[sigterm] signal after step {signalled_at}: last.ckpt saved at global step {step} (epoch {epoch}, "
          f"{'mid-epoch' if step % STEPS_PER_EPOCH else 'end of epoch'}), exit status {code}; resumed to epoch {end} "
          f"(global step {resumed['global_step']})")


def test_sigusr1_saves_last_ckpt_and_exits_with_its_status(tmp_path, shapes, restore_env, monkeypatch, capsys):
    from mgic_geo.training import PointCloudClassifier

    def send_once(self, outputs, batch, batch_idx):
        if self.global_step == STEPS_PER_EPOCH + 1:
            os.kill(os.getpid(), signal.SIGUSR1)

    monkeypatch.setattr(PointCloudClassifier, "on_train_batch_end", send_once, raising=False)
    before = signal.getsignal(signal.SIGUSR1)
    config = write_config(tmp_path / "tiny.yaml", tmp_path / "run", shapes, epochs=4)
    assert main(["fit", "--config", str(config)]) == 128 + signal.SIGUSR1
    line = error_line(capsys.readouterr().err)
    step = load(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"]
    assert line.startswith(f"mgic-geo: received SIGUSR1 at epoch 1, global step {step}: saved ")
    assert step == STEPS_PER_EPOCH + 2  # the step under way when the signal came (callbacks had run)
    assert signal.getsignal(signal.SIGUSR1) == before  # the handler is removed with the run


# -- 4. numerical faults --------------------------------------------------------------------------
def inject_nan(monkeypatch, steps: set[int]) -> None:
    """Make the network's logits NaN in training at the given global steps."""
    from mgic_geo.training import PointCloudClassifier

    forward = PointCloudClassifier.forward

    def poisoned(self, pos, batch):
        logits = forward(self, pos, batch)
        return logits * float("nan") if self.training and self.global_step in steps else logits

    monkeypatch.setattr(PointCloudClassifier, "forward", poisoned)


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, shapes, restore_env,
                                                                            monkeypatch, capsys):
    bad_step = STEPS_PER_EPOCH + 3
    inject_nan(monkeypatch, {bad_step})
    config = write_config(tmp_path / "tiny.yaml", tmp_path / "run", shapes, epochs=3)
    assert main(["fit", "--config", str(config)]) == 1
    line = error_line(capsys.readouterr().err)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert line.startswith(f"mgic-geo: error: non-finite training loss (nan) at epoch 1, global step {bad_step}; "
                           f"stopped before updating the weights; last good checkpoint: {last} ")
    kept, epoch0 = load(last), load(tmp_path / "run" / "checkpoints" / "epoch000.ckpt")
    assert kept["global_step"] == STEPS_PER_EPOCH and max_difference(kept["state_dict"], epoch0["state_dict"]) == 0
    assert all(torch.isfinite(t).all() for t in kept["state_dict"].values() if t.is_floating_point())
    print(f"\n[nan:stop] NaN injected at global step {bad_step}: {line}")


def test_nan_loss_skip_leaves_the_batches_out_counts_and_warns(tmp_path, shapes, restore_env, monkeypatch, capsys):
    bad_steps = {2, STEPS_PER_EPOCH + 1}
    inject_nan(monkeypatch, bad_steps)
    config = write_config(tmp_path / "tiny.yaml", tmp_path / "run", shapes, epochs=2, nonfinite_loss="skip")
    with pytest.warns(UserWarning, match=r"skipped 2 training batch\(es\) with a non-finite loss .*first at epoch 0, "
                                         r"global step 2"):
        assert main(["fit", "--config", str(config)]) == 0
    capsys.readouterr()
    checkpoint = load(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values() if t.is_floating_point())
    # a skipped batch never reaches the optimiser: Adam counted two steps fewer than Lightning did
    adam_steps = {int(s["step"]) for s in checkpoint["optimizer_states"][0]["state"].values()}
    assert adam_steps == {2 * STEPS_PER_EPOCH - len(bad_steps)}
    logged = [row["skipped_nonfinite_batches"] for row in metrics_rows(tmp_path / "run")
              if "skipped_nonfinite_batches" in row]
    assert logged == ["1.0", "2.0"]  # cumulative, once per epoch
    print(f"\n[nan:skip] NaN injected at global steps {sorted(bad_steps)}: skipped_nonfinite_batches per epoch = "
          f"{logged}; Adam steps {adam_steps.pop()} of {2 * STEPS_PER_EPOCH}")


def test_bad_nonfinite_loss_option_is_named(tmp_path, shapes, restore_env, capsys):
    config = write_config(tmp_path / "tiny.yaml", tmp_path / "run", shapes, epochs=1)
    assert main(["fit", "--config", str(config), "--model.nonfinite_loss", "ignore"]) == 2
    assert error_line(capsys.readouterr().err) == (
        "mgic-geo: error: unknown nonfinite_loss 'ignore'; choose one of: stop, skip (what to do with a batch whose "
        "training loss is NaN or inf)")


# -- 5. untrusted checkpoints ---------------------------------------------------------------------
class Payload:
    """Unpickling this runs a shell command (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_with_a_pickled_payload_is_refused_and_never_runs(tmp_path, shapes, restore_env, capsys):
    from mgic_geo.training import PointCloudClassifier
    from mgic_geo.training.fault import CheckpointError

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"model": "mgic_diffgcn"}, "payload": Payload(marker)}, evil)
    config = write_config(tmp_path / "tiny.yaml", tmp_path / "run", shapes, epochs=1)
    expected = (f"mgic-geo: error: {evil}: refused to load: the file holds a pickled reference to posix.system, "
                "which is neither weights nor plain data, and unpickling it could run code (checkpoints are read "
                "with torch.load(weights_only=True))")
    for command in ("test", "fit"):
        assert main([command, "--config", str(config), "--ckpt_path", str(evil)]) == 2
        err = capsys.readouterr().err
        assert error_line(err) == expected and "Traceback" not in err
    with pytest.raises(CheckpointError) as error:
        PointCloudClassifier.load_from_checkpoint(evil, weights_only=False)  # weights_only=False is overruled
    assert f"mgic-geo: error: {error.value}" == expected
    assert not marker.exists()


def test_a_damaged_checkpoint_is_a_one_line_error(tmp_path, shapes, restore_env, capsys):
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(b"PK\x03\x04" + bytes(100))
    config = write_config(tmp_path / "tiny.yaml", tmp_path / "run", shapes, epochs=1)
    assert main(["test", "--config", str(config), "--ckpt_path", str(damaged)]) == 2
    assert error_line(capsys.readouterr().err).startswith(
        f"mgic-geo: error: {damaged}: not a readable checkpoint (RuntimeError: PytorchStreamReader failed")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shapes) -> tuple[Path, Path]:
    """A one-epoch ``mgic_diffgcn`` checkpoint (group_size 8) and its config."""
    folder = tmp_path_factory.mktemp("trained")
    config = write_config(folder / "tiny.yaml", folder / "run", shapes, epochs=1)
    with pytest.MonkeyPatch.context() as patch:  # what seed_everything puts in os.environ is undone
        for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):
            patch.setenv(name, "0")
            patch.delenv(name)
        assert main(["fit", "--config", str(config)]) == 0
    return folder / "run" / "checkpoints" / "last.ckpt", config


def test_a_checkpoint_of_another_model_or_width_is_refused_listing_the_keys(trained, tmp_path, restore_env, capsys):
    checkpoint, config = trained
    # `last`: the config's model (here changed on the command line) meets the weights of the run's root
    assert main(["test", "--config", str(config), "--ckpt_path", "last", "--model.model", "diffgcn"]) == 2
    err = capsys.readouterr().err
    line = error_line(err)
    assert "Traceback" not in err and line.startswith(
        f"mgic-geo: error: {checkpoint}: the checkpoint does not fit PointCloudClassifier(model='diffgcn', ")
    assert " (it was saved from model='mgic_diffgcn', model_kwargs={" in line
    assert " missing keys (net." in line and " unexpected keys (net." in line and "more)" in line

    wider = "{k: 8, dropout: 0.5, group_size: 16}"
    assert main(["fit", "--config", str(config), "--ckpt_path", "last", "--model.model_kwargs", wider]) == 2
    line = error_line(capsys.readouterr().err)
    assert line.startswith(f"mgic-geo: error: {checkpoint}: the checkpoint does not fit ")
    assert " shape mismatches (net." in line and " in the checkpoint vs " in line and " in the model" in line
    mismatch = line

    # a named file: LightningCLI rebuilds the model from the checkpoint's hyperparameters; without them,
    # the config's model is checked against the weights
    bare = tmp_path / "bare.ckpt"
    torch.save({k: v for k, v in load(checkpoint).items() if k != "hyper_parameters"}, bare)
    assert main(["test", "--config", str(config), "--ckpt_path", str(bare), "--model.model", "diffgcn"]) == 2
    assert error_line(capsys.readouterr().err).startswith(
        f"mgic-geo: error: {bare}: the checkpoint does not fit PointCloudClassifier(model='diffgcn', ")
    print(f"\n[mismatch] {mismatch}")


def test_python_api_refuses_a_mismatched_checkpoint_without_a_partial_load(trained):
    from mgic_geo.training import PointCloudClassifier
    from mgic_geo.training.fault import CheckpointError

    checkpoint, _ = trained
    with pytest.raises(CheckpointError, match=rf"^{checkpoint}: the checkpoint does not fit PointCloudClassifier\("
                                              r"model='diffgcn'.*\d+ missing keys \(net\.") as error:
        PointCloudClassifier.load_from_checkpoint(checkpoint, model="diffgcn")
    assert "\n" not in str(error.value)
    assert PointCloudClassifier.load_from_checkpoint(checkpoint).num_parameters > 0  # the right model loads

    module = PointCloudClassifier(model="mgic_diffgcn", model_kwargs={"k": 8, "group_size": 16})
    before = {k: v.clone() for k, v in module.state_dict().items()}
    state = load(checkpoint)["state_dict"]
    with pytest.raises(CheckpointError, match=r"shape mismatches .* in the checkpoint vs .* in the model"):
        module.load_state_dict(state)
    assert max_difference(module.state_dict(), before) == 0.0  # nothing was copied
    fitting = sum(1 for k, v in state.items() if k in before and v.shape == before[k].shape)
    assert fitting > 0  # torch's own strict load would have copied these before raising

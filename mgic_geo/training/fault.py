"""Fault tolerance for ``mgic-geo fit``: checkpoints that survive crashes, runs that resume exactly,
pre-emption signals, non-finite losses and untrusted checkpoint files.

- :class:`SafeCheckpointIO` (a Lightning ``CheckpointIO`` plugin) writes each checkpoint to a hidden
  temporary file in the same folder and renames it over the target with ``os.replace``, so a crash or
  ``SIGKILL`` while writing leaves the previous file intact; it refuses to write weights that hold
  NaN or inf (:class:`NonFiniteWeightsError`). It loads with ``torch.load(weights_only=True)``
  always (Lightning itself would unpickle anything from an ``http`` URL): a file naming any other
  Python object, which unpickling would call, is refused with :class:`CheckpointError`, and so are
  weights holding NaN or inf (:func:`read_checkpoint`). Files are written with the mode the umask gives.
- :func:`check_checkpoint_hparams` checks a checkpoint's hyperparameters against its weights before
  a model is built from them (on the ``meta`` device).
- :class:`RandomState` (a callback) stores the torch (CPU and CUDA), numpy and ``random`` generator
  states in every checkpoint and restores them on resume. With the data modules' shuffle generator,
  which their own ``state_dict`` carries, a run resumed from an end-of-epoch checkpoint draws the
  same batches, augmentation and dropout as an uninterrupted one, and ends with the same weights.
- :class:`Preemption` (a callback): ``SIGTERM`` or ``SIGUSR1`` during training saves ``last.ckpt`` at
  the end of the current training step and ends the run with :class:`Preempted`.
- :func:`state_dict_mismatch` describes why a checkpoint does not fit a model (used by
  :meth:`~mgic_geo.training.base.RegistryTask.load_state_dict`).

``mgic-geo fit`` adds the plugin and both callbacks itself (:mod:`mgic_geo.training.cli`); a Python
``Trainer`` gets them with ``plugins=[SafeCheckpointIO()], callbacks=[RandomState(), Preemption()]``.
"""
from __future__ import annotations

import os
import pickle
import random
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from mgic_geo.state_checks import (  # noqa: F401  (re-exported)
    class_count_problem,
    follow_umask,
    hparams_shape_problem,
    load_error_message,
    nonfinite_tensors,
    state_dict_mismatch,
    unusable_weights,
)

PREEMPTION_SIGNALS = ("SIGTERM", "SIGUSR1")
_PLAIN_IO = TorchCheckpointIO()  # Lightning's reader: local files, fsspec and http URLs


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, not plain data, or made for another model."""


class TrainingStopped(RuntimeError):
    """Training ended before its last epoch; ``exit_status`` is what ``mgic-geo fit`` returns."""

    exit_status = 1


class NonFiniteLossError(TrainingStopped):
    """A training loss was NaN or inf under ``nonfinite_loss="stop"``."""


class NonFiniteWeightsError(TrainingStopped):
    """A checkpoint about to be written holds NaN or inf weights."""


class Preempted(TrainingStopped):
    """A pre-emption signal arrived; ``last.ckpt`` was saved. ``exit_status`` is the shell's
    ``128 + signal number`` (143 for SIGTERM), so that a job script can tell it from a finished run."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_status = 128 + int(signum)


# -- reading ------------------------------------------------------------------------------------
def is_reading_error(error: BaseException) -> bool:
    """Whether ``error`` is how ``torch.load`` reports a bad file (not a pickle, a refused global, a
    damaged or truncated zip archive)."""
    return isinstance(error, (pickle.UnpicklingError, EOFError)) or (
        isinstance(error, RuntimeError) and "PytorchStreamReader" in str(error))


def reading_error(path: Any, error: BaseException) -> CheckpointError:
    """One line naming ``path`` and what ``torch.load(weights_only=True)`` found wrong with it."""
    return CheckpointError(load_error_message(path, error, kind="checkpoint", plural="checkpoints"))


def read_checkpoint(path: Any, map_location: Any = lambda storage, location: storage) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` of a Lightning checkpoint; :class:`CheckpointError` naming
    ``path`` when the file is unreadable, holds anything but plain data, is not a checkpoint, or has
    weights that must not be loaded (NaN or inf, or more elements than the file stores), naming them."""
    try:
        checkpoint = _PLAIN_IO.load_checkpoint(path, map_location=map_location, weights_only=True)
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({error.strerror or error})") from None
    except Exception as error:  # noqa: BLE001  anything torch.load raises is about the file
        raise reading_error(path, error) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        found = f"keys {sorted(map(str, checkpoint))[:5]}" if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{path}: not a Lightning checkpoint (expected a dict with a 'state_dict' entry, "
                              f"found {found})")
    check_weights(path, checkpoint["state_dict"])
    return checkpoint


def check_weights(path: Any, state_dict: Any) -> None:
    """:class:`CheckpointError` naming ``path`` and the tensors of ``state_dict`` that hold NaN or inf or
    claim more elements than the file stores (:func:`~mgic_geo.state_checks.unusable_weights`)."""
    problem = unusable_weights(path, state_dict) if isinstance(state_dict, Mapping) else None
    if problem:
        raise CheckpointError(problem)


def check_checkpoint_hparams(path: Any, hparams: Mapping[str, Any], state_dict: Mapping[str, Any], *,
                             described: str, origin: str = "", strict: bool = True) -> None:
    """:class:`CheckpointError` naming ``path`` when the hyperparameters ``hparams``, from which a task
    module would be built, ask for more classes than :data:`~mgic_geo.state_checks.MAX_NUM_CLASSES` or
    for a network that ``state_dict`` does not fit (checked on the ``meta`` device, before anything is
    built or allocated).

    Args:
        path (Any): the checkpoint, as named in the message.
        hparams (Mapping[str, Any]): the hyperparameters the module would be built from.
        state_dict (Mapping[str, Any]): the checkpoint's weights (anything with a ``shape`` per key).
        described (str): the module as the message names it, e.g. ``PointCloudClassifier(model=...)``.
        origin (str): what the checkpoint was saved from, appended to ``described``.
        strict (bool): whether missing and unexpected keys count too (else only shapes that differ).
    """
    problem = class_count_problem(hparams)
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    problem = hparams_shape_problem(hparams, state_dict, strict=strict)
    if problem:
        raise CheckpointError(f"{path}: the checkpoint does not fit {described}{origin}: {problem}; nothing was built")


# -- writing ------------------------------------------------------------------------------------
class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with atomic writes, no non-finite weights, and
    ``weights_only=True`` reads (see the module's description)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        bad = nonfinite_tensors(checkpoint.get("state_dict", {}))
        if bad:
            raise NonFiniteWeightsError(
                f"refused to write {path}: {len(bad)} weight tensor(s) hold NaN or inf ({', '.join(bad[:3])}"
                f"{', ...' if len(bad) > 3 else ''}); the checkpoint already there, if any, is kept")
        if "://" in str(path):  # remote storage: what fsspec offers
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        # hidden, and not named last*.ckpt: `--ckpt_path last` must never pick up a partial file
        handle, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        try:
            follow_umask(handle)  # mkstemp makes it 0600; torch.save to a path follows the umask
            with os.fdopen(handle, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())  # the data is on disk before the rename makes it the checkpoint
            os.replace(partial, target)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise

    def load_checkpoint(self, path, map_location: Any = lambda storage, loc: storage,
                        weights_only: bool | None = None) -> dict[str, Any]:
        if weights_only is False:
            raise CheckpointError(f"{path}: {type(self).__name__} loads checkpoints with weights_only=True only")
        return read_checkpoint(path, map_location)


# -- random state -------------------------------------------------------------------------------
def collect_random_state() -> dict[str, Any]:
    """The torch, CUDA, numpy and ``random`` generator states, as tensors and plain Python values
    (``weights_only`` loads refuse numpy arrays)."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_random_state(state: Mapping[str, Any]) -> None:
    """Set the generators to what :func:`collect_random_state` returned."""
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    np.random.set_state((numpy["name"], numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["gauss"]))
    random.setstate(state["python"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


class RandomState(Callback):
    """Saves the global random generators' states in each checkpoint and restores them on resume.

    They are restored when the checkpoint is loaded, before the training loader draws its first batch:
    Lightning fetches that batch before any epoch hook runs, and skips the sanity check when resuming.
    Under DDP every process restores rank 0's states, as ``seed_everything`` gives them all one seed.
    """

    def state_dict(self) -> dict[str, Any]:
        return collect_random_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        restore_random_state(state_dict)


# -- pre-emption --------------------------------------------------------------------------------
def last_checkpoint_path(trainer) -> str:
    """Where ``last.ckpt`` goes: the ModelCheckpoint's folder, else ``<default_root_dir>/checkpoints``."""
    callback = trainer.checkpoint_callback
    folder = getattr(callback, "dirpath", None) or os.path.join(trainer.default_root_dir, "checkpoints")
    name = getattr(callback, "CHECKPOINT_NAME_LAST", "last") + getattr(callback, "FILE_EXTENSION", ".ckpt")
    return os.path.join(folder, name)


def last_good_checkpoint(trainer) -> str | None:
    """The latest checkpoint this run wrote or resumed from, if it exists."""
    callback = trainer.checkpoint_callback
    for path in (getattr(callback, "last_model_path", None), trainer.ckpt_path):
        if path and os.path.isfile(path):
            return str(path)
    return None


class Preemption(Callback):
    """``SIGTERM`` or ``SIGUSR1`` (what SLURM and most schedulers send before they kill a job) saves
    ``last.ckpt`` and raises :class:`Preempted`.

    The handler only records the signal; the checkpoint is written at the end of the training step
    under way (a mid-epoch checkpoint: resuming it continues at that step, with a fresh shuffle for
    the rest of that epoch) or, if the signal comes during validation, at the end of the epoch (an
    ordinary end-of-epoch checkpoint). Leave a scheduler's warning time (``--signal=USR1@90``) for
    one step plus one validation pass. The handlers are installed when training starts, replacing
    Lightning's own SIGTERM handler until it ends; under DDP the processes agree on the signal
    every step, so that they all save and stop together.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _record(self, signum: int, frame) -> None:
        self.received = signum

    def on_train_start(self, trainer, pl_module) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Python lets only the main thread install signal handlers
        for name in PREEMPTION_SIGNALS:
            signum = getattr(signal, name, None)  # Windows has no SIGUSR1
            if signum is not None:
                self._previous[signum] = signal.signal(signum, self._record)

    def _uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _stop_if_signalled(self, trainer) -> None:
        received = self.received is not None
        if trainer.world_size > 1:
            received = trainer.strategy.reduce_boolean_decision(received, all=False)
        if not received:
            return
        signum = self.received or signal.SIGTERM
        path = last_checkpoint_path(trainer)
        trainer.save_checkpoint(path)
        raise Preempted(f"received {signal.Signals(signum).name} at epoch {trainer.current_epoch}, global step "
                        f"{trainer.global_step}: saved {path}; resume with --ckpt_path last", signum)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._stop_if_signalled(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._stop_if_signalled(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._uninstall()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._uninstall()

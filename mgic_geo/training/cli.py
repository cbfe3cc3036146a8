"""``mgic-geo fit | validate | test``: LightningCLI over the task modules and data modules.

    mgic-geo fit  --config experiments/modelnet10/mgic_diffgcn.yaml [--data.root DIR] [--trainer.max_epochs N]
    mgic-geo fit  --config experiments/cifar10/mgic_resnet56.yaml [--data.root DIR]
    mgic-geo fit  --config experiments/modelnet10/mgic_diffgcn.yaml --ckpt_path last     # resume
    mgic-geo test --config experiments/modelnet10/mgic_diffgcn.yaml --ckpt_path last     # or best, or a path

The task and the data are LightningCLI subclasses: a config names them with ``class_path`` and gives
their arguments under ``init_args``: ``mgic_geo.training.PointCloudClassifier`` with
``mgic_geo.data.ModelNet10DataModule``, ``mgic_geo.training.ImageClassifier`` with
``mgic_geo.data.CIFAR10DataModule`` or ``ImageFolderDataModule``, ``mgic_geo.training.ImageSegmenter``
with ``mgic_geo.data.SegmentationFolderDataModule``. On the command line an argument needs no
``init_args``: ``--model.lr 0.01``, ``--data.root DIR``. There is deliberately no default class: with
one, jsonargparse carries the default class's argument values over to the class a config names, so an
``ImageClassifier`` would silently inherit ``PointCloudClassifier``'s label smoothing.

What this adds to a plain ``LightningCLI`` (see ``mgic_geo.training`` for the output layout):

- ``trainer.default_root_dir`` defaults to ``outputs/<data>/<model>`` (``<data>`` from the data
  module's class: ``modelnet10``, ``cifar10``, ``imagefolder``, ``segmentationfolder``);
- ``trainer.precision`` left unset (``null``) means mixed precision on CUDA (``bf16-mixed`` where the
  GPU supports bf16, else ``16-mixed``) and ``32-true`` elsewhere;
- a CSV and a TensorBoard logger writing to the same ``<root>/logs/version_<N>/`` (unless
  ``--trainer.logger`` is given, e.g. ``--trainer.logger false``);
- a ModelCheckpoint configurable under ``checkpoint.`` (:class:`~mgic_geo.training.checkpointing.EpochCheckpoint`)
  that saves ``<root>/checkpoints/last.ckpt`` after every epoch and ``epoch<NNN>.ckpt`` every
  ``checkpoint.every_n_epochs`` epochs, monitoring nothing (no checkpoint is
  chosen by its test accuracy); ``--ckpt_path last`` finds ``last.ckpt`` there, in fit (resume) and in
  test. Files of an earlier run in the same root are overwritten, not versioned;
- when validation runs, ``<root>/checkpoints/best.ckpt`` beside it, the epoch with the highest
  validation accuracy (``val/overall_acc`` for point clouds, ``val/top1_acc`` for images,
  ``val/mean_iou`` for segmentation; :mod:`mgic_geo.training.checkpointing`); ``--ckpt_path best``
  names it in any subcommand (the model is then built from the config, as with ``last``), and is an
  error where no fit with validation wrote one. The validation split is the data module's (ModelNet-10:
  a held-out part of the training files, never the test split; image roots with a test or ``val/``
  split of their own validate on it by default, so there ``best.ckpt`` is chosen on the split ``test``
  evaluates: test ``last.ckpt``, or set ``data.val_fraction``, for an unbiased number);
- a :class:`~mgic_geo.training.plots.TrainingPlots` callback: ``learning_curves.png`` and
  ``confusion_val.png`` from every fit, ``confusion_test.png`` from every test, in the run's log dir
  (one in ``trainer.callbacks`` replaces it, e.g. ``class_path: mgic_geo.training.plots.TrainingPlots``
  with ``init_args: {curves: false}``);
- configuration errors (a missing config file or checkpoint, an unknown model or model argument, a
  bad data root, ...) end with ``mgic-geo: error: ...`` and exit status 2 instead of a traceback;
  a bad key or value on the command line is LightningCLI's own usage error (exit status 2).

Fault tolerance (:mod:`mgic_geo.training.fault`), always on:

- resuming is exact: checkpoints carry the torch / CUDA / numpy / ``random`` generator states and the
  data module's shuffle generator, so ``fit --ckpt_path last`` after a crash or ``kill -9`` goes on
  from the last end-of-epoch checkpoint (at most one epoch lost) and, on the CPU, ends with the
  weights and logged metrics of an uninterrupted run, bit for bit;
- checkpoints are written to a hidden ``.<name>.*.partial`` file in the same folder and renamed
  over the old one, so a crash while writing leaves the previous ``last.ckpt`` intact (a stale
  ``.partial`` file is all that remains); weights holding NaN or inf are never written;
- ``SIGTERM`` or ``SIGUSR1`` (what SLURM sends before the time limit, e.g. ``#SBATCH
  --signal=USR1@120``) during training saves ``last.ckpt`` at the end of the current step and exits
  with ``mgic-geo: received SIGTERM at epoch E, global step S: saved <path>; ...`` and the shell's
  status for that signal (143 for SIGTERM, 138 for SIGUSR1); resume with ``--ckpt_path last``;
- a NaN or inf training loss stops the run (exit status 1) with ``mgic-geo: error: non-finite
  training loss ... at epoch E, global step S; ... last good checkpoint: <path>``, that checkpoint
  left as it was; ``--model.nonfinite_loss skip`` leaves such batches out instead, logs their count
  as ``skipped_nonfinite_batches`` and warns at the end;
- checkpoints are read with ``torch.load(weights_only=True)``: a file holding any other pickled
  object (which unpickling would call) is refused, and so is a checkpoint whose weights do not fit
  the model (another model or width), with the mismatched keys and shapes listed, before anything is
  loaded: ``mgic-geo: error: <path>: ...``, exit status 2. (With ``--ckpt_path FILE`` LightningCLI
  builds the model from the hyperparameters stored in the file, which are first checked against the
  file's weights on the ``meta`` device; with ``last``, from the config.) Weights holding NaN or inf
  are refused too, naming the tensor; ``test`` and ``validate`` with ``--ckpt_path last`` and no
  ``last*.ckpt`` in the checkpoint folder are an error naming that folder.

Distributed: ``--trainer.devices 2 --trainer.strategy ddp`` (Lightning starts the processes), or
``torchrun --nproc_per_node 2 -m mgic_geo.cli fit ... --trainer.devices 2 --trainer.strategy ddp``;
``data.batch_size`` is per process. Test with one device for exact numbers (a DistributedSampler pads
the test split with repeated samples to split it evenly).

Precision: ``--trainer.precision 32-true`` (the ModelNet configs' default), ``bf16-mixed`` (CUDA, or
CPU where it is usually slower unless the CPU has native bf16), ``16-mixed`` (fp16 AMP with a gradient
scaler: needs CUDA; on a CPU Lightning itself replaces it by ``bf16-mixed`` with a warning, and
``test_results.json`` records the precision actually used).
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

SUBCOMMANDS = ("fit", "validate", "test")
DEFAULT_RESULTS_ROOT = "outputs"
# the weights' shapes (as meta tensors) of each checkpoint file named on the command line, read by
# _check_files: the model's hyperparameters, merged from the config and the checkpoint, are checked
# against them before the model is built
_CHECKPOINT_SHAPES: dict[str, dict] = {}


def _raised_by_data(error: BaseException) -> bool:
    """Whether ``error`` was raised inside ``mgic_geo.data`` (a bad data root, layout or file)."""
    traceback = error.__traceback__
    while traceback is not None:
        path = Path(traceback.tb_frame.f_code.co_filename)
        if path.parent.name == "data" and path.parent.parent.name == "mgic_geo":
            return True
        traceback = traceback.tb_next
    return False


def _option_values(args: list[str], *names: str) -> list[str]:
    values = []
    for i, arg in enumerate(args):
        if arg in names and i + 1 < len(args):
            values.append(args[i + 1])
        elif "=" in arg and arg.split("=", 1)[0] in names:
            values.append(arg.split("=", 1)[1])
    return values


def _check_files(args: list[str]) -> str | None:
    """The first problem with a config file or checkpoint named on the command line, if any."""
    for path in _option_values(args, "--config", "-c"):
        if not Path(path).is_file():
            return f"config file not found: {path}"
    for path in _option_values(args, "--ckpt_path"):
        if path in ("last", "best", "hpc", "registry", "null", "None") or "://" in path:
            continue  # resolved by Lightning, then read by SafeCheckpointIO
        if not Path(path).is_file():
            return f"checkpoint not found: {path} (`--ckpt_path last` picks <default_root_dir>/checkpoints/last.ckpt)"
        # LightningCLI reads a named checkpoint's hyperparameters with its own torch.load before the Trainer
        # reads it through SafeCheckpointIO: check the file first, so that whatever Lightning does, a file
        # that is not plain data is refused here, with one line
        from mgic_geo.training.fault import CheckpointError, read_checkpoint

        try:
            checkpoint = read_checkpoint(path, map_location="cpu")
        except CheckpointError as error:  # unreadable, not plain data, NaN or inf weights (named)
            return str(error)
        import torch

        from mgic_geo.models.weights import META_KEY, Weights, WeightsError

        _CHECKPOINT_SHAPES[path] = {key: torch.empty(tuple(value.shape), device="meta")
                                    for key, value in checkpoint["state_dict"].items() if torch.is_tensor(value)}
        released = isinstance(checkpoint, dict) and META_KEY in checkpoint
        del checkpoint
        if released:  # a released weights file: check it as one
            try:
                Weights.from_file(path).verify()  # sha256 against its metadata, finite, consistent
            except WeightsError as error:
                return str(error)
    return None


def _reason(error: BaseException) -> str:
    """The message of what went wrong in a class's constructor, without jsonargparse's wrapping:
    subclass arguments are validated against ``Union[<base>, None]``, whose error lists each member's
    error ("Does not validate against any of the Union subtypes ... - <ours> - Expected NoneType")."""
    message = str(error)
    if "Errors:" not in message:
        return message
    reasons = [line.strip()[2:] for line in message.split("Errors:", 1)[1].splitlines()
               if line.strip().startswith("- ") and "NoneType" not in line]
    return "; ".join(reasons) or message


def results_folder_name(data_class_path: str) -> str:
    """``outputs/<this>/<model>``: the data module's class name, lower case, without ``DataModule``."""
    name = str(data_class_path).rsplit(".", 1)[-1]
    return (name[: -len("DataModule")] if name.endswith("DataModule") else name).lower() or "data"


def automatic_precision(accelerator) -> str:
    """What an unset ``trainer.precision`` means: AMP on CUDA (bf16 where supported), else ``32-true``."""
    import torch

    on_cuda = str(accelerator or "auto") in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if not on_cuda:
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def _make_cli_class():
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.cli import LightningCLI
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    class MGICLightningCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            from mgic_geo.training.checkpointing import EpochCheckpoint

            parser.add_lightning_class_args(EpochCheckpoint, "checkpoint")
            parser.set_defaults({
                "checkpoint.filename": "epoch{epoch:03d}",
                "checkpoint.auto_insert_metric_name": False,
                "checkpoint.save_last": True,
                "checkpoint.save_top_k": -1,
                "checkpoint.every_n_epochs": 1,
                "checkpoint.enable_version_counter": False,
            })

        def before_instantiate_classes(self) -> None:
            config = self.config[self.subcommand] if self.subcommand else self.config
            if not config.trainer.default_root_dir:
                model = config.model.init_args.get("model") if config.model.get("init_args") else None
                data = results_folder_name(config.data.class_path)
                config.trainer.default_root_dir = os.path.join(DEFAULT_RESULTS_ROOT, data, str(model or "model"))
            if config.trainer.precision is None:
                config.trainer.precision = automatic_precision(config.trainer.accelerator)
            if config.checkpoint.dirpath is None:
                config.checkpoint.dirpath = os.path.join(config.trainer.default_root_dir, "checkpoints")
            if config.get("ckpt_path") == "best":  # Lightning knows "best" only within the process that fitted
                from mgic_geo.training.base import ConfigurationError
                from mgic_geo.training.checkpointing import BEST_NAME

                best = os.path.join(config.checkpoint.dirpath, f"{BEST_NAME}.ckpt")
                if not os.path.isfile(best):
                    raise ConfigurationError(f"--ckpt_path best: no {best} (a fit writes it when it validates: the "
                                             "data need a validation split, e.g. data.val_fraction > 0)")
                config.ckpt_path = best
            shapes = _CHECKPOINT_SHAPES.get(str(config.get("ckpt_path")))
            if shapes is not None and config.model.get("init_args") is not None:
                check_model_against_checkpoint(config.ckpt_path, config.model, shapes)

        def instantiate_classes(self) -> None:
            from mgic_geo.training.base import ConfigurationError

            try:
                super().instantiate_classes()
            except (ValueError, MisconfigurationException) as error:  # bad model/data/trainer arguments
                raise ConfigurationError(_reason(error)) from error

        def instantiate_trainer(self, **kwargs):
            from lightning.fabric.plugins import CheckpointIO

            from lightning.pytorch.callbacks import ThroughputMonitor

            from mgic_geo.training.fault import Preemption, RandomState, SafeCheckpointIO
            from mgic_geo.training.plots import TrainingPlots

            trainer_config = self._get(self.config_init, "trainer", default={})
            plugins = trainer_config.get("plugins") or []
            plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
            if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):  # one the user chose wins
                plugins.append(SafeCheckpointIO())
            kwargs["plugins"] = plugins
            callbacks = trainer_config.get("callbacks") or []
            callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
            kwargs["callbacks"] = callbacks + [RandomState(), Preemption()]
            if not any(isinstance(callback, TrainingPlots) for callback in callbacks):  # one configured wins
                kwargs["callbacks"].append(TrainingPlots())
            if not any(isinstance(callback, ThroughputMonitor) for callback in callbacks):
                # train/device/samples_per_sec in the logs: over the last 20 batches, data loading included,
                # validation excluded
                kwargs["callbacks"].append(ThroughputMonitor(batch_size_fn=samples_in, window_size=20))
            if trainer_config.get("logger") in (None, True) and "logger" not in kwargs:
                root = trainer_config.get("default_root_dir") or os.getcwd()
                csv = CSVLogger(root, name="logs")
                # the same version for both, computed before any process creates the directory
                version = csv.version
                kwargs["logger"] = [
                    csv,
                    TensorBoardLogger(root, name="logs", version=version, default_hp_metric=False),
                ]
            trainer = super().instantiate_trainer(**kwargs)
            subcommand = self.subcommand
            if subcommand in ("test", "validate") and self.config[subcommand].get("ckpt_path") == "last":
                require_last_checkpoint(trainer, subcommand)
            from mgic_geo.training.checkpointing import BestCheckpoint, best_metric

            metric, checkpoint = best_metric(self.model), self._get(self.config_init, "checkpoint")
            if metric is not None and isinstance(checkpoint, ModelCheckpoint):
                # appended after `checkpoint.`, which stays trainer.checkpoint_callback (last.ckpt, pre-emption)
                trainer.callbacks.append(BestCheckpoint(checkpoint.dirpath, metric))
            return trainer

    return MGICLightningCLI


def check_model_against_checkpoint(path: str, model, shapes: dict) -> None:
    """:class:`~mgic_geo.training.fault.CheckpointError` naming ``path`` when the model the configuration
    ``model`` (``class_path`` and ``init_args``, the checkpoint's hyperparameters merged in by LightningCLI)
    describes asks for more classes than :data:`~mgic_geo.state_checks.MAX_NUM_CLASSES` or for a network
    that the checkpoint's weights ``shapes`` do not fit: checked on the ``meta`` device, before the model
    is built, so that hyperparameters asking for a huge network allocate nothing."""
    from mgic_geo.training.fault import check_checkpoint_hparams

    arguments = model.init_args
    hparams = dict(arguments.as_dict() if hasattr(arguments, "as_dict") else arguments)
    hparams.update(dict(model.get("dict_kwargs") or {}))
    model_kwargs = hparams.get("model_kwargs") or {}
    model_kwargs = dict(model_kwargs) if isinstance(model_kwargs, dict) else model_kwargs
    name = str(model.class_path).rsplit(".", 1)[-1]
    check_checkpoint_hparams(path, hparams, shapes,
                             described=f"{name}(model={hparams.get('model')!r}, model_kwargs={model_kwargs!r})")


def require_last_checkpoint(trainer, subcommand: str) -> None:
    """:class:`~mgic_geo.training.base.ConfigurationError` naming the folders looked in when
    ``--ckpt_path last`` finds no checkpoint for ``test`` or ``validate`` (Lightning would warn and
    evaluate the untrained model). ``fit --ckpt_path last`` without one still starts a fresh run."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from mgic_geo.training.base import ConfigurationError

    callbacks = [callback for callback in trainer.checkpoint_callbacks if isinstance(callback, ModelCheckpoint)]
    if any(callback._find_last_checkpoints(trainer) for callback in callbacks):
        return
    folders = sorted({str(callback.dirpath or os.path.join(trainer.default_root_dir, "checkpoints"))
                      for callback in callbacks})
    raise ConfigurationError(f"--ckpt_path last: no checkpoint to {subcommand}: no last*.ckpt in "
                             f"{', '.join(folders) or 'any checkpoint folder (no ModelCheckpoint configured)'} "
                             "(mgic-geo fit with this configuration writes last.ckpt there); nothing was evaluated")


def samples_in(batch) -> int:
    """Samples in a batch: clouds of a PyG batch, images of an ``(images, targets)`` pair."""
    if hasattr(batch, "num_graphs"):
        return int(batch.num_graphs)
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    return int(first.shape[0])


def main(argv: list[str] | None = None) -> int:
    """Run ``fit``, ``validate`` or ``test`` with LightningCLI; ``argv`` starts with the subcommand."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in SUBCOMMANDS and not args[0].startswith("-"):
        print(f"mgic-geo: error: expected one of {', '.join(SUBCOMMANDS)} first, got {args[:1]}", file=sys.stderr)
        return 2
    problem = _check_files(args)
    if problem:
        print(f"mgic-geo: error: {problem}", file=sys.stderr)
        return 2
    import lightning as L

    from mgic_geo.training.base import ConfigurationError
    from mgic_geo.training.fault import CheckpointError, Preempted, TrainingStopped

    cli_class = _make_cli_class()
    # LightningCLI warns when given args while sys.argv has some too (a call from Python, e.g. tests);
    # hand it None where the two agree, so a relaunch by Lightning's DDP launcher sees the same argv.
    cli_args = None if args == sys.argv[1:] else args
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            cli_class(
                L.LightningModule,
                L.LightningDataModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                args=cli_args,
                auto_configure_optimizers=False,
                save_config_kwargs={"overwrite": True},
                parser_kwargs={"prog": "mgic-geo", "description": __doc__.splitlines()[0]},
            )
    except ValueError as error:
        # configuration, checkpoint and data-root problems get one line; anything else keeps its traceback
        if not (isinstance(error, (ConfigurationError, CheckpointError)) or _raised_by_data(error)):
            raise
        print(f"mgic-geo: error: {error}", file=sys.stderr)
        return 2
    except TrainingStopped as error:  # pre-empted, or a numerical fault: the message says what is kept
        print(f"mgic-geo: {'' if isinstance(error, Preempted) else 'error: '}{error}", file=sys.stderr)
        return error.exit_status
    return 0


if __name__ == "__main__":
    sys.exit(main())

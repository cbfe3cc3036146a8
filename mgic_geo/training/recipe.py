"""The recipe arguments every task module takes, and their one check (:func:`check_recipe`), apart
from Lightning; also what a checkpoint says about the epochs it has seen."""
from __future__ import annotations

from typing import Any

OPTIMIZERS = ("sgd", "adam")
SCHEDULERS = ("cosine", "step", "poly", "none")
NONFINITE_LOSS = ("stop", "skip")


class ConfigurationError(ValueError):
    """A configuration that cannot work (model and data disagree, an unknown name, ...)."""


def _available_models() -> list[str]:
    from mgic_geo.models import list_models

    return list(list_models())


def epochs_in_checkpoint(checkpoint: dict[str, Any]) -> int | None:
    """Training epochs finished when ``checkpoint`` was written.

    Lightning counts an epoch as processed before ``on_train_epoch_end`` (where checkpoints are saved)
    and as completed only after it, so the fit loop's ``processed`` counter is the number of finished
    epochs in both epoch-end and train-end checkpoints; ``epoch`` (0-based) is the fallback.
    """
    try:
        progress = checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]
        return int(max(progress["processed"], progress["completed"]))
    except (KeyError, TypeError):
        epoch = checkpoint.get("epoch")
        return None if epoch is None else int(epoch) + 1


def check_recipe(*, model: str, task: str, num_classes: int, optimizer: str, scheduler: str, lr: float,
                 min_lr: float, step_size: int = 1, gamma: float = 0.1, power: float = 0.9,
                 nonfinite_loss: str = "stop") -> None:
    """``ValueError`` naming the argument when a recipe cannot work, or when ``model`` is a network
    of another ``task`` than the module's (:func:`mgic_geo.models.model_task`)."""
    from mgic_geo.models import model_task

    available = _available_models()
    if model not in available:
        raise ValueError(f"unknown model {model!r}; available models: {', '.join(available)}")
    if model_task(model) not in (task, None):
        fitting = [name for name in available if model_task(name) in (task, None)]
        raise ValueError(f"model {model!r} is a network for {model_task(model).replace('_', ' ')}, not "
                         f"{task.replace('_', ' ')}; choose one of: {', '.join(fitting)}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; choose one of: {', '.join(SCHEDULERS)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"`num_classes` must be an integer >= 2, got {num_classes!r}")
    if not lr > 0 or not 0 <= min_lr <= lr:
        raise ValueError(f"need 0 <= min_lr <= lr and lr > 0, got lr={lr!r}, min_lr={min_lr!r}")
    if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size < 1:
        raise ValueError(f"`step_size` must be a positive number of epochs, got {step_size!r}")
    if not 0 < gamma <= 1:
        raise ValueError(f"`gamma` must be in (0, 1], got {gamma!r}")
    if not power > 0:
        raise ValueError(f"`power` must be positive, got {power!r}")
    if nonfinite_loss not in NONFINITE_LOSS:
        raise ValueError(f"unknown nonfinite_loss {nonfinite_loss!r}; choose one of: {', '.join(NONFINITE_LOSS)} "
                         "(what to do with a batch whose training loss is NaN or inf)")

"""What the task modules share (mgic_geo.training.base): the learning-rate schedules, per epoch and per
step, equal their closed forms, fresh and after a resume with another run length. No Trainer runs:
a stand-in gives the run length."""
import math
from types import SimpleNamespace

import pytest
import torch

from mgic_geo.training.images import ImageClassifier
from mgic_geo.training.module import PointCloudClassifier

LR, MIN_LR, EPOCHS, STEP_SIZE, GAMMA, STEPS, POWER = 0.1, 1e-3, 7, 3, 0.5, 20, 0.9


def cosine(epoch: int, epochs: int = EPOCHS) -> float:
    return MIN_LR + (LR - MIN_LR) * (1 + math.cos(math.pi * epoch / epochs)) / 2


def step(epoch: int) -> float:
    return LR * GAMMA ** (epoch // STEP_SIZE)


def poly(index: int) -> float:
    return LR * max(0.0, 1 - index / STEPS) ** POWER


def configured(module, epochs: int = EPOCHS):
    module._trainer = SimpleNamespace(max_epochs=epochs, estimated_stepping_batches=STEPS)
    config = module.configure_optimizers()
    return config["optimizer"], config["lr_scheduler"]["scheduler"], config["lr_scheduler"]["interval"]


def image_classifier(scheduler: str) -> ImageClassifier:
    return ImageClassifier(model="resnet56", lr=LR, scheduler=scheduler, min_lr=MIN_LR, step_size=STEP_SIZE,
                           gamma=GAMMA, power=POWER)


@pytest.mark.parametrize("scheduler, interval, rate, count", [
    ("cosine", "epoch", cosine, EPOCHS + 1), ("step", "epoch", step, 10), ("poly", "step", poly, STEPS + 3)])
def test_the_schedules_give_their_closed_form_per_epoch_or_step(scheduler, interval, rate, count):
    optimizer, schedule, when = configured(image_classifier(scheduler))
    assert when == interval  # Lightning steps the schedule after each epoch, or each optimiser step for "poly"
    for index in range(count):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(rate(index), rel=1e-9, abs=1e-15), index
        optimizer.step()
        schedule.step()


def test_the_point_cloud_cosine_schedule_is_dgcnns():
    module = PointCloudClassifier(model="dgcnn", lr=LR, min_lr=MIN_LR)
    optimizer, schedule, interval = configured(module)
    assert interval == "epoch"
    for epoch in range(EPOCHS + 1):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(cosine(epoch), rel=1e-9)
        optimizer.step()
        schedule.step()
    assert cosine(0) == LR and cosine(EPOCHS) == pytest.approx(MIN_LR)


@pytest.mark.parametrize("scheduler", ["cosine", "step", "poly"])
def test_a_resumed_run_goes_on_with_its_own_run_length(scheduler):
    """Trained 6 epochs (steps) of a 6-epoch run, resumed for 7: the restored scheduler gets the new length."""
    optimizer, schedule, _ = configured(image_classifier(scheduler), epochs=6)
    for _ in range(6):
        optimizer.step()
        schedule.step()
    saved = {"optimizer": optimizer.state_dict(), "scheduler": schedule.state_dict()}
    module = image_classifier(scheduler)
    optimizer, schedule, _ = configured(module, epochs=7)
    optimizer.load_state_dict(saved["optimizer"])  # what Lightning restores from the checkpoint
    schedule.load_state_dict(saved["scheduler"])
    module._trainer.lr_scheduler_configs = [SimpleNamespace(scheduler=schedule)]
    module.on_train_start()
    expected = {"cosine": cosine(6, 7), "step": step(6), "poly": poly(6)}[scheduler]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-9)
    assert schedule.get_last_lr() == pytest.approx([expected], rel=1e-9)
    if scheduler == "cosine":  # and goes on along the stretched cosine
        optimizer.step()
        schedule.step()
        assert optimizer.param_groups[0]["lr"] == pytest.approx(cosine(7, 7), rel=1e-9)


def test_a_fresh_run_starts_at_lr():
    optimizer, schedule, _ = configured(image_classifier("cosine"))
    module = image_classifier("cosine")
    module._trainer = SimpleNamespace(max_epochs=EPOCHS, estimated_stepping_batches=STEPS,
                                      lr_scheduler_configs=[SimpleNamespace(scheduler=schedule)])
    module.on_train_start()
    assert optimizer.param_groups[0]["lr"] == LR

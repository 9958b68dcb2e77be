from __future__ import annotations

import math

from orchestrator.loop import Objective, run_epoch


def test_objective_best_tracks_the_best_epoch() -> None:
    obj = Objective("val_auc", "max", "best")
    assert obj.update(1, {"val_auc": 0.7})
    assert obj.update(2, {"val_auc": 0.8})
    assert not obj.update(3, {"val_auc": 0.75})
    assert obj.value({"val_auc": 0.75}) == 0.8 and obj.best_epoch == 2


def test_objective_last_and_min_mode() -> None:
    obj = Objective("val_loss", "min", "last")
    assert obj.update(1, {"val_loss": 0.5})
    assert not obj.update(2, {"val_loss": 0.9})  # not a new best: the best weights stay
    assert obj.value({"val_loss": 0.9}) == 0.9  # but a "last" objective is the last epoch's
    assert obj.best == 0.5 and obj.best_epoch == 1
    missing = Objective("val_auc", "max", "best")
    assert not missing.update(1, {})
    assert math.isnan(missing.value({}))


class _Hook:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def on_epoch_start(self, task: object, epoch: int) -> None:
        self.log.append(f"start{epoch}")

    def on_epoch_end(self, task: object, epoch: int, metrics: dict[str, float]) -> None:
        self.log.append(f"end{epoch}:{sorted(metrics)}")


class _Task:
    def __init__(self) -> None:
        self.log: list[str] = []

    def hooks(self) -> list[_Hook]:
        return [_Hook(self.log)]

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.log.append("train")
        return {"train_loss": 1.0}

    def evaluate(self, epoch: int) -> dict[str, float]:
        self.log.append("eval")
        return {"val_auc": 0.9}


def test_hooks_wrap_each_epoch_in_order() -> None:
    task = _Task()
    metrics = run_epoch(task, 3)
    # hooks see the training time of the epoch (its total is added after them)
    assert task.log == ["start3", "train", "eval", "end3:['train_loss', 'train_time_s', 'val_auc']"]
    assert metrics["val_auc"] == 0.9 and metrics["epoch_time_s"] >= metrics["train_time_s"] >= 0

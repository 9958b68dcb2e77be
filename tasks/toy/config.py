"""Config model of the toy task: the searchable surface is `model.x`, `model.y` and `train.lr`."""

from __future__ import annotations

from pydantic import Field

from tasks.base import StrictModel, TaskConfig, TrainConfig


class ToyData(StrictModel):
    manifest: str | None = Field(
        None, description="CSV of cases (case, label, patient_id); None: `n` cases in memory."
    )
    n: int = Field(64, ge=4, description="Cases made in memory when there is no manifest.")
    val_fraction: float = Field(0.25, gt=0, lt=1, description="Validation share (no `cv`).")
    noise: float = Field(0.01, ge=0, description="SD of the per-epoch observation noise.")


class ToyModel(StrictModel):
    x: float = Field(0.0, ge=-10, le=10, description="First coordinate of the surrogate.")
    y: float = Field(0.0, ge=-10, le=10, description="Second coordinate of the surrogate.")
    best_x: float = Field(1.0, description="Where the quadratic surrogate is lowest (x).")
    best_y: float = Field(-0.5, description="Where the quadratic surrogate is lowest (y).")


class ToyTrain(TrainConfig):
    epochs: int = Field(8, ge=1, description="Epochs to train.")
    work_s: float = Field(
        0.0,
        ge=0,
        description="Seconds of real PyTorch training (a small MLP) per epoch, so that benchmarks "
        "of the engine have trials of a known length; 0 = none.",
    )
    fail_at_epoch: int | None = Field(
        None, ge=1, description="Raise inside `evaluate` at this epoch (fault-injection tests)."
    )


class ToyConfig(TaskConfig):
    data: ToyData = Field(default_factory=ToyData)
    model: ToyModel = Field(default_factory=ToyModel)
    train: ToyTrain = Field(default_factory=ToyTrain)

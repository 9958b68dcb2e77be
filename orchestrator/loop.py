"""The generic `train_loop_per_worker` every Ray Train worker runs, whatever the task.

Per epoch: hooks -> train -> evaluate -> hooks -> report metrics with a checkpoint. Training
resumes from the latest checkpoint Ray Train hands back (after a worker failure or a resumed
sweep), so a restarted run continues from the epoch after its last report.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

CHECKPOINT_FILE = "state.pt"


@dataclass
class Objective:
    """Tracks the value Optuna optimises: the best epoch's metric, or the last epoch's."""

    metric: str
    mode: Literal["max", "min"]
    kind: Literal["best", "last"]
    best: float = math.nan
    best_epoch: int = 0

    def update(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Record an epoch; True when this epoch now defines the objective."""
        value = metrics.get(self.metric, math.nan)
        if math.isnan(value):
            return self.kind == "last"
        better = (
            math.isnan(self.best)
            or (self.mode == "max" and value > self.best)
            or (self.mode == "min" and value < self.best)
        )
        if better:
            self.best, self.best_epoch = value, epoch
        return better or self.kind == "last"

    def value(self, metrics: dict[str, float]) -> float:
        return self.best if self.kind == "best" else metrics.get(self.metric, math.nan)


def train_loop_per_worker(payload: dict[str, Any]) -> None:
    """Ray Train entry point. `payload` holds the resolved config and the run's paths."""
    import ray.train
    import ray.train.torch
    import torch

    from orchestrator.config import from_dict
    from orchestrator.registry import get_task
    from tasks.base import RunContext
    from tasks.common.torch_utils import seed_everything

    # Relative paths in configs mean "relative to where the sweep was started"; Tune and Train
    # may have moved this worker into a trial folder, so go back when that folder is here.
    if os.path.isdir(payload["cwd"]):
        os.chdir(payload["cwd"])
    config = from_dict(payload["config"], source=payload["source"])
    context = ray.train.get_context()
    rank = context.get_world_rank()
    seed_everything(config.experiment.seed + rank)
    task = get_task(config.experiment.task)(config.task)
    ctx = RunContext(
        run_id=payload["run_id"],
        seed=config.experiment.seed,
        rank=rank,
        world_size=context.get_world_size(),
        local_rank=context.get_local_rank(),
        device=ray.train.torch.get_device(),
        artifacts_dir=Path(payload["artifacts_dir"]),
        prepare_model=ray.train.torch.prepare_model,
        prepare_loader=ray.train.torch.prepare_data_loader,
    )
    task.setup(ctx)
    objective = Objective(payload["metric"], payload["mode"], payload["objective"])
    start = _restore(task, objective, ray.train.get_checkpoint(), torch)
    epochs = config.task.train.epochs
    for epoch in range(start, epochs + 1):
        metrics = _run_epoch(task, epoch)
        defines = objective.update(epoch, metrics)
        metrics.update(
            epoch=epoch, objective=objective.value(metrics), best_epoch=objective.best_epoch
        )
        if defines and ctx.is_main and ctx.artifacts_dir is not None:
            task.save_artifacts(ctx.artifacts_dir)
        _report(task, objective, epoch, metrics, ctx.is_main, torch)


def _run_epoch(task: Any, epoch: int) -> dict[str, float]:
    t0 = time.perf_counter()
    for hook in task.hooks():
        hook.on_epoch_start(task, epoch)
    metrics: dict[str, float] = dict(task.train_epoch(epoch))
    metrics.update(task.evaluate(epoch))
    for hook in task.hooks():
        hook.on_epoch_end(task, epoch, metrics)
    metrics["epoch_time_s"] = time.perf_counter() - t0
    return metrics


def _report(
    task: Any, objective: Objective, epoch: int, metrics: dict[str, float], main: bool, torch: Any
) -> None:
    """Every rank reports (Train V2 synchronises on it); only rank 0 attaches a checkpoint."""
    import ray.train

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if main:
            state = {"task": task.state_dict(), "epoch": epoch, "objective": objective.__dict__}
            torch.save(state, Path(tmp) / CHECKPOINT_FILE)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)


def _restore(task: Any, objective: Objective, checkpoint: Any, torch: Any) -> int:
    """Load the latest checkpoint if Ray Train provides one; return the first epoch to run."""
    if checkpoint is None:
        return 1
    with checkpoint.as_directory() as path:
        state = torch.load(Path(path) / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
    task.load_state_dict(state["task"])
    objective.best = state["objective"]["best"]
    objective.best_epoch = state["objective"]["best_epoch"]
    return int(state["epoch"]) + 1

"""The generic `train_loop_per_worker` every Ray Train worker runs, whatever the task.

Per epoch: hooks -> train -> evaluate -> hooks -> the run's rank 0 writes the epoch's metric rows
to the results store itself and tells its trial, then every rank reports to Ray Train with a
checkpoint from rank 0. Rows are written before the checkpoint, so an epoch that trained always
reaches the store: a kill between the two only makes the resumed run train that epoch again and
write the same keys again (readers keep one row per key).

Training resumes from the latest checkpoint Ray Train hands back (a worker failure or a resumed
sweep): model, optimiser, schedules, hooks and every rank's RNG state, so a resumed run produces
the metrics an uninterrupted one would have. A non-finite loss or metric (or a loss above
`train.max_loss`) ends the run as diverged, keeping every finite epoch. After the last epoch the
best epoch's weights predict the splits the trial asked for (test split, pseudo-label pool).
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from orchestrator.plan import EndEvent, EpochEvent, Mode, Reduce, RunSpec

CHECKPOINT_FILE = "state.pt"
BEST_WEIGHTS = "model_best.pt"


@dataclass
class Objective:
    """Tracks the value Optuna optimises: the best epoch's metric, or the last epoch's."""

    metric: str
    mode: Mode
    reduce: Reduce
    best: float = math.nan
    best_epoch: int = 0

    def update(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Record an epoch; True when this epoch is the new best."""
        value = metrics.get(self.metric, math.nan)
        if math.isnan(value):
            return False
        better = (
            math.isnan(self.best)
            or (self.mode == "max" and value > self.best)
            or (self.mode == "min" and value < self.best)
        )
        if better:
            self.best, self.best_epoch = value, epoch
        return better

    def value(self, metrics: dict[str, float]) -> float:
        return self.best if self.reduce == "best" else metrics.get(self.metric, math.nan)

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point of every worker of one run (`loop_config["spec"]`: a `RunSpec`
    in the object store)."""
    import ray
    import ray.train
    import ray.train.torch

    spec: RunSpec = ray.get(loop_config["spec"])
    from orchestrator.config import from_dict
    from orchestrator.registry import get_task
    from tasks.base import RunContext
    from tasks.common.torch_utils import seed_everything

    marks = {**spec.timings, "worker_started": time.time()}
    # Relative paths in configs mean "relative to where the sweep was started".
    if os.path.isdir(spec.cwd):
        os.chdir(spec.cwd)
    config = from_dict(spec.config, source=spec.source, check_sweep=False)
    context = ray.train.get_context()
    rank = context.get_world_rank()
    tee_output(Path(spec.artifacts_dir), rank)
    if rank == 0:
        note_placement_group(Path(spec.artifacts_dir))
    seed_everything(config.experiment.seed + rank)
    task = get_task(config.experiment.task)(config.task)
    ctx = RunContext(
        run_id=spec.run_id,
        seed=config.experiment.seed,
        rank=rank,
        world_size=context.get_world_size(),
        local_rank=context.get_local_rank(),
        device=ray.train.torch.get_device(),
        artifacts_dir=Path(spec.artifacts_dir),
        fold=spec.fold,
        round=spec.round,
        frames=spec.frames,
        prepare_model=ray.train.torch.prepare_model,
        prepare_loader=ray.train.torch.prepare_data_loader,
    )
    ctx.privacy = privacy_filter(spec, task)
    marks["task_ready"] = time.time()
    run_worker(task, ctx, spec, ray.train.get_checkpoint(), _train_report, marks)


def run_worker(
    task: Any,
    ctx: Any,
    spec: RunSpec,
    checkpoint: Any,
    report: Any,
    marks: dict[str, float] | None = None,
) -> None:
    """The epoch loop of one worker (separate from Ray so tests can drive it directly)."""
    from tasks.common.template import Diverged

    marks = dict(marks or {})
    task.setup(ctx)
    marks["setup_done"] = time.time()
    objective = Objective(spec.metric, spec.mode, spec.objective)
    start = restore(task, objective, checkpoint, ctx.rank)
    nodes = _gather_nodes(ctx.device)
    epochs = int(task.config.train.epochs)
    status: Literal["completed", "diverged", "stopped"] = "completed"
    reason, epoch = "", start - 1
    for hook in task.hooks():
        hook.on_fit_start(task)
    try:
        for epoch in range(start, epochs + 1):
            if _stop_requested(spec, ctx):
                status, reason = "stopped", "stopped by its trial"
                break
            try:
                metrics = run_epoch(task, epoch, task.config.train.max_loss)
            except Diverged as err:
                status, reason = "diverged", str(err)
                break
            if epoch == start and ctx.is_main:
                marks["first_step"] = getattr(task, "first_step_at", None) or math.nan
                marks["first_epoch_done"] = time.time()
                write_timings(Path(spec.artifacts_dir), marks)
            _finish_epoch(task, ctx, spec, objective, epoch, metrics, report, nodes)
    finally:
        for hook in task.hooks():
            hook.on_fit_end(task)
    if status == "completed" and spec.predict:
        predict_splits(task, ctx, spec)
    if ctx.is_main and spec.channel is not None:
        best = {"objective": objective.best}
        end = EndEvent(
            spec.run_id,
            spec.fold,
            spec.round,
            status,
            epoch,
            reason,
            objective.best_epoch,
            best,
            nodes,
        )
        import ray

        ray.get(spec.channel.put.remote(end))


TIMINGS_FILE = "timings.json"


def write_timings(directory: Path, marks: dict[str, float]) -> None:
    """Wall-clock marks of a run's start (trial start, launch, worker start, task ready, setup,
    first optimiser step, first epoch) for the start-up benchmark; appended per attempt."""
    import json

    from tasks.common.io import atomic_write_json

    path = directory / TIMINGS_FILE
    try:
        attempts = json.loads(path.read_text()) if path.is_file() else []
    except ValueError:
        attempts = []
    atomic_write_json(path, [*attempts, {k: v for k, v in marks.items() if v == v}])


def run_epoch(task: Any, epoch: int, max_loss: float | None = None) -> dict[str, float]:
    """Hooks, one epoch of training, a divergence check, evaluation, hooks."""
    from tasks.common.template import check_finite

    t0 = time.perf_counter()
    for hook in task.hooks():
        hook.on_epoch_start(task, epoch)
    metrics: dict[str, float] = dict(task.train_epoch(epoch))
    metrics["train_time_s"] = time.perf_counter() - t0  # training alone (the step benchmark)
    check_finite(epoch, metrics, max_loss)  # before evaluating a model full of NaNs
    metrics.update(task.evaluate(epoch))
    for hook in task.hooks():
        hook.on_epoch_end(task, epoch, metrics)
    check_finite(epoch, metrics)
    metrics["epoch_time_s"] = time.perf_counter() - t0
    return metrics


def _finish_epoch(
    task: Any,
    ctx: Any,
    spec: RunSpec,
    objective: Objective,
    epoch: int,
    metrics: dict[str, float],
    report: Any,
    nodes: list[dict[str, str]],
) -> None:
    """Best-epoch artifacts, the store rows, the trial event, then the checkpoint report."""
    improved = objective.update(epoch, metrics)
    metrics.update(epoch=epoch, objective=objective.value(metrics), best_epoch=objective.best_epoch)
    if ctx.is_main:
        if improved:
            save_best(task, Path(spec.artifacts_dir))
        write_epoch_rows(spec, epoch, metrics)
        if spec.channel is not None:
            val = task.last_val if spec.send_val else None
            event = EpochEvent(spec.run_id, spec.fold, spec.round, epoch, dict(metrics), val, nodes)
            import ray

            ray.get(spec.channel.put.remote(event))
    report(task, objective, epoch, metrics, ctx)


def save_best(task: Any, directory: Path) -> None:
    """The best epoch's weights (for prediction) and the task's artifacts."""
    from tasks.common.io import atomic_torch_save

    directory.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(task.model_state(), directory / BEST_WEIGHTS)
    task.save_artifacts(directory)


def write_epoch_rows(spec: RunSpec, epoch: int, metrics: dict[str, float]) -> None:
    from orchestrator.results import ResultsStore, metrics_rows

    ids = {"parent_run_id": spec.parent_run_id, "fold": spec.fold, "round": spec.round}
    skip = ("epoch", "best_epoch")
    rows = metrics_rows(spec.sweep, spec.run_id, epoch, metrics, skip=skip, ids=ids)
    ResultsStore(spec.store_root).write_metrics(spec.sweep, rows)


def predict_splits(task: Any, ctx: Any, spec: RunSpec) -> None:
    """The best weights predict each requested split; rank 0 keeps the tables for the trial."""
    import torch

    from tasks.common.io import atomic_write

    directory = Path(spec.artifacts_dir)
    state = torch.load(directory / BEST_WEIGHTS, map_location="cpu", weights_only=True)
    task.load_model_state(state)
    for split in spec.predict:
        frame = task.predict(split)
        if ctx.is_main:
            atomic_write(directory / prediction_cache(split), frame.to_pickle)


def prediction_cache(split: str) -> str:
    """Internal per-run prediction table of a split (read by the trial to ensemble folds)."""
    return f".predictions-{split}.pkl"


def _train_report(
    task: Any, objective: Objective, epoch: int, metrics: dict[str, float], ctx: Any
) -> None:
    """Every rank reports (Train V2 synchronises on it); rank 0 attaches the checkpoint."""
    import ray.train
    import torch

    from tasks.common.torch_utils import gather_objects, rng_state

    rngs = gather_objects([rng_state()])  # every rank's, so a resume continues each stream
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if ctx.is_main:
            state = {
                "task": task.state_dict(),
                "epoch": epoch,
                "objective": objective.state(),
                "rng": rngs,
            }
            torch.save(state, Path(tmp) / CHECKPOINT_FILE)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)


def restore(task: Any, objective: Objective, checkpoint: Any, rank: int = 0) -> int:
    """Load the latest checkpoint if there is one; return the first epoch to run."""
    if checkpoint is None:
        return 1
    import torch

    from tasks.common.torch_utils import set_rng_state

    with checkpoint.as_directory() as path:
        state = torch.load(Path(path) / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
    task.load_state_dict(state["task"])
    objective.best = state["objective"]["best"]
    objective.best_epoch = state["objective"]["best_epoch"]
    rngs = state.get("rng") or []
    if rank < len(rngs):
        set_rng_state(rngs[rank])
    return int(state["epoch"]) + 1


def _stop_requested(spec: RunSpec, ctx: Any) -> bool:
    """Rank 0 asks the trial; every rank gets its answer (so all stop at the same epoch)."""
    from tasks.common.torch_utils import gather_objects

    flag = False
    if ctx.is_main and spec.channel is not None:
        import ray

        flag = bool(ray.get(spec.channel.stopped.remote()))
    return any(gather_objects([flag]))


def _gather_nodes(device: Any) -> list[dict[str, str]]:
    """Node id, IP, host name and torch device (with the GPU's name) of every worker of the run
    (stored with the run: which card trained it is part of its result)."""
    from tasks.common.torch_utils import describe_device, gather_objects

    mine: dict[str, str] = {"hostname": socket.gethostname(), **describe_device(device)}
    try:
        import ray

        mine["node_id"] = ray.get_runtime_context().get_node_id()
        mine["ip"] = ray.util.get_node_ip_address()
    except Exception:  # outside Ray (tests): the host name is all there is
        pass
    return list(gather_objects([mine]))


class _Tee:
    """A stream that also appends to a log file (the run's last lines are stored on failure)."""

    def __init__(self, stream: Any, log: Any) -> None:
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        with contextlib.suppress(OSError, ValueError):  # a full log never breaks training
            self.log.write(text)
        self.stream.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def tee_output(directory: Path, rank: int) -> None:
    """Copy this worker's stdout/stderr to ``worker-rank<r>.log`` and note its pid, so a failed
    run's cause comes with its last log lines (and tests can find the process)."""
    import logging
    import sys

    directory.mkdir(parents=True, exist_ok=True)
    log = (directory / f"worker-rank{rank}.log").open("a", buffering=1, errors="replace")
    log.write(f"--- worker rank {rank}, pid {os.getpid()}, host {socket.gethostname()}\n")
    (directory / f"worker-rank{rank}.pid").write_text(str(os.getpid()))
    sys.stdout, sys.stderr = _Tee(sys.stdout, log), _Tee(sys.stderr, log)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, force=True)


PG_FILE = "placement_group.id"


def note_placement_group(directory: Path) -> None:
    """Record the run's placement group: a trial Tune stops (ASHA) is killed without its Train
    controller removing it, and the driver then releases it (`release_placement_groups`)."""
    import ray.util

    pg = ray.util.get_current_placement_group()
    if pg is not None:
        (directory / PG_FILE).write_text(pg.id.hex())


def release_placement_groups(trial_dir: Path) -> int:
    """Forget the groups recorded under a finished trial's folder and remove those whose Train
    controller is dead; return how many were removed.

    A group whose controller still runs is left to it. A trial returns as soon as its runs
    reported their end, without waiting for Train's teardown; removing the group under a live
    controller made it restart its worker group on a new group that outlived the trial and held
    a CPU the next trials waited for (a sweep stalled after two such trials). A controller that
    dies before its teardown removed its group leaves an orphan, which the driver removes within
    seconds (`release_orphaned_groups`, from `ResultsCallback.on_step_end`)."""
    ids = set()
    for path in trial_dir.rglob(PG_FILE):
        with contextlib.suppress(OSError):
            ids.add(path.read_text().strip())
        path.unlink(missing_ok=True)
    return release_orphaned_groups(only=ids) if ids else 0


def live_placement_groups() -> set[str]:
    """Ids (hex) of this driver's job's placement groups that are not removed."""
    import ray

    job = ray.get_runtime_context().get_job_id()
    table = ray.util.placement_group_table()
    return {pg for pg, v in table.items() if v["state"] != "REMOVED" and pg.endswith(job)}


def release_left_over(before: set[str]) -> int:
    """Remove this job's groups created since `before` that are still there once every trial
    ended. Ray 2.60 does not remove the group of a Train controller that died with its trial
    (Tune stopped it, or it was killed before its workers could record the group), and the
    detached cleaner Ray uses for that is left out (`trainer.py`); once the sweep's trials are
    done, such a group only holds CPUs that the next sweep of this process waits for."""
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    left = live_placement_groups() - before
    for pg in left:
        with contextlib.suppress(Exception):
            remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(pg))))
    return len(left)


def release_orphaned_groups(only: set[str] | None = None) -> int:
    """Remove the placement groups of dead Train controllers (`only`: among these ids, hex);
    return how many.

    A controller that dies because its owner died (a trial Tune stopped, a killed sweep driver)
    leaves its worker group's placement group behind in Ray 2.60: the GCS never marks the
    group's creator dead, so it holds its CPUs until the cluster stops, and the next trials
    (a resumed sweep) wait for them forever. Detached groups are never touched."""
    from ray._private import state
    from ray._raylet import PlacementGroupID
    from ray.core.generated import gcs_pb2
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    dead = {
        actor_id
        for actor_id, actor in state.actors().items()
        if actor["State"] == "DEAD" and actor["ActorClassName"] == "TrainController"
    }
    table: Any = gcs_pb2.PlacementGroupTableData  # type: ignore[attr-defined]  # generated
    removed = 0
    for blob in state.state._connect_and_get_accessor().get_placement_group_table() if dead else []:
        group = table.FromString(blob)
        if group.is_detached or group.state == table.REMOVED:
            continue
        if only is not None and group.placement_group_id.hex() not in only:
            continue
        if group.creator_actor_id.hex() in dead:
            with contextlib.suppress(Exception):  # removed meanwhile
                remove_placement_group(PlacementGroup(PlacementGroupID(group.placement_group_id)))
                removed += 1
    return removed


def privacy_filter(spec: RunSpec, task: Any) -> Any:
    """The filter every per-case table passes before a task writes it (see `privacy`)."""
    from orchestrator.privacy import table_filter

    return table_filter(spec.config.get("privacy") or {}, spec.secret, task.data_root())

"""Runs and sweeps: Ray Tune drives trials, each trial trains in a Ray Train `TorchTrainer`.

A single run is a one-trial Tune experiment without a searcher, so runs and sweeps share one
path: the same results callback, checkpoints, resume and store layout.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import platform
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from orchestrator import space as space_mod
from orchestrator.config import Config, from_dict
from orchestrator.errors import UserError
from orchestrator.registry import get_task

TUNE_DIR = "tune"
TRAIN_DIR = "train"
JOURNAL = "optuna.journal"


@dataclass
class Outcome:
    """What a run or sweep produced: where it lives and how its trials ended."""

    sweep: str
    path: Path
    metric: str
    mode: str
    trials: int
    errors: int


def connect_ray(log_to_driver: bool = False) -> None:
    """Join the cluster named by RAY_ADDRESS (e.g. under `ray job submit`) or start a local Ray.

    Resources are never passed when joining: the cluster decides what it has.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    # Tune would otherwise copy the driver's cwd into every trial; the store is absolute anyway.
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    # Without RAY_ADDRESS, start our own instance even if another local cluster is running
    # (plain ray.init() would silently join it).
    address = None if os.environ.get("RAY_ADDRESS") else "local"
    ray.init(address=address, log_to_driver=log_to_driver, logging_level=logging.WARNING)


def _git_rev() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("medsweep", "ray", "torch", "torchvision", "timm", "optuna"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def _make_trainable(base: dict[str, Any], source: str, info: dict[str, Any]) -> Any:
    """The Tune function trainable: resolve the trial's config, then fit a TorchTrainer."""
    space_json = info["space"]

    def trainable(tune_config: dict[str, Any]) -> None:
        from ray import tune
        from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig
        from ray.tune.integration.ray_train import TuneReportCallback

        from orchestrator.loop import train_loop_per_worker
        from orchestrator.trainer import SweepTorchTrainer

        config = resolve(base, source, space_json, tune_config)
        exp = config.experiment
        trial_id = tune.get_context().get_trial_id()
        res = exp.resources
        use_gpu = res.gpus_per_worker > 0
        per_worker: dict[str, float] = {"CPU": res.cpus_per_worker}
        if use_gpu:
            per_worker["GPU"] = res.gpus_per_worker
        payload = {
            "config": config.to_dict(),
            "source": source,
            "run_id": trial_id,
            "artifacts_dir": str(Path(info["sweep_dir"]) / "artifacts" / trial_id),
            "metric": info["metric"],
            "mode": info["mode"],
            "objective": exp.sweep.objective,
            "cwd": info["cwd"],
        }
        trainer = SweepTorchTrainer(
            train_loop_per_worker,
            train_loop_config=payload,
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
            scaling_config=ScalingConfig(
                num_workers=res.workers,
                use_gpu=use_gpu,
                resources_per_worker=per_worker,
                placement_strategy=res.placement_strategy,
            ),
            run_config=RunConfig(
                # A fixed name per trial: a restarted trial finds its checkpoints and resumes.
                name=trial_id,
                storage_path=str(Path(info["sweep_dir"]) / TRAIN_DIR),
                callbacks=[TuneReportCallback()],  # type: ignore[list-item]
                checkpoint_config=CheckpointConfig(
                    num_to_keep=exp.checkpoint.num_to_keep,
                    checkpoint_score_attribute=info["metric"],
                    checkpoint_score_order=info["mode"],
                ),
                failure_config=FailureConfig(max_failures=0),
            ),
        )
        trainer.fit()

    return trainable


def resolve(
    base: dict[str, Any], source: str, space_json: dict[str, Any], tune_config: dict[str, Any]
) -> Config:
    """The validated config of one trial: the base config plus its decoded search values."""
    config = from_dict(base, source=source)
    overrides = space_mod.decode(config.experiment.sweep.space, tune_config) if space_json else {}
    return config.with_overrides(overrides) if overrides else config


def _searcher(config: Config, sweep_dir: Path, sweep: str, tune_metric: str, mode: str) -> Any:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    sw = config.experiment.sweep
    seed = sw.seed if sw.seed is not None else config.experiment.seed
    sampler: optuna.samplers.BaseSampler = (
        optuna.samplers.TPESampler(seed=seed)
        if sw.sampler == "tpe"
        else optuna.samplers.RandomSampler(seed=seed)
    )
    if sw.storage:
        storage: Any = optuna.storages.get_storage(sw.storage)
    else:
        from optuna.storages.journal import JournalFileBackend

        backend = JournalFileBackend(str(sweep_dir / JOURNAL))
        storage = optuna.storages.JournalStorage(backend)
    return OptunaSearch(
        space_mod.to_optuna(sw.space),
        metric=tune_metric,
        mode=mode,
        sampler=sampler,
        study_name=sweep,
        storage=storage,
    )


def _scheduler(config: Config, epochs: int) -> Any:
    sch = config.experiment.sweep.scheduler
    if sch.type == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=epochs,
        grace_period=min(sch.grace_period, epochs),
        reduction_factor=sch.reduction_factor,
    )


def default_name(config: Config, kind: Literal["run", "sweep"]) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{config.experiment.name}-{stamp}" if kind == "run" else config.experiment.name


def execute(
    config: Config,
    *,
    kind: Literal["run", "sweep"],
    name: str | None = None,
    resume: bool = False,
    quiet: bool = False,
    verbose: bool = False,
) -> Outcome:
    """Validate data, then run the trials of a run or a sweep and store their results."""

    from orchestrator.lineage import resolve_artifacts
    from orchestrator.results import ResultsStore
    from orchestrator.tune_callbacks import ProgressCallback, ResultsCallback

    config = resolve_artifacts(config)
    task_cls = get_task(config.experiment.task)
    task_cls(config.task).check_data()
    sweep = name or default_name(config, kind)
    store = ResultsStore(config.experiment.store.root)
    sweep_dir = store.sweep_dir(sweep).resolve()
    _check_fresh_or_resumable(sweep_dir, sweep, resume)
    metric, mode = config.metric, config.mode
    epochs = config.task.train.epochs
    sw = config.experiment.sweep
    searched = kind == "sweep" and bool(sw.space)
    info: dict[str, Any] = {
        "kind": kind,
        "task": config.experiment.task,
        "metric": metric,
        "mode": mode,
        "epochs": epochs,
        "sweep_dir": str(sweep_dir),
        "cwd": os.getcwd(),
        "space": {k: v.model_dump() for k, v in sw.space.items()} if searched else {},
        "host": socket.gethostname(),
        "user": getpass.getuser(),
        "versions": _versions(),
        "git_rev": _git_rev(),
        "created": time.time(),
        "config": config.to_dict(),
        "source": config.source,
    }
    if not resume:
        store.init_sweep(sweep, info)
    connect_ray(log_to_driver=verbose)
    base = config.to_dict()
    trainable = _make_trainable(base, config.source, info)
    results_cb = ResultsCallback(str(Path(config.experiment.store.root).resolve()), sweep, info)
    results_cb.resolver = _Resolver(base, config.source, info["space"])
    callbacks: list[Any] = [results_cb] + ([] if quiet else [ProgressCallback(metric, epochs)])
    tune_metric = "objective"
    tuner = _build_tuner(
        config, kind, sweep, sweep_dir, trainable, callbacks, tune_metric, mode, epochs, resume
    )
    grid = tuner.fit()
    errors = sum(1 for r in grid if r.error is not None)
    return Outcome(sweep, sweep_dir, metric, mode, len(grid), errors)


class _Resolver:
    """Picklable trial.config -> (searched params, resolved config dict)."""

    def __init__(self, base: dict[str, Any], source: str, space_json: dict[str, Any]) -> None:
        self.base, self.source, self.space_json = base, source, space_json

    def __call__(self, tune_config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        config = resolve(self.base, self.source, self.space_json, tune_config)
        space = config.experiment.sweep.space
        params = space_mod.decode(space, tune_config) if self.space_json else {}
        return params, config.to_dict()


def _check_fresh_or_resumable(sweep_dir: Path, sweep: str, resume: bool) -> None:
    exists = (sweep_dir / "sweep.json").exists()
    if resume and not exists:
        raise UserError(f"nothing to resume: no sweep {sweep!r} in {sweep_dir.parent}")
    if not resume and exists:
        raise UserError(
            f"sweep {sweep!r} already exists in {sweep_dir.parent}; pass --resume to continue it "
            "or --name to start a new one (nothing was changed)"
        )


def _build_tuner(
    config: Config,
    kind: str,
    sweep: str,
    sweep_dir: Path,
    trainable: Any,
    callbacks: list[Any],
    tune_metric: str,
    mode: str,
    epochs: int,
    resume: bool,
) -> Any:
    from ray import tune

    # The trial itself only coordinates; its Ray Train workers hold the real CPUs/GPUs. Tune
    # needs a non-empty bundle, and even 0.001 CPU per trial would leave 0.998 of the last core
    # free, too little for the next trial's worker: reserve one byte of memory instead.
    wrapped = tune.with_resources(trainable, tune.PlacementGroupFactory([{"memory": 1}]))
    tune_path = sweep_dir / TUNE_DIR
    if resume and tune.Tuner.can_restore(str(tune_path)):
        return tune.Tuner.restore(
            str(tune_path), trainable=wrapped, resume_unfinished=True, resume_errored=True
        )
    sw = config.experiment.sweep
    searched = kind == "sweep" and bool(sw.space)
    search_alg = _searcher(config, sweep_dir, sweep, tune_metric, mode) if searched else None
    num_samples = 1 if kind == "run" else sw.num_samples
    tune_config = tune.TuneConfig(
        metric=tune_metric,
        mode=mode,
        search_alg=search_alg,
        scheduler=_scheduler(config, epochs) if kind == "sweep" else None,
        num_samples=num_samples,
        max_concurrent_trials=sw.max_concurrent if kind == "sweep" else 1,
    )
    run_config = tune.RunConfig(
        name=TUNE_DIR,
        storage_path=str(sweep_dir),
        callbacks=callbacks,
        verbose=0,
        failure_config=tune.FailureConfig(max_failures=0),
    )
    return tune.Tuner(wrapped, tune_config=tune_config, run_config=run_config)

"""Runs and sweeps: Ray Tune drives trials; each trial (`orchestrator.trial`) trains its fold
runs as Ray Train `TorchTrainer`s.

A single run is a one-trial Tune experiment without a searcher, so runs and sweeps share one
path: the same trial coordinator, results store layout, checkpoints and resume. Everything that
can be checked is checked before anything is written (config, data, split, resources, the Optuna
storage), so a refused start leaves the store as it was and the sweep name free.

Its parts live beside it and are re-exported here: `orchestrator.raycluster` (joining Ray),
`orchestrator.checks` (the checks before the start), `orchestrator.tuning` (the searcher and the
Tune experiment).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import platform
import socket
import subprocess
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator import space as space_mod
from orchestrator.checks import (
    _check_fresh_or_resumable,
    _check_pseudo_labelling,
    _check_resources,
    _check_searchable,
    _checked_task,
    _fold_limit,
    _max_rounds,
    _per_run,
    check_data,
)
from orchestrator.config import Config, from_dict
from orchestrator.plan import Command, RunSpec, SweepInfo
from orchestrator.raycluster import (
    _loopback_only,
    _quiet_libraries,
    connect_ray,
    job_submission_id,
)
from orchestrator.registry import get_task
from orchestrator.tuning import (
    JOURNAL,
    TRAIN_DIR,
    TUNE_DIR,
    VARIANT,
    Outcome,
    _fit,
    _max_epochs,
    _planned_trials,
    _searcher,
    grid_size,
    open_storage,
)

__all__ = [
    "JOURNAL",
    "TRAIN_DIR",
    "TUNE_DIR",
    "VARIANT",
    "Outcome",
    "_check_fresh_or_resumable",
    "_check_pseudo_labelling",
    "_check_resources",
    "_check_searchable",
    "_checked_task",
    "_fit",
    "_fold_limit",
    "_git_rev",
    "_loopback_only",
    "_max_epochs",
    "_max_rounds",
    "_per_run",
    "_planned_trials",
    "_print_warnings",
    "_quiet_libraries",
    "_searched",
    "_searcher",
    "_sweep_info",
    "_task_of",
    "_versions",
    "check_data",
    "connect_ray",
    "default_name",
    "execute",
    "fit_run",
    "grid_size",
    "job_submission_id",
    "make_trainable",
    "open_storage",
    "resolve",
    "trial_config",
]


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


def resolve(
    base: dict[str, Any], source: str, space_json: dict[str, Any], tune_config: dict[str, Any]
) -> Config:
    """The validated config of one trial: the base config plus its decoded search values, or
    plus its grid variant's overrides (its config then lists no other variants)."""
    config = from_dict(base, source=source, check_sweep=False)
    sw = config.experiment.sweep
    name = tune_config.get(VARIANT)
    if name is not None and name in sw.variants:
        return config.with_overrides(dict(sw.variants[name]), check_sweep=False)
    overrides = space_mod.decode(sw.space, tune_config) if space_json else {}
    return config.with_overrides(overrides, check_sweep=False) if overrides else config


def trial_config(
    base: dict[str, Any], space_json: dict[str, Any], tune_config: dict[str, Any]
) -> dict[str, Any]:
    """`resolve` without validation: the trial starts its runs at once (each run's workers
    validate the config; every searched value was checked against its field up front)."""
    import copy

    from orchestrator.config import set_path

    raw = copy.deepcopy(base)
    name = tune_config.get(VARIANT)
    variants = raw.get("sweep", {}).get("variants") or {}
    if name is not None and name in variants:
        overrides = dict(variants[name])
    else:
        overrides = space_mod.decode_json(space_json, tune_config) if space_json else {}
    for key, value in overrides.items():
        set_path(raw, key, value, source="<trial>")
    return raw


def default_name(config: Config, command: Command) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{config.experiment.name}-{stamp}" if command == "run" else config.experiment.name


def execute(
    config: Config,
    *,
    command: Command,
    name: str | None = None,
    resume: bool = False,
    quiet: bool = False,
    verbose: bool = False,
) -> Outcome:
    """Check everything, then run the trials of a run or a sweep and store their results."""
    from orchestrator.cv import check_resumed, make_split, store_split
    from orchestrator.lineage import resolve_artifacts
    from orchestrator.paths import resolve_paths, with_checked_task
    from orchestrator.preflight import preflight
    from orchestrator.privacy import store_secret
    from orchestrator.results import ResultsStore
    from orchestrator.resume import check_same_config, stored_info

    config = resolve_paths(config)  # relative = to where the user ran the command
    store = ResultsStore(config.experiment.store.root)
    sweep = name or default_name(config, command)
    sweep_dir = store.sweep_dir(sweep).resolve()
    _check_fresh_or_resumable(sweep_dir, sweep, resume)
    previous = stored_info(sweep_dir) if resume else None
    config = resolve_artifacts(config, pinned=previous.config if previous else None)
    if previous is not None:
        check_same_config(previous, config)
    _check_searchable(config)
    from orchestrator import live

    live.say("checking the config and the data", quiet)
    config, task = with_checked_task(config, _checked_task)
    _check_pseudo_labelling(config, task)
    for note in task.notes:
        live.say(note, quiet)
    exp = config.experiment
    split = make_split(task, exp.cv, exp.pseudo, config.source) if exp.cv else None
    if previous is not None and split is not None:
        check_resumed(previous.split_digest, split)
    _quiet_libraries()
    joining = os.environ.get("RAY_ADDRESS")
    live.say(f"joining the Ray cluster at {joining}" if joining else "starting Ray", quiet)
    connect_ray(log_to_driver=verbose)
    hint = live.dashboard_hint()
    if hint:
        live.say(hint, quiet)
    _check_resources(config)
    _print_warnings(preflight(config, task), quiet, "note")
    info = _sweep_info(config, command, sweep, sweep_dir, split)
    warnings = task.sweep_warnings(exp.model_dump(mode="json"))
    if info.transductive:
        warnings.append(
            "transductive setting: pseudo-labels are drawn from the test split itself (as in "
            "seed 002), so test metrics after round 0 are not independent of training"
        )
    info = replace(info, warnings=warnings)
    _print_warnings(info.warnings, quiet)
    searcher = _searcher(config, info) if _searched(config, command) else None
    if previous is None:
        store.init_sweep(sweep, info.to_json())
        if split is not None:
            store_split(sweep_dir, split, task.data_root())
    trainable = make_trainable(info, split, store_secret(store.root), _fold_limit(config))
    return _fit(config, info, trainable, searcher, resume, quiet)


def _print_warnings(warnings: list[str], quiet: bool, label: str = "warning") -> None:
    if warnings and not quiet:
        from rich.console import Console

        console = Console(stderr=True, highlight=False, soft_wrap=True)
        for text in warnings:
            console.print(f"[yellow]{label}:[/yellow] {text}")


def _searched(config: Config, command: Command) -> bool:
    sw = config.experiment.sweep
    return command == "sweep" and bool(sw.space or sw.variants)


def _sweep_info(
    config: Config, command: Command, sweep: str, sweep_dir: Path, split: Any
) -> SweepInfo:
    from orchestrator.privacy import redact_tree

    exp = config.experiment
    space = {k: v.model_dump() for k, v in exp.sweep.space.items()}
    return SweepInfo(
        sweep=sweep,
        command=command,
        task=exp.task,
        metric=config.metric,
        mode=config.mode,
        objective=exp.sweep.objective,
        epochs=config.task.train.epochs,
        store_root=str(Path(exp.store.root).resolve()),
        sweep_dir=str(sweep_dir),
        cwd=os.getcwd(),
        space=space if _searched(config, command) else {},
        config=redact_tree(config.to_dict()),
        source=config.source,
        host=socket.gethostname(),
        user=getpass.getuser(),
        versions=_versions(),
        git_rev=_git_rev(),
        created=time.time(),
        folds=exp.cv.folds if exp.cv else None,
        rounds=exp.pseudo.rounds if exp.pseudo else 0,
        split_digest=split.digest if split is not None else None,
        # only when some trial can run a round (a variant or the search may turn rounds on)
        transductive=bool(split is not None and split.pool_is_test and _max_rounds(config)),
        job_id=job_submission_id(),
    )


def make_trainable(info: SweepInfo, split: Any, secret: bytes, limit: int) -> Any:
    """The Tune function trainable: resolve the trial's config, then run its `Trial`."""
    base, source, space_json = info.config, info.source, info.space

    def trainable(tune_config: dict[str, Any]) -> None:
        from ray import tune

        from orchestrator.folds import open_channel
        from orchestrator.trial import Trial

        config = trial_config(base, space_json, tune_config)
        trial_id = tune.get_context().get_trial_id()
        Trial(
            lambda: _task_of(config, source),
            config,
            info,
            trial_id,
            fit=lambda spec: fit_run(spec, info),
            report=tune.report,
            split=split,
            channel=open_channel(),
            limit=limit,
            secret=secret,
        ).run()

    return trainable


def _task_of(config: dict[str, Any], source: str) -> Any:
    """The trial's task object (for scoring, ensembling and writing predictions)."""
    valid = from_dict(config, source=source, check_sweep=False)
    return get_task(valid.experiment.task)(valid.task)


def fit_run(spec: RunSpec, info: SweepInfo) -> None:
    """One Ray Train run of a trial (a resumed run continues from its latest checkpoint)."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig

    from orchestrator.loop import train_loop_per_worker
    from orchestrator.trainer import OneNodeTorchConfig, SweepTorchTrainer

    res = spec.config["resources"]
    use_gpu = res["gpus_per_worker"] > 0
    per_worker: dict[str, float] = {"CPU": res["cpus_per_worker"]}
    if use_gpu:
        per_worker["GPU"] = res["gpus_per_worker"]
    per_worker.update(res.get("custom") or {})
    os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_TRACKING", "1")  # not passed on by Tune
    trainer = SweepTorchTrainer(
        train_loop_per_worker,
        # A small dict (Train's run-state tracking records it): the spec itself, with its case
        # tables, travels through the object store.
        train_loop_config={"run_id": spec.run_id, "spec": ray.put(spec)},
        backend_config=OneNodeTorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=res["workers"],
            use_gpu=use_gpu,
            resources_per_worker=per_worker,
            placement_strategy=res["placement_strategy"],
        ),
        run_config=RunConfig(
            # A fixed name per run: a restarted trial finds its checkpoints and resumes.
            name=spec.run_id,
            storage_path=str(Path(info.sweep_dir) / TRAIN_DIR),
            # Only resuming needs these (the best weights are kept with the artifacts).
            checkpoint_config=CheckpointConfig(
                num_to_keep=spec.config["checkpoint"]["num_to_keep"]
            ),
            failure_config=FailureConfig(max_failures=spec.config["failure"]["max_retries"]),
        ),
    )
    trainer.fit()

"""Runs and sweeps: Ray Tune drives trials; each trial (`orchestrator.trial`) trains its fold
runs as Ray Train `TorchTrainer`s.

A single run is a one-trial Tune experiment without a searcher, so runs and sweeps share one
path: the same trial coordinator, results store layout, checkpoints and resume. Everything that
can be checked is checked before anything is written (config, data, split, resources, the Optuna
storage), so a refused start leaves the store as it was and the sweep name free.
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
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator import space as space_mod
from orchestrator.config import Config, from_dict
from orchestrator.errors import UserError
from orchestrator.plan import Command, RunSpec, SweepInfo
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
    # The dashboard's Train tab (Tune does not pass this on: `fit_run` sets it in the trial too).
    os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_TRACKING", "1")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=log_to_driver, logging_level=logging.WARNING)
        return
    # Start our own instance even if another local cluster is running (plain ray.init() would
    # silently join it). It serves this machine only: its processes and dashboard listen on
    # 127.0.0.1 unless MEDSWEEP_RAY_HOST names another address (e.g. 0.0.0.0).
    host = os.environ.get("MEDSWEEP_RAY_HOST", "127.0.0.1")
    if host in ("127.0.0.1", "localhost"):
        _loopback_only()
    ray.init(
        address="local",
        log_to_driver=log_to_driver,
        logging_level=logging.WARNING,
        dashboard_host=host,
    )


def _loopback_only() -> None:
    """Make a local Ray use 127.0.0.1 as its node address: its GCS, raylet, workers and agents
    then bind to loopback (Ray turns an explicit `_node_ip_address="127.0.0.1"` into the routable
    address; this switch, meant for laptops, is the one that keeps it)."""
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read by the processes Ray starts
    ray_constants.ENABLE_RAY_CLUSTER = False  # read by this process (imported already)


def job_submission_id() -> str:
    """The `ray job submit` id of this driver: Ray 2.60 passes it only in the job config's
    metadata (RAY_JOB_CONFIG_JSON_ENV_VAR), not as an environment variable of its own."""
    import json

    try:
        meta = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")).get("metadata")
    except ValueError:
        meta = None
    found = (meta or {}).get("job_submission_id") if isinstance(meta, dict) else None
    return str(found or os.environ.get("RAY_JOB_SUBMISSION_ID", ""))


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


VARIANT = "variant"


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


def grid_size(config: Config) -> int:
    import math

    sw = config.experiment.sweep
    if sw.variants:
        return len(sw.variants)
    return math.prod(len(v) for v in space_mod.grid(sw.space).values())


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
    if info.transductive and info.rounds:
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


def _quiet_libraries() -> None:
    """Ray's token-auth notice and Optuna's study log lines are replaced by medsweep's own lines
    (the dashboard hint says how to log in); Tune's console output by the live view."""
    import optuna

    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.ERROR
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Tune's legacy reporter at verbose=0 prints nothing; the default one still prints the
    # "Configuration for experiment" box and a TensorBoard hint.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def _print_warnings(warnings: list[str], quiet: bool, label: str = "warning") -> None:
    if warnings and not quiet:
        from rich.console import Console

        console = Console(stderr=True, highlight=False, soft_wrap=True)
        for text in warnings:
            console.print(f"[yellow]{label}:[/yellow] {text}")


def _checked_task(config: Config) -> Any:
    task = get_task(config.experiment.task)(config.task)
    check_data(task, config.source)
    return task


def check_data(task: Any, source: str) -> None:
    """The task's data checks; a message that names no file names the config."""
    from orchestrator.errors import DataError

    try:
        task.check_data()
    except DataError as err:
        if err.source is None:
            raise DataError(err.message, source=source, where=err.where) from None
        raise


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
        transductive=bool(split is not None and split.pool_is_test),
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
    from ray.train.torch import TorchConfig

    from orchestrator.loop import train_loop_per_worker
    from orchestrator.trainer import SweepTorchTrainer

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
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
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


def _check_fresh_or_resumable(sweep_dir: Path, sweep: str, resume: bool) -> None:
    exists = (sweep_dir / "sweep.json").exists()
    if resume and not exists:
        raise UserError(f"nothing to resume: no sweep {sweep!r} in {sweep_dir.parent}")
    if not resume and exists:
        raise UserError(
            f"sweep {sweep!r} already exists in {sweep_dir.parent}; resume it, or give the new "
            "run another name (nothing was changed)",
            where="name",
        )


def _max_rounds(config: Config) -> int:
    """The most pseudo-label rounds any trial can run: the base config's, a grid variant's or
    the searched range's."""
    exp = config.experiment
    rounds = [exp.pseudo.rounds if exp.pseudo else 0]
    for overrides in exp.sweep.variants.values():
        value = overrides.get("pseudo.rounds", (overrides.get("pseudo") or {}).get("rounds", 0))
        rounds.append(int(value or 0))
    dim = exp.sweep.space.get("pseudo.rounds")
    rounds += [int(v) for v in space_mod.corners(dim)] if dim is not None else []
    return max(rounds)


def _check_pseudo_labelling(config: Config, task: Any) -> None:
    if _max_rounds(config) and not task.pseudo_labelling:
        raise UserError(
            f"task {task.name!r} cannot pseudo-label (its scores are not probabilities); "
            "remove the pseudo section (and pseudo.rounds from variants and the search space)",
            source=config.source,
            where="field pseudo.rounds",
        )


def _check_searchable(config: Config) -> None:
    exp = config.experiment
    if _max_rounds(config) and exp.sweep.scheduler.type == "asha":
        raise UserError(
            "ASHA cannot prune trials with pseudo-label rounds (each round restarts training); "
            "use sweep.scheduler.type: none",
            source=config.source,
            where="field sweep.scheduler.type",
        )


def _fold_limit(config: Config) -> int:
    """How many fold runs of one trial may train at once."""
    cv = config.experiment.cv
    if cv is None or cv.parallel == "never":
        return 1
    if cv.parallel == "always":
        return cv.folds
    import ray

    need = _per_run(config)
    free = ray.available_resources()
    fits = min(int(free.get(k, 0) // v) for k, v in need.items() if v > 0)
    return max(1, min(cv.folds, fits))


def _per_run(config: Config) -> dict[str, float]:
    res = config.experiment.resources
    need = {"CPU": res.workers * res.cpus_per_worker}
    if res.gpus_per_worker:
        need["GPU"] = res.workers * res.gpus_per_worker
    need.update({key: res.workers * amount for key, amount in res.custom.items()})
    return need


def _check_resources(config: Config) -> None:
    """Refuse a trial the cluster can never place (it would pend forever), naming the resource:
    a worker no node can hold, or more workers than the nodes can hold together."""
    import ray

    res, cv = config.experiment.resources, config.experiment.cv
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    per_worker = {"CPU": res.cpus_per_worker, "GPU": res.gpus_per_worker, **res.custom}
    per_worker = {k: v for k, v in per_worker.items() if v > 0}
    for key, amount in per_worker.items():
        biggest = max((n.get(key, 0.0) for n in nodes), default=0.0)
        if amount > biggest:
            field = f"{key.lower()}s_per_worker" if key in ("CPU", "GPU") else f"custom.{key}"
            raise UserError(
                f"a worker asks for {amount:g} {key} but the largest node has {biggest:g}",
                source=config.source,
                where=f"field resources.{field}",
            )
    runs = cv.folds if cv is not None and cv.parallel == "always" else 1
    fits = {k: [int(n.get(k, 0.0) / v + 1e-9) for n in nodes] for k, v in per_worker.items()}
    per_node = [min(counts) for counts in zip(*fits.values(), strict=True)]
    strategy = res.placement_strategy
    room = {"STRICT_PACK": max(per_node, default=0), "STRICT_SPREAD": sum(c > 0 for c in per_node)}
    # A STRICT strategy binds the workers of one run; runs themselves may share nodes.
    need = res.workers if strategy in room else res.workers * runs
    placeable = room.get(strategy, sum(per_node))
    if need > placeable:
        limit = min(fits, key=lambda k: sum(fits[k]))
        what = f"{runs} fold runs x " if runs > 1 else ""
        each = ", ".join(f"{v:g} {k}" for k, v in per_worker.items())
        raise UserError(
            f"{what}{res.workers} worker(s) of {each} each cannot be placed ({strategy}): the "
            f"cluster's nodes hold at most {placeable} such worker(s) (limited by {limit}: "
            f"{ray.cluster_resources().get(limit, 0.0):g} in total)",
            source=config.source,
            where="field resources.workers" + (" / cv.parallel" if runs > 1 else ""),
        )


def _searcher(config: Config, info: SweepInfo) -> Any:
    import optuna

    from orchestrator.search import StudySearch

    sw = config.experiment.sweep
    seed = sw.seed if sw.seed is not None else config.experiment.seed
    space = space_mod.to_optuna(sw.space)
    sampler: optuna.samplers.BaseSampler
    if sw.sampler == "grid":
        names = list(sw.variants)
        grid = {VARIANT: names} if names else space_mod.grid(sw.space)
        if names:
            space = {VARIANT: optuna.distributions.CategoricalDistribution(names)}
        sampler = optuna.samplers.GridSampler(grid, seed=seed)
    elif sw.sampler == "tpe":
        sampler = optuna.samplers.TPESampler(seed=seed)
    else:
        sampler = optuna.samplers.RandomSampler(seed=seed)
    storage = open_storage(sw.storage, Path(info.sweep_dir), config.source)
    return StudySearch(
        space,
        metric="objective",
        mode=info.mode,
        sampler=sampler,
        study_name=info.sweep,
        storage=storage,
        task_metric=info.metric,
        sweep=info.sweep,
        sweep_dir=info.sweep_dir,
    )


def open_storage(url: str | None, sweep_dir: Path, source: str) -> Any:
    """The Optuna storage, opened (and so checked) before the sweep is created."""
    import optuna

    from orchestrator.privacy import redact

    if not url:
        from orchestrator.journal import open_backend  # recovers from a killed driver's lock

        sweep_dir.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(open_backend(sweep_dir / JOURNAL))
    try:
        storage = optuna.storages.get_storage(url)
    except Exception as err:  # a missing driver, a bad URL, a server that refuses
        cause = err.__cause__ if isinstance(err, ImportError) and err.__cause__ else err
        text = redact(str(cause)).splitlines()[0] if str(cause) else ""
        raise UserError(
            f"cannot open the Optuna storage {redact(url)}: {type(cause).__name__}: {text}",
            source=source,
            where="field sweep.storage",
        ) from None
    from orchestrator.privacy import SecretURL

    backend: Any = getattr(storage, "_backend", storage)  # RDB storages come in a cache
    if isinstance(getattr(backend, "url", None), str):
        backend.url = SecretURL(backend.url)  # Tune pickles the searcher: no password in tune/
    return storage


def _fit(
    config: Config, info: SweepInfo, trainable: Any, searcher: Any, resume: bool, quiet: bool
) -> Outcome:
    from ray import tune

    from orchestrator import live
    from orchestrator.search import make_scheduler
    from orchestrator.tune_callbacks import MetricGuard, ResultsCallback

    sw = config.experiment.sweep
    guard = MetricGuard(info.metric)
    results_cb = ResultsCallback(info, guard)
    # always added (Tune pickles callbacks and a resumed sweep gets these back): it forwards to
    # the live view of the running process, which `quiet` leaves out
    callbacks: list[Any] = [results_cb, live.LiveCallback(info.space, info.sweep_dir)]
    # The trial only coordinates; its Ray Train workers hold the real CPUs/GPUs. Tune needs a
    # non-empty bundle, and even 0.001 CPU per trial would leave 0.998 of the last core free,
    # too little for the next trial's worker: reserve one byte of memory instead.
    wrapped = tune.with_resources(trainable, tune.PlacementGroupFactory([{"memory": 1}]))
    tune_path = Path(info.sweep_dir) / TUNE_DIR
    if resume and tune.Tuner.can_restore(str(tune_path)):
        tuner = tune.Tuner.restore(
            str(tune_path), trainable=wrapped, resume_unfinished=True, resume_errored=True
        )
    else:
        sweeping = info.command == "sweep"
        tuner = tune.Tuner(
            wrapped,
            tune_config=tune.TuneConfig(
                metric="objective",
                mode=info.mode,
                search_alg=searcher,
                scheduler=make_scheduler(
                    sw.scheduler.type if sweeping else "none",
                    sw.scheduler.grace_period,
                    sw.scheduler.reduction_factor,
                    _max_epochs(config),
                ),
                num_samples=(grid_size(config) if sw.sampler == "grid" else sw.num_samples)
                if sweeping
                else 1,
                max_concurrent_trials=sw.max_concurrent if sweeping else 1,
            ),
            run_config=tune.RunConfig(
                name=TUNE_DIR,
                storage_path=info.sweep_dir,
                callbacks=callbacks,
                stop=guard,
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
    from orchestrator import signals
    from orchestrator.loop import live_placement_groups, release_placement_groups

    # a driver killed before (the sweep is resumed) left its runs' groups on this cluster
    release_placement_groups(Path(info.sweep_dir) / "artifacts")
    groups_before = live_placement_groups()
    try:
        planned = _planned_trials(config, info.command)
        live.say(f"starting {planned} trial(s)", quiet)
        with (
            signals.graceful_stop(),  # SIGINT/SIGTERM: trials end as interrupted, state saved
            live.session(info.metric, info.mode, planned, info.epochs, quiet),
        ):
            grid = tuner.fit()
    finally:  # trials Tune stopped (ASHA, a stopper, Ctrl-C) leave their groups behind
        from orchestrator.loop import release_left_over, release_placement_groups
        from orchestrator.trial import drop_checkpoints

        release_placement_groups(Path(info.sweep_dir) / "artifacts")
        release_left_over(groups_before)
        if not config.experiment.checkpoint.keep_completed:
            drop_checkpoints(Path(info.sweep_dir))
    if signals.received() is not None:
        raise signals.interrupted(info)
    guard.raise_if_tripped(config.source)
    from orchestrator.results import ResultsStore

    # one part per table: plain Parquet readers (DuckDB globs) then see one row per run
    ResultsStore(info.store_root).compact(info.sweep)
    errors = sum(1 for i in range(len(grid)) if grid[i].error is not None)
    return Outcome(info.sweep, Path(info.sweep_dir), info.metric, info.mode, len(grid), errors)


def _planned_trials(config: Config, command: Command) -> int:
    """How many trials the sweep runs in all (the live view's total)."""
    sw = config.experiment.sweep
    if command != "sweep":
        return 1
    return grid_size(config) if sw.sampler == "grid" else sw.num_samples


def _max_epochs(config: Config) -> int:
    dim = config.experiment.sweep.space.get("train.epochs")
    values = space_mod.corners(dim) if dim is not None else []
    return int(max([config.task.train.epochs, *values]))

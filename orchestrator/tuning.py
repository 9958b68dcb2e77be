"""The Ray Tune side of a run or sweep: the Optuna searcher and its storage, the Tune experiment
that runs the trials (`_fit`) and its size, and the `Outcome` it returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import space as space_mod
from orchestrator.config import Config
from orchestrator.errors import UserError
from orchestrator.plan import Command, SweepInfo

TUNE_DIR = "tune"
TRAIN_DIR = "train"  # the trials' Ray Train runs (`engine.fit_run`)
JOURNAL = "optuna.journal"
VARIANT = "variant"  # the searched parameter of a grid of named variants


@dataclass
class Outcome:
    """What a run or sweep produced: where it lives and how its trials ended."""

    sweep: str
    path: Path
    metric: str
    mode: str
    trials: int
    errors: int


def grid_size(config: Config) -> int:
    import math

    sw = config.experiment.sweep
    if sw.variants:
        return len(sw.variants)
    return math.prod(len(v) for v in space_mod.grid(sw.space).values())


def _searcher(config: Config, info: SweepInfo) -> Any:
    import optuna

    from orchestrator.search import StudySearch, TuneGridSampler

    sw = config.experiment.sweep
    seed = sw.seed if sw.seed is not None else config.experiment.seed
    space = space_mod.to_optuna(sw.space)
    sampler: optuna.samplers.BaseSampler
    if sw.sampler == "grid":
        names = list(sw.variants)
        grid = {VARIANT: names} if names else space_mod.grid(sw.space)
        if names:
            space = {VARIANT: optuna.distributions.CategoricalDistribution(names)}
        sampler = TuneGridSampler(grid, seed=seed)
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
    from orchestrator.loop import (
        live_placement_groups,
        release_orphaned_groups,
        release_placement_groups,
    )

    # a driver killed before (the sweep is resumed) left its runs' groups on this cluster, and
    # trials stopped earlier in this process may have left theirs
    release_placement_groups(Path(info.sweep_dir) / "artifacts")
    release_orphaned_groups()
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
        from orchestrator.loop import release_left_over
        from orchestrator.trial import drop_checkpoints

        release_placement_groups(Path(info.sweep_dir) / "artifacts")
        release_left_over(groups_before)
        ck = config.experiment.checkpoint
        drop_checkpoints(Path(info.sweep_dir), keep=ck.num_to_keep if ck.keep_completed else 0)
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

"""The checks before a run or sweep starts (nothing is written until they pass): the sweep name,
the task's data, pseudo-labelling and ASHA, and whether the cluster can place a trial's workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator import space as space_mod
from orchestrator.config import Config
from orchestrator.errors import UserError
from orchestrator.registry import get_task


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

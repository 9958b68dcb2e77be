"""Tune callbacks that run in the sweep driver: the trials' rows in the results store, the check
that the sweep's metric exists, and progress lines.

Metric rows are written by the runs themselves (`orchestrator.loop`, `orchestrator.trial`); the
driver writes the trial rows of the runs table: status, parameters, resolved config, best and
final metrics, objective, and the stored cause of a failure.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from ray.tune import Callback
from ray.tune.stopper import Stopper

from orchestrator.errors import UserError
from orchestrator.live import LiveCallback
from orchestrator.plan import SweepInfo
from orchestrator.results import ResultsStore

logger = logging.getLogger(__name__)

SKIP_KEYS = frozenset({"checkpoint_path", "epoch", "step", "round", "done", "finished", "diverged"})
ORPHANS_EVERY_S = 5.0  # how often the driver looks for groups of dead Train controllers


class MetricGuard(Stopper):
    """Ends the sweep when the first result lacks the sweep's metric (a typo in sweep.metric).

    State lives in a class-level table keyed by metric, so every copy Tune makes of the guard in
    the driver (pickled with the experiment) sees the same answer.
    """

    _missing: ClassVar[dict[str, list[str]]] = {}

    def __init__(self, metric: str) -> None:
        self.metric = metric
        MetricGuard._missing.pop(metric, None)

    def check(self, result: dict[str, Any]) -> None:
        if self.metric not in result and "objective" in result and not result.get("diverged"):
            reported = sorted(k for k in result if _is_metric(k, result[k]))
            MetricGuard._missing.setdefault(self.metric, reported)

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.stop_all()

    def stop_all(self) -> bool:
        return self.metric in MetricGuard._missing

    def raise_if_tripped(self, source: str) -> None:
        reported = MetricGuard._missing.pop(self.metric, None)
        if reported is not None:
            raise UserError(
                f"the task never reports {self.metric!r}; it reports: {', '.join(reported)}",
                source=source,
                where="field sweep.metric",
            )


def _is_metric(key: str, value: Any) -> bool:
    """Task metrics and the objective; not Tune's bookkeeping (timestamps, ids, config)."""
    if key in SKIP_KEYS or isinstance(value, bool) or not isinstance(value, int | float):
        return False
    head = key.split("_", 1)[0]
    return head in {"train", "val", "test"} or key in {"objective", "epoch_time_s"}


class ResultsCallback(Callback):
    """Writes each trial's runs row on start, completion and error, and keeps the store's tables
    compacted while the sweep runs. Picklable (Tune saves it with the experiment), so a resumed
    sweep keeps start times and best epochs."""

    # a compaction that failed once is not retried (a class default: old pickles lack the field)
    compact_failed: bool = False
    orphans_checked: float = 0.0  # when dead controllers' groups were last looked for

    def __init__(self, info: SweepInfo, guard: MetricGuard) -> None:
        self.info, self.guard = info, guard
        self.started: dict[str, float] = {}
        self.best: dict[str, dict[str, float]] = {}

    def get_state(self) -> dict[str, Any]:
        return {"started": self.started, "best": self.best}

    def set_state(self, state: dict[str, Any]) -> None:
        self.started.update(state.get("started", {}))
        self.best.update(state.get("best", {}))

    @property
    def store(self) -> ResultsStore:
        return ResultsStore(self.info.store_root)

    def _resolved(self, trial: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        from orchestrator import space as space_mod
        from orchestrator.engine import resolve
        from orchestrator.privacy import redact_tree

        config = resolve(self.info.config, self.info.source, self.info.space, trial.config)
        if "variant" in trial.config:
            return {"variant": trial.config["variant"]}, redact_tree(config.to_dict())
        params = (
            space_mod.decode(config.experiment.sweep.space, trial.config) if self.info.space else {}
        )
        return params, redact_tree(config.to_dict())

    def _row(self, trial: Any, status: str, **extra: Any) -> dict[str, Any]:
        params, config = self._resolved(trial)
        last = dict(trial.last_result or {})
        start = self.started.setdefault(trial.trial_id, time.time())
        done = status != "running"
        best = self.best.get(trial.trial_id, {})
        return {
            "sweep": self.info.sweep,
            "run_id": trial.trial_id,
            "parent_run_id": "",
            "command": self.info.command,
            "task": self.info.task,
            "status": status,
            "metric": self.info.metric,
            "mode": self.info.mode,
            "objective": float(last.get("objective", math.nan)),
            "epochs": int(last.get("epoch", 0) or 0),
            "best_epoch": int(last["best_epoch"]) if last.get("best_epoch") else None,
            "round": int(last["round"]) if self.info.rounds and "round" in last else None,
            "params": json.dumps(params, sort_keys=True, default=str),
            "variant": str(params.get("variant", "")),
            "config": json.dumps(config, sort_keys=True),
            "best": json.dumps(best),
            "final": json.dumps({k: v for k, v in last.items() if _is_metric(k, v)}),
            "seed": int(config.get("seed", 0)),
            "start_time": start,
            "end_time": time.time() if done else math.nan,
            "duration_s": (time.time() - start) if done else math.nan,
            "host": self.info.host,
            "nodes": str(last.get("nodes", "[]")),
            "job_id": self.info.job_id,
            "versions": json.dumps(self.info.versions),
            "git_rev": self.info.git_rev,
            "checkpoint": self._checkpoint(trial.trial_id),
            **extra,
        }

    def _checkpoint(self, trial_id: str) -> str:
        from orchestrator.loop import BEST_WEIGHTS

        path = Path(self.info.sweep_dir) / "artifacts" / trial_id / BEST_WEIGHTS
        return str(path.relative_to(Path(self.info.store_root))) if path.is_file() else ""

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.started.setdefault(trial.trial_id, time.time())
        self.store.write_runs(self.info.sweep, [self._row(trial, "running")])

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        self.guard.check(result)
        if result.get("best_epoch") == result.get("epoch") and not result.get("diverged"):
            self.best[trial.trial_id] = {k: v for k, v in result.items() if _is_metric(k, v)}
        self._compact()  # the runs' workers have written this epoch's metric parts

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        """Every few seconds, remove the placement groups of Train controllers that died with
        their trial before their own teardown did: each holds CPUs that waiting trials need."""
        from orchestrator.loop import release_orphaned_groups

        if time.time() - self.orphans_checked < ORPHANS_EVERY_S:
            return
        self.orphans_checked = time.time()
        try:
            release_orphaned_groups()
        except Exception as exc:  # a GCS hiccup never stops the sweep; the next check retries
            logger.debug("results callback: looking for orphaned placement groups: %s", exc)

    def _compact(self) -> None:
        """Merge a table's parts once it holds `LIVE_PARTS` (two runs parts per trial, metric
        parts per epoch and fold): reads during the sweep stay fast. Counting the parts is a
        directory listing; the merge itself runs every few hundred parts. A failure (disk full,
        a corrupt part that reads report anyway) never stops the sweep; the end-of-sweep
        compaction reports it."""
        if self.compact_failed:
            return
        try:
            self.store.compact_live(self.info.sweep)
        except (OSError, UserError) as exc:
            self.compact_failed = True
            logger.warning("results store: live compaction stopped for this sweep: %s", exc)

    def _release(self, trial: Any) -> None:
        """Free what a finished trial holds: placement groups of runs Tune stopped, the resume
        checkpoints of its completed runs (with checkpoint.keep_completed: all but the newest
        num_to_keep), and its runs' internal prediction tables (raw case tables the fold
        ensemble was built from; the written predictions are pseudonymised)."""
        from orchestrator.loop import prediction_cache, release_placement_groups
        from orchestrator.trial import drop_checkpoints

        trial_dir = Path(self.info.sweep_dir) / "artifacts" / trial.trial_id
        release_placement_groups(trial_dir)
        checkpoint = self.info.config.get("checkpoint", {})
        keep = int(checkpoint.get("num_to_keep", 1)) if checkpoint.get("keep_completed") else 0
        drop_checkpoints(Path(self.info.sweep_dir), trial.trial_id, keep)
        for cache in trial_dir.rglob(prediction_cache("*")):
            cache.unlink(missing_ok=True)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._release(trial)
        last = trial.last_result or {}
        cause = self._cause(trial)
        if last.get("diverged"):
            status = "diverged"
            # The run's own words when the trial reports them ("diverged at epoch 3: non-finite
            # train_loss"); otherwise the epoch it stopped at.
            reason = str(last.get("reason") or f"diverged at epoch {last.get('epoch', '?')}")
            cause = {"error": reason, **cause}
        elif last.get("finished"):
            status = "completed"
        else:
            status = "pruned"
        self.store.write_runs(self.info.sweep, [self._row(trial, status, **cause)])
        # its final row is stored and a completed trial never runs again: keep no state for it
        # (the driver's memory stays flat over thousands of trials; an errored trial keeps its
        # start time, a resume may restart it)
        self.started.pop(trial.trial_id, None)
        self.best.pop(trial.trial_id, None)
        self._compact()

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._release(trial)
        cause = self._cause(trial) or _tune_cause(trial)
        self.store.write_runs(self.info.sweep, [self._row(trial, "error", **cause)])
        self._compact()

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        """After SIGINT/SIGTERM (`orchestrator.signals`): every run still stored as running, a
        trial or a fold run of one, is stored as interrupted (Tune saved its state: a resumed
        sweep continues these trials from their checkpoints)."""
        from orchestrator.signals import received

        stopped_by = received()
        if stopped_by is None:
            return
        runs = self.store.runs(self.info.sweep, folds=True)
        running = runs[runs["status"] == "running"]
        by_id = {t.trial_id: t for t in trials}
        why = f"interrupted by {stopped_by}; resume the sweep to continue it"
        rows = [
            self._row(by_id[r["run_id"]], "interrupted", error=why)
            if r["run_id"] in by_id
            else _ended(r, "interrupted", why)
            for r in running.to_dict("records")
        ]
        if rows:
            self.store.write_runs(self.info.sweep, rows)

    def _cause(self, trial: Any) -> dict[str, str]:
        from orchestrator.folds import read_failure
        from orchestrator.privacy import redact

        found = read_failure(Path(self.info.sweep_dir) / "artifacts" / trial.trial_id)
        if not found:
            return {}
        tb = found.get("traceback", "") + "\n--- log ---\n" + found.get("log", "")
        return {"error": redact(found.get("error", "")), "traceback": redact(tb)}


def _ended(stored: Mapping[Any, Any], status: str, error: str) -> dict[str, Any]:
    """A stored runs row (as read back) rewritten with a final status."""
    from orchestrator.results.schema import RUNS_COLUMNS

    row = {k: None if _missing(stored.get(k)) else stored.get(k) for k in RUNS_COLUMNS}
    row.pop("written_at")
    now = time.time()
    start = row.get("start_time") or now
    row.update(status=status, end_time=now, duration_s=now - start, error=error)
    return row


def _missing(value: Any) -> bool:
    import pandas as pd

    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def _tune_cause(trial: Any) -> dict[str, str]:
    """The cause of an error Tune caught outside a fold run (the trial coordinator itself)."""
    from orchestrator.privacy import redact

    text = str(trial.get_error() or "")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return {
        "error": redact(lines[-1][:500] if lines else "unknown error"),
        "traceback": redact(text),
    }


class ProgressCallback(LiveCallback):
    """Kept so sweeps started before the live view (their Tune state pickles this class) can be
    resumed: it forwards to the live view like `orchestrator.live.LiveCallback`."""

    def __init__(self, info: SweepInfo, numbering: dict[str, int] | None = None) -> None:
        super().__init__(info.space, info.sweep_dir)

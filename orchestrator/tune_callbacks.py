"""Tune callbacks that run in the sweep driver: the results-store writer and progress lines."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from ray.tune import Callback

from orchestrator.results import ResultsStore, metrics_rows

SKIP_KEYS = frozenset({"checkpoint_path", "epoch"})


def _error_text(trial: Any) -> str:
    text = trial.get_error() or ""
    lines = [ln for ln in str(text).splitlines() if ln.strip()]
    return "\n".join(lines[-20:])[-4000:]


class ResultsCallback(Callback):
    """Writes every trial's rows to the results store as results arrive, so a killed sweep keeps
    everything it reported. Holds only picklable state: Tune saves it with the experiment."""

    def __init__(self, store_root: str, sweep: str, run_info: dict[str, Any]) -> None:
        self.store_root = store_root
        self.sweep = sweep
        self.run_info = run_info  # task, kind, metric, mode, epochs, host, versions, git_rev, ...
        self.started: dict[str, float] = {}
        self.best: dict[str, dict[str, float]] = {}  # metrics of each trial's best epoch
        self.best_checkpoint: dict[str, str] = {}  # Train keeps it: it ranks by the metric
        self.resolver: Any = None  # trial.config -> (params, resolved config); set by the engine

    def get_state(self) -> dict[str, Any]:
        """Saved with the Tune experiment so a resumed sweep keeps start times and best epochs."""
        return {"started": self.started, "best": self.best, "ckpt": self.best_checkpoint}

    def set_state(self, state: dict[str, Any]) -> None:
        self.started.update(state.get("started", {}))
        self.best.update(state.get("best", {}))
        self.best_checkpoint.update(state.get("ckpt", {}))

    @property
    def store(self) -> ResultsStore:
        return ResultsStore(self.store_root)

    def _row(self, trial: Any, status: str, error: str = "") -> dict[str, Any]:
        params, config = self.resolver(trial.config)
        last = dict(trial.last_result or {})
        start = self.started.setdefault(trial.trial_id, time.time())
        done = status != "running"
        epochs = int(last.get("epoch", 0) or 0)
        metrics = {k: v for k, v in last.items() if _is_metric(k, v)}
        return {
            "sweep": self.sweep,
            "run_id": trial.trial_id,
            "trial_id": trial.trial_id,
            "kind": self.run_info["kind"],
            "task": self.run_info["task"],
            "status": status,
            "metric": self.run_info["metric"],
            "mode": self.run_info["mode"],
            "objective": float(last.get("objective", math.nan)),
            "epochs": epochs,
            "params": json.dumps(params, sort_keys=True, default=str),
            "config": json.dumps(config, sort_keys=True),
            "best": json.dumps(self.best.get(trial.trial_id, {})),
            "final": json.dumps(metrics),
            "seed": int(config.get("seed", 0)),
            "start_time": start,
            "end_time": time.time() if done else math.nan,
            "duration_s": (time.time() - start) if done else math.nan,
            "host": self.run_info["host"],
            "versions": json.dumps(self.run_info["versions"]),
            "git_rev": self.run_info["git_rev"],
            "checkpoint": self.best_checkpoint.get(
                trial.trial_id, str(last.get("checkpoint_path") or "")
            ),
            "error": error,
        }

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.started.setdefault(trial.trial_id, time.time())
        self.store.write_runs(self.sweep, [self._row(trial, "running")])

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        metrics = {k: v for k, v in result.items() if _is_metric(k, v)}
        if result.get("best_epoch") == result.get("epoch"):
            self.best[trial.trial_id] = metrics
            if result.get("checkpoint_path"):
                self.best_checkpoint[trial.trial_id] = str(result["checkpoint_path"])
        rows = metrics_rows(
            self.sweep,
            trial.trial_id,
            int(result.get("epoch", result.get("training_iteration", 0))),
            metrics,
            wall_time=time.time(),
            time_total_s=float(result.get("time_total_s", math.nan)),
        )
        if rows:
            self.store.write_metrics(self.sweep, rows)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        epochs = int((trial.last_result or {}).get("epoch", 0) or 0)
        status = "completed" if epochs >= self.run_info["epochs"] else "stopped"
        self.store.write_runs(self.sweep, [self._row(trial, status)])

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.store.write_runs(self.sweep, [self._row(trial, "error", _error_text(trial))])


def _is_metric(key: str, value: Any) -> bool:
    """Task metrics and the objective; not Tune's bookkeeping (timestamps, ids, config)."""
    if key in SKIP_KEYS or isinstance(value, bool) or not isinstance(value, int | float):
        return False
    head = key.split("_", 1)[0]
    return head in {"train", "val", "test"} or key in {"objective", "epoch_time_s"}


class ProgressCallback(Callback):
    """One rich line per epoch and per finished trial, instead of Tune's status tables."""

    def __init__(self, metric: str, epochs: int, numbering: dict[str, int] | None = None) -> None:
        self.metric = metric
        self.epochs = epochs
        self.numbering = numbering if numbering is not None else {}

    def _label(self, trial: Any) -> str:
        n = self.numbering.setdefault(trial.trial_id, len(self.numbering) + 1)
        return f"trial {n} ({trial.trial_id})"

    def _print(self, text: str) -> None:
        from rich.console import Console

        Console(stderr=True, highlight=False).print(text)

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        value = result.get(self.metric, math.nan)
        self._print(
            f"[dim]{self._label(trial)}[/dim] epoch {result.get('epoch', '?')}/{self.epochs} "
            f"{self.metric} [bold]{value:.4f}[/bold] ({result.get('epoch_time_s', 0):.1f}s)"
        )

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._print(f"[green]{self._label(trial)} finished[/green]")

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        last = _error_text(trial).splitlines()[-1:] or ["(no error text)"]
        self._print(f"[red]{self._label(trial)} failed: {last[0]}[/red]")

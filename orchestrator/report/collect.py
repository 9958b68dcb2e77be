"""What a sweep report shows, read from the results store: summary counts, the leaderboard,
the best trial with its per-case prediction files, failed trials with their causes, and the
Optuna study. Everything here is data; `orchestrator.report.html` renders it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from orchestrator.results.store import ResultsStore
from orchestrator.results.views_best import best as best_view
from orchestrator.results.views_common import (
    FAILED,
    json_cell,
    resolve_sweep,
    store_path,
    test_metric,
    value_of,
    when,
)

PREDICTIONS = "val_predictions.csv"
TEST_PREDICTIONS = "test_predictions.csv"
LESION = "val_lesion.json"


@dataclass
class ReportData:
    """A sweep's report content (JSON-ready except the frames and the study)."""

    sweep: str
    info: dict[str, Any]
    summary: dict[str, Any]
    board: dict[str, Any]
    best: dict[str, Any] | None
    failures: list[dict[str, Any]]
    metrics: pd.DataFrame
    predictions: dict[str, pd.DataFrame] = field(default_factory=dict)
    lesion_file: Path | None = None
    froc_file: Path | None = None
    study: Any = None
    study_note: str = ""


class Snapshot(ResultsStore):
    """A store that reads each table once: the views a report combines would otherwise read
    the same part files several times."""

    def __init__(self, store: ResultsStore) -> None:
        super().__init__(store.root)
        self._cache: dict[tuple[Any, ...], pd.DataFrame] = {}

    def runs(self, sweep: str | None = None, *, folds: bool = False) -> pd.DataFrame:
        key = ("runs", sweep, folds)
        if key not in self._cache:
            self._cache[key] = super().runs(sweep, folds=folds)
        return self._cache[key].copy()

    def metrics(self, sweep: str | None = None, run_id: str | None = None) -> pd.DataFrame:
        key = ("metrics", sweep)
        if key not in self._cache:
            self._cache[key] = super().metrics(sweep)
        frame = self._cache[key]
        return (frame if run_id is None else frame[frame["run_id"] == run_id]).copy()


def collect(store: ResultsStore, sweep: str, top: int = 50) -> ReportData:
    """Read everything the report of `sweep` (or a unique prefix of its name) shows."""
    store = Snapshot(store)
    sweep = resolve_sweep(store, sweep)
    info = store.sweep_info(sweep)
    runs = store.runs(sweep)
    metrics = store.metrics(sweep)
    board = best_view(store, sweep, n=top)
    data = ReportData(
        sweep=sweep,
        info=info,
        summary=_summary(info, runs, board),
        board=board,
        best=None,
        failures=_failures(runs),
        metrics=metrics,
    )
    if board["rows"]:
        best_id = board["rows"][0]["run_id"]
        data.best = _best(store, sweep, runs[runs["run_id"] == best_id].iloc[0], info)
        _artifacts(store, sweep, best_id, data)
    data.study, data.study_note = _study(store, sweep, info)
    return data


def _summary(info: dict[str, Any], runs: pd.DataFrame, board: dict[str, Any]) -> dict[str, Any]:
    status = runs["status"].value_counts().to_dict()
    starts, ends = runs["start_time"].dropna(), runs["end_time"].dropna()
    wall = float(ends.max() - starts.min()) if len(starts) and len(ends) else math.nan
    top = board["rows"][0] if board["rows"] else None
    return {
        "task": info.get("task", ""),
        "command": info.get("command", ""),
        "metric": board["metric"],
        "mode": board["mode"],
        "objective": info.get("objective", "best"),
        "trials": len(runs),
        "completed": int(status.get("completed", 0)),
        "pruned": int(status.get("pruned", 0) + status.get("stopped", 0)),
        "failed": int(sum(status.get(s, 0) for s in FAILED)),
        "running": int(status.get("running", 0)),
        "interrupted": int(status.get("interrupted", 0)),
        "best_run": top["run_id"] if top else None,
        "best_value": top["objective"] if top else None,
        "best_test": top["test"] if top else None,
        "test_metric": test_metric(board["metric"]) if board["metric"] else "",
        "wall_s": value_of(wall),
        "trial_s": value_of(runs["duration_s"].sum(min_count=1)),
        "created": when(info.get("created")) or info.get("created"),
        "host": info.get("host", ""),
        "git_rev": info.get("git_rev", ""),
        "versions": info.get("versions") or {},
        "space": info.get("space") or {},
        "folds": info.get("folds"),
        "rounds": info.get("rounds") or 0,
    }


def _best(store: ResultsStore, sweep: str, row: pd.Series, info: dict[str, Any]) -> dict[str, Any]:
    weights = store_path(store, sweep, str(row.get("checkpoint") or ""))
    return {
        "run_id": row["run_id"],
        "params": json_cell(row["params"]),
        "variant": value_of(row["variant"]) or "",
        "objective": value_of(row["objective"]),
        "best_epoch": value_of(row["best_epoch"]),
        "epochs": value_of(row["epochs"]),
        "duration_s": value_of(row["duration_s"]),
        "best": json_cell(row["best"]),
        "final": json_cell(row["final"]),
        "weights": str(weights) if weights and weights.exists() else None,
        "artifacts": str(store.artifacts_dir(sweep, row["run_id"]).resolve()),
        "metric": info.get("metric", ""),
    }


def _failures(runs: pd.DataFrame) -> list[dict[str, Any]]:
    failed = runs[runs["status"].isin((*FAILED, "interrupted"))]
    return [
        {
            "run_id": r["run_id"],
            "status": r["status"],
            "params": json_cell(r["params"]),
            "error": value_of(r["error"]) or "(no cause stored)",
            "traceback": value_of(r["traceback"]) or "",
        }
        for _, r in failed.iterrows()
    ]


def _artifacts(store: ResultsStore, sweep: str, run_id: str, data: ReportData) -> None:
    """The best trial's per-case predictions (val; for CV trials the folds' pooled out-of-fold
    predictions and the fold-ensemble test predictions), lesion result and FROC curve."""
    folder = store.artifacts_dir(sweep, run_id)
    if not folder.is_dir():
        return
    val = _read_csv(folder / PREDICTIONS)
    if val is None:
        folds = [f for f in sorted(folder.glob(f"*/{PREDICTIONS}"))]
        frames = [f for f in (_read_csv(p) for p in folds) if f is not None]
        val = pd.concat(frames, ignore_index=True) if frames else None
        name = "val (out-of-fold)"
    else:
        name = "val"
    if val is not None:
        data.predictions[name] = val
    test = _read_csv(folder / TEST_PREDICTIONS)
    if test is not None:
        data.predictions["test (fold ensemble)" if data.summary["folds"] else "test"] = test
    lesion = sorted(folder.rglob(LESION))
    data.lesion_file = lesion[0] if lesion else None
    froc = sorted(folder.rglob("*_froc.json"))
    data.froc_file = froc[0] if froc else None


def _read_csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    return frame if {"label", "score"} <= set(frame.columns) else None


def _study(store: ResultsStore, sweep: str, info: dict[str, Any]) -> tuple[Any, str]:
    """The sweep's Optuna study: its RDB storage, or the journal next to the results."""
    import optuna

    url = ((info.get("config") or {}).get("sweep") or {}).get("storage")
    journal = store.sweep_dir(sweep) / "optuna.journal"
    try:
        if url and "***" not in str(url):
            storage: Any = url
        elif journal.is_file():
            from optuna.storages.journal import JournalFileBackend

            storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
        else:
            return None, "no Optuna study (a single run, or a storage this report cannot open)"
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return optuna.load_study(study_name=sweep, storage=storage), ""
    except Exception as err:  # a storage that is gone or refuses: the report goes on without it
        return None, f"the Optuna study could not be read: {type(err).__name__}: {err}"

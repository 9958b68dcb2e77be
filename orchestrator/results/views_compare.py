"""`medsweep results compare A B ...`: runs side by side with every resolved-config field that
differs between them (not only the searched parameters), their metric and its test-split
counterpart (AUC(CV) next to AUC(inner_test) for cross-validated trials).

Each item is a sweep (its best trial), a unique prefix of one, or a run (`sweep/run_id`, a run
id or a unique prefix of one).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from orchestrator.errors import UserError
from orchestrator.results.schema import flatten
from orchestrator.results.store import ResultsStore
from orchestrator.results.views_common import (
    fmt,
    json_cell,
    leaderboard_rows,
    param_names,
    resolve_sweep,
    test_metric,
    value_of,
)
from orchestrator.results.views_runs import find_run


def compare(
    store: ResultsStore, items: Sequence[str], all_fields: bool = False
) -> list[dict[str, Any]]:
    """One column per item; each has `config` (flattened resolved config) and `differs` (the
    config fields whose values are not the same in every column)."""
    if not items:
        raise UserError("give at least one sweep or run to compare", where="SWEEP")
    columns = [_column(store, item) for item in dict.fromkeys(items)]
    keys = sorted({k for c in columns for k in c["config"]})
    differs = [
        k
        for k in keys
        if len({json.dumps(c["config"].get(k), sort_keys=True) for c in columns}) > 1
    ]
    shown = keys if all_fields else differs
    for column in columns:
        column["differs"] = {k: column["config"].get(k) for k in shown}
    return columns


def _column(store: ResultsStore, item: str) -> dict[str, Any]:
    sweep, run_id = _resolve(store, item)
    info = store.sweep_info(sweep)
    metric = str(info.get("metric") or "")
    runs = store.runs(sweep, folds=True)
    if run_id is None:
        top = store.best(sweep, 1)
        run_id = str(top["run_id"].iloc[0]) if len(top) else None
    frame = runs[runs["run_id"] == run_id] if run_id is not None else runs.iloc[0:0]
    rows = leaderboard_rows(frame, param_names(frame), metric)
    row: dict[str, Any] = rows[0] if rows else {"run_id": None, "params": {}}
    config = json_cell(frame["config"].iloc[0]) if len(frame) else {}
    return {
        "item": item,
        "sweep": sweep,
        "task": info.get("task", ""),
        "metric": metric or (str(frame["metric"].iloc[0]) if len(frame) else ""),
        "test_metric": test_metric(metric) if metric else "",
        "mode": info.get("mode") or "max",
        "run_id": row["run_id"],
        "status": row.get("status"),
        "objective": row.get("objective"),
        "test": row.get("test"),
        "epochs": row.get("epochs"),
        "best_epoch": row.get("best_epoch"),
        "duration_s": row.get("duration_s"),
        "params": row["params"],
        "config": {k: value_of(v) for k, v in flatten(config).items()},
    }


def _resolve(store: ResultsStore, item: str) -> tuple[str, str | None]:
    """A sweep (None: its best run) or a run, trying sweep names before run ids."""
    if "/" not in item:
        try:
            return resolve_sweep(store, item), None
        except UserError as sweep_error:
            try:
                return find_run(store, item)
            except UserError:
                raise sweep_error from None
    return find_run(store, item)


def render_compare(console: Console, columns: Sequence[Mapping[str, Any]]) -> None:
    table = Table(title="compared runs (best run of each sweep)", title_justify="left")
    table.add_column("", style="bold")
    for column in columns:
        table.add_column(str(column["item"]), justify="right", overflow="fold")
    facts = {
        "sweep": lambda c: c["sweep"],
        "task": lambda c: c["task"],
        "run": lambda c: c["run_id"],
        "metric": lambda c: f"{c['metric']} ({c['mode']})",
        "objective": lambda c: fmt(c["objective"], ".4f"),
        "test": lambda c: fmt(c["test"], ".4f"),
        "epochs (best)": lambda c: f"{fmt(c['epochs'])} ({fmt(c['best_epoch'])})",
        "time (s)": lambda c: fmt(c["duration_s"], ".1f"),
        "status": lambda c: c["status"],
    }
    tests = any(c.get("test") is not None for c in columns)
    for label, get in facts.items():
        if label == "test":
            if not tests:
                continue
            label = columns[0]["test_metric"] or "test"
        table.add_row(label, *(fmt(get(c)) for c in columns))
    keys = list(dict.fromkeys(k for c in columns for k in c["differs"]))
    if keys:
        table.add_section()
    for key in keys:
        table.add_row(key, *(_cell(c["differs"].get(key)) for c in columns))
    console.print(table)
    if not keys and len(columns) > 1:
        console.print("[dim]the resolved configs are identical[/dim]")


def _cell(value: Any) -> str:
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return "—"
    return fmt(value)

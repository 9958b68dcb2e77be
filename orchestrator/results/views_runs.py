"""`medsweep results ls` (sweeps, or the runs of one sweep) and `results show RUN`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.json import JSON
from rich.table import Table

from orchestrator.errors import UserError
from orchestrator.results.schema import JSON_COLUMNS, SPLITS
from orchestrator.results.store import ResultsStore
from orchestrator.results.views_common import (
    DASH,
    FAILED,
    fmt,
    json_cell,
    resolve_sweep,
    store_path,
    styled_status,
    test_metric,
    value_of,
    when,
)

_SHOW_FIELDS = (
    "sweep", "run_id", "parent_run_id", "fold", "round", "task", "command", "variant", "status",
    "metric", "mode", "objective", "epochs", "best_epoch", "seed", "start_time", "end_time",
    "duration_s", "host", "job_id", "git_rev", "checkpoint", "error", "traceback", "written_at",
)  # fmt: skip


# ----- ls -----------------------------------------------------------------------------------


def ls(store: ResultsStore, sweep: str | None = None, folds: bool = False) -> Any:
    """Without `sweep`: one summary per sweep. With it: one line per run of that sweep."""
    if sweep is not None:
        return runs_of(store, resolve_sweep(store, sweep), folds)
    runs = store.runs()
    return [_summary(store, s, runs[runs["sweep"] == s]) for s in store.sweeps()]


def _summary(store: ResultsStore, sweep: str, runs: pd.DataFrame) -> dict[str, Any]:
    info = store.sweep_info(sweep)
    mode = info.get("mode") or "max"
    objective = runs["objective"].dropna()
    best = None
    if not objective.empty:
        best = float(objective.max() if mode == "max" else objective.min())
    status = runs["status"]
    return {
        "sweep": sweep,
        "task": info.get("task", ""),
        "command": info.get("command") or info.get("kind", ""),
        "runs": len(runs),
        "completed": int((status == "completed").sum()),
        "failed": int(status.isin(FAILED).sum()),
        "running": int((status == "running").sum()),
        "pruned": int(status.isin(("pruned", "stopped")).sum()),
        "metric": info.get("metric", ""),
        "mode": mode,
        "best": best,
        "created": when(info.get("created")) or info.get("created"),  # unix s or ISO text
        "last_written": when(runs["written_at"].max()) if len(runs) else None,
    }


def runs_of(store: ResultsStore, sweep: str, folds: bool = False) -> dict[str, Any]:
    """The runs of one sweep in start order: status, objective, epochs, time and error."""
    info = store.sweep_info(sweep)
    frame = store.runs(sweep, folds=folds)
    rows = [
        {
            "run_id": row["run_id"],
            "trial": value_of(row["parent_run_id"]) or None,
            "fold": value_of(row["fold"]),
            "round": value_of(row["round"]),
            "status": row["status"],
            "variant": value_of(row["variant"]) or "",
            "objective": value_of(row["objective"]),
            "epochs": value_of(row["epochs"]),
            "duration_s": value_of(row["duration_s"]),
            "start": when(row["start_time"]),
            "error": value_of(row["error"]) or "",
        }
        for _, row in frame.iterrows()
    ]
    return {"sweep": sweep, "metric": info.get("metric", ""), "runs": rows}


def render_ls(console: Console, data: Any) -> None:
    if isinstance(data, Mapping):
        _render_runs(console, data)
        return
    if not data:
        console.print("No sweeps in this results store yet.")
        return
    table = Table(title="sweeps", title_justify="left")
    counts = ("runs", "completed", "failed", "running")
    for name in ("sweep", "task", "command", *counts, "best", "created", "last written"):
        table.add_column(name, justify="right" if name in counts else "left")
    for row in data:
        best = DASH if row["best"] is None else f"{row['best']:.4f} ({row['metric']})"
        failed = str(row["failed"])
        table.add_row(
            row["sweep"], row["task"], row["command"], str(row["runs"]), str(row["completed"]),
            f"[red]{failed}[/red]" if row["failed"] else failed, str(row["running"]),
            best, row["created"] or DASH, row["last_written"] or DASH,
        )  # fmt: skip
    console.print(table)
    console.print("[dim]medsweep results ls SWEEP lists the runs of one sweep[/dim]")


def _render_runs(console: Console, data: Mapping[str, Any]) -> None:
    runs = data["runs"]
    if not runs:
        console.print(f"Sweep {data['sweep']} has no runs yet.")
        return
    table = Table(title=f"runs of {data['sweep']}", title_justify="left")
    for name in ("run", "status", data["metric"] or "objective", "epochs", "time (s)", "start"):
        table.add_column(name, justify="right" if name in ("epochs", "time (s)") else "left")
    table.add_column("error", overflow="fold", style="red")
    for row in runs:
        label = row["run_id"] if row["trial"] is None else f"  {row['run_id']}"
        table.add_row(
            label, styled_status(row["status"]), fmt(row["objective"], ".4f"),
            fmt(row["epochs"]), fmt(row["duration_s"], ".1f"), row["start"] or DASH,
            row["error"],
        )  # fmt: skip
    console.print(table)


# ----- show ---------------------------------------------------------------------------------


def find_run(store: ResultsStore, text: str) -> tuple[str, str]:
    """(sweep, run_id) of a run id, a unique prefix, or `sweep/run` — fold runs included."""
    text = text.strip()
    sweep, _, ident = text.rpartition("/")
    frame = store.runs(resolve_sweep(store, sweep), folds=True) if sweep else store.runs(folds=True)
    found = frame[frame["run_id"] == ident]
    if found.empty:
        found = frame[frame["run_id"].str.startswith(ident)]
    if len(found) == 1:
        return str(found["sweep"].iloc[0]), str(found["run_id"].iloc[0])
    if found.empty:
        raise UserError(
            f"no run id starts with {ident!r}; `medsweep results ls SWEEP` lists the runs",
            source=store.root,
        )
    names = [f"{s}/{r}" for s, r in zip(found["sweep"], found["run_id"], strict=True)]
    shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
    raise UserError(
        f"{text!r} matches {len(names)} runs: {shown}; give more characters or sweep/run_id",
        source=store.root,
    )


def show(store: ResultsStore, run: str) -> dict[str, Any]:
    """Everything about one run: its row, parsed JSON fields, artifacts with their current paths,
    the checkpoint where it is now, fold runs of a CV trial, and per-epoch metrics."""
    sweep, run_id = find_run(store, run)
    runs = store.runs(sweep, folds=True)
    row = runs[runs["run_id"] == run_id].iloc[0]
    data: dict[str, Any] = {name: value_of(row[name]) for name in _SHOW_FIELDS}
    data.update({name: json_cell(row[name]) for name in JSON_COLUMNS})
    parent = data.get("parent_run_id")
    # fold runs keep their files in their trial's folder
    folder = store.artifacts_dir(sweep, parent or run_id) / (run_id if parent else "")
    data["artifacts_dir"] = str(folder.resolve())
    data["artifacts"], data["artifact_paths"] = _artifact_files(folder)
    where = store_path(store, sweep, data.get("checkpoint") or "")
    data["checkpoint_path"] = str(where) if where else None
    data["checkpoint_exists"] = bool(where and where.exists())
    data["test_metric"] = test_metric(str(data.get("metric") or ""))
    children = runs[runs["parent_run_id"].fillna("") == run_id]
    data["fold_runs"] = [
        {
            "run_id": r["run_id"],
            "fold": value_of(r["fold"]),
            "round": value_of(r["round"]),
            "status": r["status"],
            "objective": value_of(r["objective"]),
            "best_epoch": value_of(r["best_epoch"]),
        }
        for _, r in children.iterrows()
    ]
    data["metric_columns"], data["epochs_table"] = epoch_table(store.metrics(sweep, run_id))
    return data


def _artifact_files(folder: Path) -> tuple[list[str], list[str]]:
    if not folder.is_dir():
        return [], []
    files = sorted(  # not the bookkeeping files (.done.json, worker pids)
        p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
    )
    return [p.relative_to(folder).as_posix() for p in files], [str(p.resolve()) for p in files]


def epoch_table(metrics: pd.DataFrame) -> tuple[list[str], list[dict[str, Any]]]:
    """Long metrics -> (column names, one dict per epoch); columns ordered train, val, test."""
    if metrics.empty:
        return [], []
    order = {split: i for i, split in enumerate(SPLITS)}
    pairs = sorted(
        set(zip(metrics["split"], metrics["name"], strict=True)),
        key=lambda p: (order.get(p[0], len(order)), p[1]),
    )
    columns = list(dict.fromkeys(f"{s}_{n}" if s else n for s, n in pairs))
    labels = [
        f"{s}_{n}" if s else n for s, n in zip(metrics["split"], metrics["name"], strict=True)
    ]
    wide = metrics.assign(column=labels).pivot_table(
        index="epoch", columns="column", values="value", aggfunc="last", dropna=False
    )
    rows = [
        {"epoch": int(epoch), **{c: value_of(wide.at[epoch, c]) for c in columns}}
        for epoch in wide.index
    ]
    return columns, rows


def render_show(console: Console, data: Mapping[str, Any]) -> None:
    console.print(f"[bold]{data['sweep']}/{data['run_id']}[/]  {styled_status(data['status'])}")
    console.print(_key_values(_run_facts(data)))
    if data.get("traceback") and data["status"] in FAILED:
        console.print("[bold red]cause[/]")
        console.print(data["traceback"], markup=False, highlight=False)
    if data["params"]:
        console.print(_key_values(data["params"], title="params"))
    if data["best"] or data["final"]:
        console.print(_best_final(data["best"], data["final"], data.get("best_epoch")))
    if data.get("fold_runs"):
        console.print(_folds(data["fold_runs"], str(data.get("metric") or "objective")))
    if data["epochs_table"]:
        console.print(_epochs(data["metric_columns"], data["epochs_table"]))
    if data["artifacts"]:
        console.print(f"[bold]artifacts[/] ({data['artifacts_dir']})")
        for name, path in zip(data["artifacts"], data["artifact_paths"], strict=True):
            console.print(f"  {name}  [dim]{path}[/dim]", soft_wrap=True)
    if data["config"]:
        console.print("[bold]config[/]")
        console.print(JSON.from_data(data["config"]))


def _run_facts(data: Mapping[str, Any]) -> dict[str, Any]:
    metric = str(data.get("metric") or "")
    test = (data.get("final") or {}).get(data["test_metric"])
    checkpoint = data.get("checkpoint_path")
    if checkpoint and not data.get("checkpoint_exists"):
        checkpoint += "  (missing: pruned or moved)"
    facts = {
        "task": data["task"],
        "command": data["command"],
        "variant": data.get("variant") or None,
        "trial": data["parent_run_id"] or None,
        "fold": data["fold"],
        "round": data["round"],
        "objective": fmt(data["objective"], ".4f")
        + (f" ({metric}, {data['mode']})" if metric else ""),
        data["test_metric"]: fmt(test, ".4f") if test is not None else None,
        "epochs": data["epochs"],
        "best epoch": data.get("best_epoch"),
        "seed": data["seed"],
        "start": when(data["start_time"]),
        "end": when(data["end_time"]),
        "duration (s)": fmt(data["duration_s"], ".1f"),
        "host": data["host"],
        "git": data["git_rev"],
        "best weights": checkpoint,
        "error": data["error"],
    }
    return {key: value for key, value in facts.items() if value not in (None, "")}


def _key_values(values: Mapping[str, Any], title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in values.items():
        table.add_row(key, fmt(value))
    return table


def _best_final(best: Mapping[str, Any], final: Mapping[str, Any], epoch: Any) -> Table:
    at = f"best epoch ({epoch})" if epoch is not None else "best"
    table = Table(title=f"metrics at the {at} / last epoch", title_justify="left")
    for name in ("metric", "best", "final"):
        table.add_column(name, justify="left" if name == "metric" else "right")
    for name in sorted(set(best) | set(final)):
        table.add_row(name, fmt(best.get(name)), fmt(final.get(name)))
    return table


def _folds(rows: Sequence[Mapping[str, Any]], metric: str) -> Table:
    table = Table(title="fold runs", title_justify="left")
    for name in ("run", "fold", "round", metric, "best epoch", "status"):
        table.add_column(name, justify="left" if name in ("run", "status") else "right")
    for r in rows:
        table.add_row(
            r["run_id"], fmt(r["fold"]), fmt(r["round"]), fmt(r["objective"], ".4f"),
            fmt(r["best_epoch"]), styled_status(r["status"]),
        )  # fmt: skip
    return table


def _epochs(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="per-epoch metrics", title_justify="left")
    table.add_column("epoch", justify="right")
    for name in columns:
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(str(row["epoch"]), *(fmt(row[c]) for c in columns))
    return table

"""What `medsweep results ls|show|best|compare|export` print.

Each view returns plain JSON-ready data (for `--json`) and has a `render_*` function that prints
that same data with rich, so the two outputs can never disagree. `leaderboard_table` is also what
the sweep engine prints at the end of a sweep.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console, RenderableType
from rich.json import JSON
from rich.table import Table

from orchestrator.errors import UserError
from orchestrator.results import parquet_io as pio
from orchestrator.results.schema import JSON_COLUMNS, SPLITS, is_metric_value, plain, to_json
from orchestrator.results.store import ResultsStore, utc_iso

EXPORT_FORMATS = ("csv", "parquet")
_DASH = "—"
_SHOW_FIELDS = (
    "sweep", "run_id", "parent_run_id", "fold", "round", "task", "command", "variant", "status",
    "metric", "mode", "objective", "epochs", "best_epoch", "seed", "start_time", "end_time",
    "duration_s", "host", "job_id", "git_rev", "checkpoint", "error", "traceback", "written_at",
)  # fmt: skip
_STATUS_STYLE = {"completed": "green", "running": "cyan", "error": "red", "stopped": "yellow"}


# ----- small helpers ------------------------------------------------------------------------


def _missing(value: Any) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _value(value: Any) -> Any:
    """A cell as a JSON-ready Python value (NaN and pd.NA -> None)."""
    return None if _missing(value) else plain(value)


def _fmt(value: Any, spec: str = ".4g") -> str:
    value = _value(value)
    if value is None:
        return _DASH
    if isinstance(value, float):
        return format(value, spec)
    return value if isinstance(value, str) else json.dumps(value)


def _when(timestamp: Any) -> str | None:
    value = _value(timestamp)
    return utc_iso(value) if isinstance(value, (int, float)) else None


def _param_names(frame: pd.DataFrame) -> list[str]:
    return [c[len("param.") :] for c in frame.columns if c.startswith("param.")]


# ----- leaderboard --------------------------------------------------------------------------


def _leaderboard_rows(frame: pd.DataFrame, params: Sequence[str]) -> list[dict[str, Any]]:
    return [
        {
            "run_id": row["run_id"],
            "status": row["status"],
            "params": {p: _value(row.get(f"param.{p}")) for p in params},
            "objective": _value(row["objective"]),
            "epochs": _value(row["epochs"]),
            "duration_s": _value(row["duration_s"]),
        }
        for _, row in frame.iterrows()
    ]


def _leaderboard(
    rows: Sequence[Mapping[str, Any]], metric: str, mode: str, params: Sequence[str]
) -> Table:
    arrow = "higher is better" if mode == "max" else "lower is better"
    table = Table(title=f"{metric or 'objective'} ({arrow})", title_justify="left")
    table.add_column("trial", style="bold")
    for header in _short_headers(params):
        table.add_column(header, overflow="fold")
    table.add_column(metric or "objective", justify="right", style="magenta")
    table.add_column("epochs", justify="right")
    table.add_column("time (s)", justify="right")
    table.add_column("status")
    for row in rows:
        status = str(row.get("status") or "")
        table.add_row(
            row["run_id"],
            *(_fmt(row["params"].get(name)) for name in params),
            _fmt(row["objective"], ".4f"),
            _fmt(row["epochs"]),
            _fmt(row["duration_s"], ".1f"),
            f"[{_STATUS_STYLE.get(status, 'white')}]{status}[/]",
        )
    return table


def _short_headers(params: Sequence[str]) -> list[str]:
    """`train.lr` -> `lr` where the last part is unambiguous, so the table fits a terminal."""
    last = [p.rsplit(".", 1)[-1] for p in params]
    return [
        short if last.count(short) == 1 else full for short, full in zip(last, params, strict=True)
    ]


def leaderboard_table(df: pd.DataFrame, metric: str, mode: str, params: Sequence[str]) -> Table:
    """Rich table of runs (a frame from `ResultsStore.best`/`runs`) in the frame's order.

    `params` are searched parameter keys, with or without the `param.` prefix.
    """
    names = [p.removeprefix("param.") for p in params]
    return _leaderboard(_leaderboard_rows(df, names), metric, mode, names)


def leaderboard_for(store: ResultsStore, sweep: str, n: int = 10) -> RenderableType:
    """The leaderboard of a sweep as printed at the end of `medsweep sweep`."""
    data = best(store, sweep, n=n)
    if not data["rows"]:
        return f"Sweep {sweep} has no run with an objective yet."
    return _leaderboard(data["rows"], data["metric"], data["mode"], data["params"])


# ----- ls -----------------------------------------------------------------------------------


def ls(store: ResultsStore) -> list[dict[str, Any]]:
    """One summary per sweep: task, command, run counts, best objective, created, last written."""
    runs = store.runs()
    return [_summary(store, s, runs[runs["sweep"] == s]) for s in store.sweeps()]


def _summary(store: ResultsStore, sweep: str, runs: pd.DataFrame) -> dict[str, Any]:
    info = store.sweep_info(sweep)
    mode = info.get("mode") or "max"
    objective = runs["objective"].dropna()
    best = None
    if not objective.empty:
        best = float(objective.max() if mode == "max" else objective.min())
    return {
        "sweep": sweep,
        "task": info.get("task", ""),
        "command": info.get("command") or info.get("kind", ""),
        "runs": len(runs),
        "completed": int((runs["status"] == "completed").sum()),
        "metric": info.get("metric", ""),
        "mode": mode,
        "best": best,
        "created": _when(info.get("created")) or info.get("created"),  # unix s or ISO text
        "last_written": _when(runs["written_at"].max()) if len(runs) else None,
    }


def render_ls(console: Console, rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        console.print("No sweeps in this results store yet.")
        return
    table = Table(title="sweeps", title_justify="left")
    for name in (
        "sweep",
        "task",
        "command",
        "runs",
        "completed",
        "best",
        "created",
        "last written",
    ):
        table.add_column(name, justify="right" if name in ("runs", "completed") else "left")
    for row in rows:
        best = _DASH if row["best"] is None else f"{row['best']:.4f} ({row['metric']})"
        table.add_row(
            row["sweep"], row["task"], row["command"], str(row["runs"]), str(row["completed"]),
            best, row["created"] or _DASH, row["last_written"] or _DASH,
        )  # fmt: skip
    console.print(table)


# ----- show ---------------------------------------------------------------------------------


def show(store: ResultsStore, run: str) -> dict[str, Any]:
    """Everything about one run: its row, parsed JSON fields, artifacts and per-epoch metrics."""
    sweep, run_id = store.resolve_run(run)
    runs = store.runs(sweep)
    row = runs[runs["run_id"] == run_id].iloc[0]
    data: dict[str, Any] = {name: _value(row[name]) for name in _SHOW_FIELDS}
    data.update({name: json.loads(row[name] or "{}") for name in JSON_COLUMNS})
    parent = data.get("parent_run_id")
    # fold runs keep their files in their trial's folder
    folder = store.artifacts_dir(sweep, parent or run_id) / (run_id if parent else "")
    data["artifacts"] = _artifact_files(folder)
    data["metric_columns"], data["epochs_table"] = _epoch_table(store.metrics(sweep, run_id))
    return data


def _artifact_files(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _label(split: str, name: str) -> str:
    return f"{split}_{name}" if split else name


def _epoch_table(metrics: pd.DataFrame) -> tuple[list[str], list[dict[str, Any]]]:
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
        {"epoch": int(epoch), **{c: _value(wide.at[epoch, c]) for c in columns}}
        for epoch in wide.index
    ]
    return columns, rows


def render_show(console: Console, data: Mapping[str, Any]) -> None:
    style = _STATUS_STYLE.get(data["status"], "")
    console.print(f"[bold]{data['sweep']}/{data['run_id']}[/]  [{style}]{data['status']}[/]")
    console.print(_key_values(_run_facts(data)))
    if data["params"]:
        console.print(_key_values(data["params"], title="params"))
    if data["best"] or data["final"]:
        console.print(_best_final(data["best"], data["final"]))
    if data["epochs_table"]:
        console.print(_epochs(data["metric_columns"], data["epochs_table"]))
    if data["artifacts"]:
        console.print("[bold]artifacts[/]\n" + "\n".join(f"  {a}" for a in data["artifacts"]))
    if data["config"]:
        console.print("[bold]config[/]")
        console.print(JSON.from_data(data["config"]))


def _run_facts(data: Mapping[str, Any]) -> dict[str, Any]:
    facts = {
        "task": data["task"],
        "command": data["command"],
        "trial": data["parent_run_id"] or None,
        "fold": data["fold"],
        "round": data["round"],
        "objective": _fmt(data["objective"], ".4f")
        + (f" ({data['metric']}, {data['mode']})" if data["metric"] else ""),
        "epochs": data["epochs"],
        "seed": data["seed"],
        "start": _when(data["start_time"]),
        "end": _when(data["end_time"]),
        "duration (s)": _fmt(data["duration_s"], ".1f"),
        "host": data["host"],
        "git": data["git_rev"],
        "checkpoint": data["checkpoint"],
        "error": data["error"],
    }
    return {key: value for key, value in facts.items() if value not in (None, "")}


def _key_values(values: Mapping[str, Any], title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for key, value in values.items():
        table.add_row(key, _fmt(value))
    return table


def _best_final(best: Mapping[str, Any], final: Mapping[str, Any]) -> Table:
    table = Table(title="metrics at best / last epoch", title_justify="left")
    for name in ("metric", "best", "final"):
        table.add_column(name, justify="left" if name == "metric" else "right")
    for name in sorted(set(best) | set(final)):
        table.add_row(name, _fmt(best.get(name)), _fmt(final.get(name)))
    return table


def _epochs(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="per-epoch metrics", title_justify="left")
    table.add_column("epoch", justify="right")
    for name in columns:
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(str(row["epoch"]), *(_fmt(row[c]) for c in columns))
    return table


# ----- best / compare -----------------------------------------------------------------------


def best(store: ResultsStore, sweep: str, n: int = 10) -> dict[str, Any]:
    """The sweep's top-n runs by objective."""
    if n < 1:
        raise UserError(f"--n must be at least 1, got {n}", where="--n")
    info = store.sweep_info(sweep)
    frame = store.best(sweep, n)
    params = _param_names(frame)
    metric = info.get("metric") or (str(frame["metric"].iloc[0]) if len(frame) else "")
    return {
        "sweep": sweep,
        "metric": metric,
        "mode": info.get("mode") or "max",
        "params": params,
        "rows": _leaderboard_rows(frame, params),
    }


def render_best(console: Console, data: Mapping[str, Any]) -> None:
    if not data["rows"]:
        console.print(f"Sweep {data['sweep']} has no run with an objective yet.")
        return
    console.print(_leaderboard(data["rows"], data["metric"], data["mode"], data["params"]))
    console.print(f"[dim]medsweep results show RUN_ID  (sweep {data['sweep']})[/dim]")


def compare(store: ResultsStore, sweeps: Sequence[str]) -> list[dict[str, Any]]:
    """The best run of each sweep (objective None where a sweep has none yet)."""
    if not sweeps:
        raise UserError("give at least one sweep name to compare", where="SWEEP")
    return [_best_of(store, sweep) for sweep in dict.fromkeys(sweeps)]


def _best_of(store: ResultsStore, sweep: str) -> dict[str, Any]:
    info = store.sweep_info(sweep)
    top = store.best(sweep, 1)
    rows = _leaderboard_rows(top, _param_names(top))
    row: dict[str, Any] = rows[0] if rows else {"run_id": None, "params": {}}
    return {
        "sweep": sweep,
        "task": info.get("task", ""),
        "metric": info.get("metric") or (str(top["metric"].iloc[0]) if len(top) else ""),
        "mode": info.get("mode") or "max",
        "run_id": row["run_id"],
        "objective": row.get("objective"),
        "epochs": row.get("epochs"),
        "duration_s": row.get("duration_s"),
        "params": row["params"],
    }


def render_compare(console: Console, rows: Sequence[Mapping[str, Any]]) -> None:
    table = Table(title="best run per sweep", title_justify="left")
    table.add_column("", style="bold")
    for row in rows:
        table.add_column(row["sweep"], justify="right")
    fields = {
        "task": lambda r: r["task"],
        "run": lambda r: r["run_id"],
        "metric": lambda r: f"{r['metric']} ({r['mode']})",
        "objective": lambda r: _fmt(r["objective"], ".4f"),
        "epochs": lambda r: _fmt(r["epochs"]),
        "time (s)": lambda r: _fmt(r["duration_s"], ".1f"),
    }
    for label, get in fields.items():
        table.add_row(label, *(_fmt(get(r)) for r in rows))
    for name in sorted({p for r in rows for p in r["params"]}):
        table.add_row(name, *(_fmt(r["params"].get(name)) for r in rows))
    console.print(table)


# ----- export -------------------------------------------------------------------------------


def export(store: ResultsStore, sweep: str, fmt: str, out: str | Path) -> dict[str, Any]:
    """Write the sweep's runs (params/best expanded) to `out` and its metrics next to it as
    `<stem>.metrics.<fmt>`; both files appear atomically."""
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"expected one of {list(EXPORT_FORMATS)}, got {fmt!r}", where="--format")
    runs_path = Path(out)
    if runs_path.is_dir():
        raise UserError("--out names a folder; give a file path", source=runs_path)
    metrics_path = runs_path.with_name(f"{runs_path.stem}.metrics.{fmt}")
    runs, metrics = store.runs(sweep), store.metrics(sweep)
    _write_export(runs, runs_path, fmt, "runs")
    _write_export(metrics, metrics_path, fmt, "metrics")
    return {
        "sweep": sweep,
        "format": fmt,
        "runs": str(runs_path),
        "metrics": str(metrics_path),
        "runs_rows": len(runs),
        "metrics_rows": len(metrics),
    }


def _write_export(frame: pd.DataFrame, path: Path, fmt: str, table: str) -> None:
    frame = _exportable(frame)
    try:
        if fmt == "parquet":
            pio.write_part(frame, path.parent, table, name=path.name)
        else:
            with pio.atomic_path(path) as tmp:
                frame.to_csv(tmp, index=False)
    except OSError as exc:
        raise UserError(f"cannot write the export: {exc}", source=path) from exc


def _exportable(frame: pd.DataFrame) -> pd.DataFrame:
    """Give every text/object column one Parquet type: strings stay strings, all-numeric become
    float, anything mixed (lists, str+int choices) becomes JSON text."""
    out = frame.copy()
    for name in out.columns:
        column = out[name]
        if not (column.dtype == object or pd.api.types.is_string_dtype(column.dtype)):
            continue
        present = [v for v in column if not _missing(v)]
        if present and all(is_metric_value(v) for v in present):
            out[name] = pd.to_numeric(column.where(column.notna(), math.nan)).astype("float64")
        elif all(isinstance(v, str) for v in present):
            out[name] = column.astype(object).where(column.notna(), None)
        else:
            out[name] = [None if _missing(v) else to_json(v) for v in column.astype(object)]
    return out


def render_export(console: Console, data: Mapping[str, Any]) -> None:
    console.print(f"Wrote {data['runs_rows']} runs to {data['runs']}")
    console.print(f"Wrote {data['metrics_rows']} metric rows to {data['metrics']}")


def render_compact(console: Console, data: Mapping[str, Any]) -> None:
    """Rendering of `ResultsStore.compact`'s report."""
    for table, report in data.items():
        before = report["parts_before"]
        if "rows_after" not in report:
            console.print(f"{table}: {before} part(s), nothing to merge")
            continue
        console.print(
            f"{table}: {before} parts, {report['rows_before']} rows -> 1 part, "
            f"{report['rows_after']} rows ({report['part']})"
        )


_RENDERERS: dict[str, Callable[[Console, Any], None]] = {
    "ls": render_ls,
    "show": render_show,
    "best": render_best,
    "compare": render_compare,
    "export": render_export,
    "compact": render_compact,
}


def render(command: str, data: Any, console: Console) -> None:
    """Print the data of `medsweep results <command>` (as returned by the view) with rich."""
    _RENDERERS[command](console, data)

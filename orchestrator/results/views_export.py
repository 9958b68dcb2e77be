"""`medsweep results export|prune|compact|sql`: files out of the store, disk space back from it,
and the SQL that reads the raw parts correctly (one row per run) with any Parquet engine.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

from orchestrator.errors import UserError
from orchestrator.results import parquet_io as pio
from orchestrator.results.schema import is_metric_value, to_json
from orchestrator.results.store import ResultsStore, expand_json
from orchestrator.results.views_common import missing, resolve_sweep

EXPORT_FORMATS = ("csv", "parquet")
KEEP = ("best", "none")
WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors", ".ckpt")


# ----- export -------------------------------------------------------------------------------


def export(
    store: ResultsStore, sweep: str, fmt: str, out: str | Path, folds: bool = False
) -> dict[str, Any]:
    """Write the sweep's runs (params, best and final metrics flattened) to `out` and its metrics
    next to it as `<stem>.metrics.<fmt>`; both files appear atomically."""
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"expected one of {list(EXPORT_FORMATS)}, got {fmt!r}", where="--format")
    sweep = resolve_sweep(store, sweep)
    runs_path = Path(out)
    if runs_path.is_dir():
        raise UserError("--out names a folder; give a file path", source=runs_path)
    if not runs_path.suffix:
        runs_path = runs_path.with_name(f"{runs_path.name}.{fmt}")
    elif runs_path.suffix.lower() != f".{fmt}":
        raise UserError(
            f"--out ends in {runs_path.suffix!r} but --format is {fmt}; use .{fmt} or no extension",
            source=runs_path,
        )
    metrics_path = runs_path.with_name(f"{runs_path.stem}.metrics.{fmt}")
    runs = expand_json(store.runs(sweep, folds=folds), "final", "final.")
    metrics = store.metrics(sweep)
    if not folds:
        metrics = metrics[metrics["parent_run_id"].fillna("") == ""]
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
    frame = exportable(frame)
    try:
        if fmt == "parquet":
            pio.write_part(frame, path.parent, table, name=path.name)
        else:
            with pio.atomic_path(path) as tmp:
                frame.to_csv(tmp, index=False)
    except OSError as exc:
        raise UserError(f"cannot write the export: {exc}", source=path) from exc


def exportable(frame: pd.DataFrame) -> pd.DataFrame:
    """Give every text/object column one Parquet type: strings stay strings, all-numeric become
    float, anything mixed (lists, str+int choices) becomes JSON text."""
    out = frame.copy().reset_index(drop=True)
    for name in out.columns:
        column = out[name]
        if not (column.dtype == object or pd.api.types.is_string_dtype(column.dtype)):
            continue
        present = [v for v in column if not missing(v)]
        if present and all(is_metric_value(v) for v in present):
            out[name] = pd.to_numeric(column.where(column.notna(), math.nan)).astype("float64")
        elif all(isinstance(v, str) for v in present):
            out[name] = column.astype(object).where(column.notna(), None)
        else:
            out[name] = [None if missing(v) else to_json(v) for v in column.astype(object)]
    return out


def render_export(console: Console, data: Mapping[str, Any]) -> None:
    console.print(f"Wrote {data['runs_rows']} runs to {data['runs']}")
    console.print(f"Wrote {data['metrics_rows']} metric rows to {data['metrics']}")


# ----- prune --------------------------------------------------------------------------------


def prune(
    store: ResultsStore, sweep: str, keep: str = "best", dry_run: bool = False, force: bool = False
) -> dict[str, Any]:
    """Delete model weights and resume checkpoints of a sweep; never its rows or other files.

    `keep="best"` keeps the weights of the best trial (and of its fold runs); `"none"` deletes
    all. A sweep with unfinished (running or interrupted) trials is refused unless `force`,
    since resuming it needs its checkpoints.
    """
    if keep not in KEEP:
        raise UserError(f"expected one of {list(KEEP)}, got {keep!r}", where="--keep")
    sweep = resolve_sweep(store, sweep)
    runs = store.runs(sweep)
    unfinished = runs[runs["status"] == "running"]["run_id"].tolist()
    if unfinished and not force:
        raise UserError(
            f"sweep {sweep!r} has {len(unfinished)} unfinished trial(s) "
            f"({', '.join(unfinished[:5])}); their checkpoints are what `--resume` needs. "
            "Prune once the sweep has ended, or pass --force (nothing was deleted)",
            where="SWEEP",
        )
    top = store.best(sweep, 1)
    kept_trial = str(top["run_id"].iloc[0]) if keep == "best" and len(top) else None
    root = store.sweep_dir(sweep)
    doomed = [p for p in _weights(root / "artifacts") if not _under(p, root, kept_trial)]
    train = [p for p in sorted((root / "train").glob("*")) if p.is_dir()]
    freed = sum(p.stat().st_size for p in doomed) + sum(_size(p) for p in train)
    if not dry_run:
        for path in doomed:
            path.unlink(missing_ok=True)
        for folder in train:
            shutil.rmtree(folder, ignore_errors=True)
    return {
        "sweep": sweep,
        "keep": keep,
        "kept_trial": kept_trial,
        "dry_run": dry_run,
        "weights_deleted": len(doomed),
        "checkpoint_dirs_deleted": len(train),
        "bytes_freed": freed,
        "rows_changed": 0,
    }


def _weights(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES
    )


def _under(path: Path, root: Path, trial: str | None) -> bool:
    return trial is not None and path.is_relative_to(root / "artifacts" / trial)


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def render_prune(console: Console, data: Mapping[str, Any]) -> None:
    verb = "would free" if data["dry_run"] else "freed"
    kept = f"; kept the weights of trial {data['kept_trial']}" if data["kept_trial"] else ""
    console.print(
        f"{data['sweep']}: {data['weights_deleted']} weight file(s) and "
        f"{data['checkpoint_dirs_deleted']} checkpoint folder(s), {verb} "
        f"{human_bytes(data['bytes_freed'])}{kept}; no rows changed"
    )


# ----- compact and SQL ----------------------------------------------------------------------


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


def sql(store: ResultsStore, table: str = "runs", sweep: str | None = None) -> dict[str, Any]:
    """The query that reads a table's raw parts as one row per key (latest write wins)."""
    name = resolve_sweep(store, sweep) if sweep else None
    return {"table": table, "sweep": name, "sql": store.latest_sql(table, name)}


def render_sql(console: Console, data: Mapping[str, Any]) -> None:
    console.print(data["sql"], markup=False, highlight=False, soft_wrap=True)

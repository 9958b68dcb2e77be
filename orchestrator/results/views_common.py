"""Helpers shared by the `medsweep results` views: cell formatting, name resolution, the
leaderboard table and the metric conventions (a validation metric's test counterpart).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table

from orchestrator.errors import UserError
from orchestrator.results.schema import plain
from orchestrator.results.store import ResultsStore, utc_iso

DASH = "—"
FAILED = ("error", "diverged")
STATUS_STYLE = {
    "completed": "green",
    "running": "cyan",
    "error": "red",
    "diverged": "red",
    "pruned": "yellow",
    "stopped": "yellow",
    "interrupted": "yellow",
}


def missing(value: Any) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def value_of(value: Any) -> Any:
    """A cell as a JSON-ready Python value (NaN and pd.NA -> None)."""
    return None if missing(value) else plain(value)


def fmt(value: Any, spec: str = ".4g") -> str:
    value = value_of(value)
    if value is None:
        return DASH
    if isinstance(value, float):
        return format(value, spec)
    return value if isinstance(value, str) else json.dumps(value)


def when(timestamp: Any) -> str | None:
    value = value_of(timestamp)
    return utc_iso(value) if isinstance(value, (int, float)) else None


def styled_status(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"


def param_names(frame: pd.DataFrame) -> list[str]:
    return [c[len("param.") :] for c in frame.columns if c.startswith("param.")]


def json_cell(text: Any) -> Any:
    """A JSON column's cell parsed ({} for empty or missing)."""
    return json.loads(text) if isinstance(text, str) and text else {}


def test_metric(metric: str) -> str:
    """`val_auc` -> `test_auc`: the test split's counterpart of a validation metric."""
    return "test_" + metric.split("_", 1)[1] if "_" in metric else f"test_{metric}"


def guess_mode(metric: str, sweep_metric: str, sweep_mode: str) -> str:
    """The direction of a metric: the sweep's for its own metric, min for losses and errors."""
    if metric == sweep_metric:
        return sweep_mode
    lowered = metric.lower()
    return "min" if any(w in lowered for w in ("loss", "error", "fps", "bpd", "bits")) else "max"


def resolve_sweep(store: ResultsStore, name: str) -> str:
    """A sweep's full name from itself or a unique prefix (as `results show` takes run ids)."""
    known = store.sweeps()
    if name in known:
        return name
    found = [s for s in known if s.startswith(name)]
    if len(found) == 1:
        return found[0]
    if not found:
        listing = ", ".join(known) if known else "none yet"
        raise UserError(
            f"unknown sweep {name!r}; sweeps in this store: {listing}", source=store.root
        )
    raise UserError(
        f"{name!r} matches {len(found)} sweeps: {', '.join(found)}; give more characters",
        source=store.root,
    )


def store_path(store: ResultsStore, sweep: str, stored: str) -> Path | None:
    """A stored path (relative to the store root since schema 2) where it is now.

    Schema-1 rows hold absolute paths of the store's original location; they are re-rooted at
    the sweep folder so a copied or moved store points at its own files.
    """
    if not stored:
        return None
    path = Path(stored)
    if not path.is_absolute():
        return (store.root / path).resolve()
    parts = path.parts
    if sweep in parts:  # the store's own copy, wherever the store was when it was written
        return (store.root / Path(*parts[parts.index(sweep) :])).resolve()
    return path


# ----- leaderboard --------------------------------------------------------------------------


def short_headers(params: Sequence[str]) -> list[str]:
    """`train.lr` -> `lr` where the last part is unambiguous, so the table fits a terminal."""
    last = [p.rsplit(".", 1)[-1] for p in params]
    return [
        short if last.count(short) == 1 else full for short, full in zip(last, params, strict=True)
    ]


def leaderboard_rows(
    frame: pd.DataFrame, params: Sequence[str], metric: str = ""
) -> list[dict[str, Any]]:
    """JSON-ready leaderboard rows; `test` is the test-split counterpart of `metric` (the
    fold-ensemble AUC(inner_test) of a cross-validated trial) where the run reports one."""
    test_name = test_metric(metric) if metric else ""
    rows = []
    for _, row in frame.iterrows():
        best, final = json_cell(row.get("best")), json_cell(row.get("final"))
        test = final.get(test_name, best.get(test_name)) if test_name else None
        rows.append(
            {
                "run_id": row["run_id"],
                "status": row["status"],
                "variant": value_of(row.get("variant")) or "",
                "params": {p: value_of(row.get(f"param.{p}")) for p in params},
                "objective": value_of(row["objective"]),
                "test": value_of(test),
                "epochs": value_of(row["epochs"]),
                "best_epoch": value_of(row.get("best_epoch")),
                "duration_s": value_of(row["duration_s"]),
                "error": value_of(row.get("error")) or "",
            }
        )
    return rows


def leaderboard(
    rows: Sequence[Mapping[str, Any]],
    metric: str,
    mode: str,
    params: Sequence[str],
    title: str | None = None,
    value: str | None = None,
) -> Table:
    """The leaderboard table; `value` names an extra column of each row's `value` (the metric
    the rows are ranked by, where it is not the objective)."""
    arrow = "higher is better" if mode == "max" else "lower is better"
    table = Table(title=title or f"{metric or 'objective'} ({arrow})", title_justify="left")
    table.add_column("trial", style="bold")
    for header in short_headers(params):
        table.add_column(header, overflow="fold")
    table.add_column(metric or "objective", justify="right", style="magenta")
    tests = any(r.get("test") is not None for r in rows)
    if tests:
        table.add_column(test_metric(metric), justify="right", style="cyan")
    if value:
        table.add_column(value, justify="right", style="bold")
    table.add_column("best/epochs", justify="right")
    table.add_column("time (s)", justify="right")
    table.add_column("status")
    for row in rows:
        epochs = fmt(row["epochs"])
        if row.get("best_epoch") is not None:
            epochs = f"{row['best_epoch']}/{epochs}"
        table.add_row(
            row["run_id"],
            *(fmt(row["params"].get(name)) for name in params),
            fmt(row["objective"], ".4f"),
            *([fmt(row.get("test"), ".4f")] if tests else []),
            *([fmt(row.get("value"), ".4f")] if value else []),
            epochs,
            fmt(row["duration_s"], ".1f"),
            styled_status(str(row.get("status") or "")),
        )
    return table

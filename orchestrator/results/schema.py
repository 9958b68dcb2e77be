"""Fixed column schemas of the results tables and row coercion.

Every part file of a table has exactly these columns and types, so any Parquet reader (pyarrow
dataset, DuckDB, pandas) can read a whole table folder as one dataset. This module is pure Python
(no pandas/pyarrow) so that the training loop and the CLI can import it cheaply.
"""

from __future__ import annotations

import json
import math
import numbers
import time
from collections.abc import Iterable, Mapping, Sequence
from operator import itemgetter
from pathlib import PurePath
from typing import Any, Literal

SCHEMA_VERSION = 2

ColumnType = Literal["str", "int", "float"]

RUNS_COLUMNS: dict[str, ColumnType] = {
    "sweep": "str",
    "run_id": "str",
    "parent_run_id": "str",  # the trial of a fold run; empty for a trial (or a plain run)
    "fold": "int",  # null for a trial-level row
    "round": "int",  # pseudo-label round; null for a trial without rounds
    "command": "str",  # the command that made it: run | sweep
    "task": "str",
    "variant": "str",  # grid sweeps: the variant's name
    "status": "str",
    "metric": "str",
    "mode": "str",
    "objective": "float",
    "epochs": "int",
    "best_epoch": "int",
    "params": "str",
    "config": "str",
    "best": "str",
    "final": "str",
    "seed": "int",
    "start_time": "float",
    "end_time": "float",
    "duration_s": "float",
    "host": "str",
    "nodes": "str",  # JSON list of the Train workers' {node_id, ip, hostname, device[, gpu]}
    "job_id": "str",  # the Ray job (under `ray job submit`)
    "versions": "str",
    "git_rev": "str",
    "checkpoint": "str",  # relative to the store root
    "error": "str",  # one line: type and message
    "traceback": "str",  # the cause's traceback and the run's last log lines
    "written_at": "float",
}

METRICS_COLUMNS: dict[str, ColumnType] = {
    "sweep": "str",
    "run_id": "str",
    "parent_run_id": "str",
    "fold": "int",
    "round": "int",
    "epoch": "int",
    "split": "str",
    "name": "str",
    "value": "float",
    "wall_time": "float",
    "time_total_s": "float",
}

# Columns renamed since schema 1 (old name -> new), applied when old parts are read.
RENAMED: dict[str, dict[str, str]] = {"runs": {"kind": "command"}, "metrics": {}}

TABLES: dict[str, dict[str, ColumnType]] = {"runs": RUNS_COLUMNS, "metrics": METRICS_COLUMNS}

# Columns holding a JSON document; stored as strings so the schema stays fixed whatever the task.
JSON_COLUMNS = ("params", "config", "best", "final", "versions", "nodes")
# Rows are the same record when these match; reads keep the last written.
KEYS: dict[str, tuple[str, ...]] = {
    "runs": ("sweep", "run_id"),
    "metrics": ("sweep", "run_id", "round", "epoch", "split", "name"),
}
# The column that orders rewrites of the same key (ties: file order, then row order).
ORDER_BY = {"runs": "written_at", "metrics": "wall_time"}

# stopped: schema-1 name of pruned (early-stopped by the scheduler)
STATUSES = ("running", "completed", "pruned", "diverged", "error", "interrupted", "stopped")
FINISHED = ("completed", "pruned", "diverged", "error", "interrupted", "stopped")
COMMANDS = ("run", "sweep")
MODES = ("max", "min")
SPLITS = ("train", "val", "test")

_NAN = float("nan")
_RUN_DEFAULTS: dict[str, Any] = {
    "parent_run_id": "",
    "fold": None,
    "round": None,
    "command": "run",
    "task": "",
    "variant": "",
    "status": "running",
    "metric": "",
    "mode": "max",
    "objective": _NAN,
    "epochs": 0,
    "best_epoch": None,
    "params": "{}",
    "config": "{}",
    "best": "{}",
    "final": "{}",
    "seed": None,
    "start_time": _NAN,
    "end_time": _NAN,
    "duration_s": _NAN,
    "host": "",
    "nodes": "[]",
    "job_id": "",
    "versions": "{}",
    "git_rev": "",
    "checkpoint": "",
    "error": "",
    "traceback": "",
}
_METRIC_DEFAULTS: dict[str, Any] = {
    "split": "",
    "time_total_s": _NAN,
    "parent_run_id": "",
    "fold": None,
    "round": None,
}
_METRIC_NAMES = frozenset(METRICS_COLUMNS)
_METRIC_REQUIRED = _METRIC_NAMES - {*_METRIC_DEFAULTS, "wall_time", "sweep"}
_NON_EMPTY = ("sweep", "run_id", "name")
_CHOICES: dict[str, tuple[str, ...]] = {
    "status": STATUSES,
    "command": COMMANDS,
    "mode": MODES,
    "split": (*SPLITS, ""),
}


def plain(value: Any) -> Any:
    """Convert to JSON-safe Python values: numpy scalars/arrays unwrapped, NaN/inf -> None.

    Strict JSON (no NaN tokens) keeps the stored documents readable by DuckDB and other parsers.
    """
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars (np.bool_ among them)
        return plain(value.tolist())
    return str(value)


def to_json(value: Any) -> str:
    """Deterministic strict JSON text of `value` (sorted keys)."""
    return json.dumps(plain(value), sort_keys=True, allow_nan=False)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> flat dict with dotted keys ({"a": {"b": 1}} -> {"a.b": 1})."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def split_metric_name(name: str) -> tuple[str, str]:
    """'val_auc' -> ('val', 'auc'); 'train/loss' -> ('train', 'loss'); 'lr' -> ('', 'lr')."""
    for split in SPLITS:
        for sep in ("_", "/"):
            head = split + sep
            if name.startswith(head) and len(name) > len(head):
                return split, name[len(head) :]
    return "", name


def is_metric_value(value: Any) -> bool:
    """Ints and floats (NaN included) are metric values; bools, strings, containers are not."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def metrics_rows(
    sweep: str,
    run_id: str,
    epoch: int,
    metrics: Mapping[str, Any],
    wall_time: float | None = None,
    time_total_s: float = _NAN,
    *,
    skip: Iterable[str] = (),
    ids: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Long-format metric rows of one report; drops non-numeric values and names in `skip`.

    `ids` adds the same columns to every row (``parent_run_id``, ``fold``, ``round``).
    """
    skipped = set(skip)
    now = time.time() if wall_time is None else float(wall_time)
    rows = []
    for key, value in metrics.items():
        if key in skipped or not is_metric_value(value):
            continue
        split, name = split_metric_name(str(key))
        rows.append(
            {
                "sweep": sweep,
                "run_id": run_id,
                "epoch": epoch,
                "split": split,
                "name": name,
                "value": float(value),
                "wall_time": now,
                "time_total_s": float(time_total_s),
                **(ids or {}),
            }
        )
    return rows


class RowError(ValueError):
    """A row handed to the store does not fit the table schema (a bug in the caller)."""


def coerce_runs_row(row: Mapping[str, Any], now: float) -> dict[str, Any]:
    """Validate one runs row and fill defaults; `written_at` defaults to `now`."""
    full = {**_RUN_DEFAULTS, "written_at": now, **row}
    params = _parse_json("params", full.get("params"))
    if isinstance(params, Mapping):
        full["params"] = flatten(params)
    return _coerce(full, RUNS_COLUMNS)


def coerce_metrics_row(row: Mapping[str, Any], now: float) -> dict[str, Any]:
    """Validate one metrics row and fill defaults; `wall_time` defaults to `now`."""
    return _coerce({**_METRIC_DEFAULTS, "wall_time": now, **row}, METRICS_COLUMNS)


def metrics_columns(
    rows: Sequence[Mapping[str, Any]], sweep: str, now: float
) -> dict[str, list[Any]] | None:
    """`coerce_metrics_row` of a whole batch, checked column by column; None where any row needs
    the per-row check.

    Only batches whose column checks prove that every row coerces to exactly what the per-row
    check returns pass: plain dicts with the same keys, values of exactly the types the row check
    keeps as they are. Anything else (an error, a numpy scalar, a bool, an integral float) goes
    through the per-row check, which also words errors with the row index.
    """
    if not rows or set(map(type, rows)) != {dict}:
        return None
    names = tuple(rows[0])
    if set(map(len, rows)) != {len(names)} or not _METRIC_REQUIRED <= set(names) <= _METRIC_NAMES:
        return None
    try:  # same length and every name present: every row has exactly these keys
        given = dict(zip(names, zip(*map(itemgetter(*names), rows), strict=True), strict=True))
    except KeyError:
        return None
    fill = {**_METRIC_DEFAULTS, "wall_time": now, "sweep": sweep}
    out: dict[str, list[Any]] = {}
    for name, kind in METRICS_COLUMNS.items():
        values = list(given[name]) if name in given else [fill[name]] * len(rows)
        checked = _column(name, kind, values)
        if checked is None:
            return None
        out[name] = checked
    return out if set(out["sweep"]) == {sweep} else None


def _column(name: str, kind: ColumnType, values: list[Any]) -> list[Any] | None:
    """`values` as `_coerce_value` returns them, when that is certain from their types alone."""
    types = set(map(type, values))
    if kind == "float":
        if not types <= {float, int}:
            return None
        try:
            return values if types == {float} else [float(v) for v in values]
        except OverflowError:
            return None
    if kind == "int":
        return values if types <= {int, type(None)} else None
    if name in _NON_EMPTY and (types != {str} or "" in values):
        return None
    if not types <= {str, type(None)}:
        return None
    text = values if types == {str} else ["" if v is None else v for v in values]
    choices = _CHOICES.get(name)
    return None if choices is not None and not set(text) <= set(choices) else text


def _coerce(row: dict[str, Any], columns: Mapping[str, ColumnType]) -> dict[str, Any]:
    unknown = sorted(set(row) - set(columns))
    if unknown:
        raise RowError(f"unknown field(s) {unknown}; expected a subset of {list(columns)}")
    missing = [name for name in columns if name not in row]
    if missing:
        raise RowError(f"missing required field(s) {missing}")
    return {name: _coerce_value(name, kind, row[name]) for name, kind in columns.items()}


def _coerce_value(name: str, kind: ColumnType, value: Any) -> Any:
    if name in JSON_COLUMNS:
        return _json_text(name, value)
    if kind == "float":
        return _as_float(name, value)
    if kind == "int":
        return _as_int(name, value)
    return _as_str(name, value)


def _as_str(name: str, value: Any) -> str:
    if name in _NON_EMPTY and (not isinstance(value, str) or not value):
        raise RowError(f"field {name!r} must be a non-empty string, got {value!r}")
    text = "" if value is None else value if isinstance(value, str) else str(value)
    if name in _CHOICES and text not in _CHOICES[name]:
        raise RowError(f"field {name!r} must be one of {list(_CHOICES[name])}, got {text!r}")
    return text


def _as_float(name: str, value: Any) -> float:
    if value is None:
        return _NAN
    if not is_metric_value(value):
        raise RowError(f"field {name!r} must be a number, got {value!r}")
    return float(value)


def _as_int(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise RowError(f"field {name!r} must be an integer, got {value!r}")


def _parse_json(name: str, value: Any) -> Any:
    """JSON text -> Python value; anything else is returned as is."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError as exc:
        raise RowError(f"field {name!r} is not valid JSON text: {exc}") from exc


def _json_text(name: str, value: Any) -> str:
    """Canonical strict JSON: text input is re-encoded so NaN tokens never reach the store."""
    return "{}" if value is None else to_json(_parse_json(name, value))

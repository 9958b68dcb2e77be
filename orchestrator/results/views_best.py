"""`medsweep results best SWEEP`: the leaderboard, ranked by the objective or by any stored
metric, narrowed by `--filter` expressions, with the stored cause of every failed trial.

A filter is `KEY OP VALUE` (OP one of `= != < <= > >=`; `=` and `!=` take `a,b,...` for any
of several values). KEY is `status`, `variant`, `run_id`, `objective`, `epochs`, `best_epoch`,
`duration_s`, a searched parameter (`train.lr`, `param.train.lr`, or `lr` where unambiguous)
or a metric name (`val_auc`, `train_loss`: the trial's best value over its epochs; `test_auc`:
the last value written, since the test split is scored, never selected on).
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
from rich.console import Console, RenderableType
from rich.text import Text

from orchestrator.errors import UserError
from orchestrator.results.store import ResultsStore
from orchestrator.results.views_common import (
    FAILED,
    guess_mode,
    leaderboard,
    leaderboard_rows,
    param_names,
    resolve_sweep,
    value_of,
)

SORTS = ("asc", "desc")
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "!=": operator.ne,
    "==": operator.eq,
    "=": operator.eq,
    "<": operator.lt,
    ">": operator.gt,
}
_FILTER = re.compile(r"^\s*([A-Za-z_][\w.\-/]*)\s*(<=|>=|!=|==|=|<|>)\s*(.*?)\s*$")
_COLUMNS = ("status", "variant", "run_id", "objective", "epochs", "best_epoch", "duration_s")


def metric_values(metrics: pd.DataFrame, name: str, mode: str) -> pd.Series:
    """Per trial (run_id): the best value of metric `name` over epochs (`test_` metrics: the
    last one written, as the test split is scored once per round, never selected on)."""
    split, _, short = name.partition("_") if "_" in name else ("", "", name)
    if split not in ("train", "val", "test"):
        split, short = "", name
    rows = metrics[
        (metrics["split"].fillna("") == split)
        & (metrics["name"] == short)
        & (metrics["parent_run_id"].fillna("") == "")
    ]
    if rows.empty:
        return pd.Series(dtype="float64")
    if split == "test":
        ordered = rows.sort_values(["round", "epoch", "wall_time"], na_position="first")
        return ordered.groupby("run_id")["value"].last()
    return rows.groupby("run_id")["value"].agg("max" if mode == "max" else "min")


def parse_filter(text: str) -> tuple[str, str, str]:
    match = _FILTER.match(text)
    if not match or not match.group(3):
        raise UserError(
            f"cannot read the filter {text!r}; write KEY OP VALUE, e.g. val_auc>=0.8, "
            "status=completed, train.lr<1e-3 (OP one of = != < <= > >=)",
            where="--filter",
        )
    key, op, raw = match.groups()
    return key, op, raw


def _number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _decode(text: str) -> Any:
    """A filter value as JSON where it parses (numbers, true, null), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


class Facts:
    """The values filters and sorting see for each trial of one sweep."""

    def __init__(self, store: ResultsStore, sweep: str, frame: pd.DataFrame) -> None:
        info = store.sweep_info(sweep)
        self.metric = str(info.get("metric") or "")
        self.mode = str(info.get("mode") or "max")
        self.store, self.sweep, self.frame = store, sweep, frame
        self._metrics: pd.DataFrame | None = None

    @property
    def metrics(self) -> pd.DataFrame:
        if self._metrics is None:
            self._metrics = self.store.metrics(self.sweep)
        return self._metrics

    def column(self, key: str) -> pd.Series:
        """The values of `key` aligned with the frame's rows; UserError for an unknown key."""
        frame = self.frame
        if key in _COLUMNS:
            return frame[key]
        if key == self.metric:
            return frame["objective"]
        param = key if key.startswith("param.") else f"param.{key}"
        if param in frame.columns:
            return frame[param]
        by_last = [p for p in param_names(frame) if p.rsplit(".", 1)[-1] == key]
        if len(by_last) == 1:  # `lr` for `train.lr` where that is unambiguous
            return frame[f"param.{by_last[0]}"]
        values = metric_values(self.metrics, key, guess_mode(key, self.metric, self.mode))
        if not values.empty:
            return frame["run_id"].map(values)
        known = [*_COLUMNS, *param_names(frame), *self.metric_names()]
        raise UserError(
            f"unknown key {key!r}; this sweep has: {', '.join(dict.fromkeys(known))}",
            where="--filter/--metric",
        )

    def metric_names(self) -> list[str]:
        m = self.metrics
        m = m[m["parent_run_id"].fillna("") == ""]
        pairs = sorted(set(zip(m["split"].fillna(""), m["name"], strict=True)))
        return [f"{s}_{n}" if s else n for s, n in pairs]

    def keep(self, text: str) -> pd.Series:
        """A boolean mask of the rows that pass one filter."""
        key, op, raw = parse_filter(text)
        column = self.column(key)
        fn = _OPS[op]
        if op in ("=", "==", "!="):
            wanted = [_decode(part.strip()) for part in raw.split(",")]
            hit = column.map(lambda v: any(_equal(v, w) for w in wanted))
            return ~hit if op == "!=" else hit
        bound = _number(raw)
        if bound is None:
            raise UserError(f"{text!r}: {op} needs a number, got {raw!r}", where="--filter")
        numbers = pd.to_numeric(column, errors="coerce")
        return numbers.map(lambda v: bool(pd.notna(v)) and fn(float(v), bound)).astype(bool)


def _equal(value: Any, wanted: Any) -> bool:
    value = value_of(value)
    if isinstance(value, (int, float)) and isinstance(wanted, (int, float)):
        return math.isclose(float(value), float(wanted), rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(value, str) and isinstance(wanted, str):
        return value == wanted
    return json.dumps(value, sort_keys=True) == json.dumps(wanted, sort_keys=True)


def best(
    store: ResultsStore,
    sweep: str,
    n: int = 10,
    *,
    metric: str | None = None,
    sort: str | None = None,
    filters: Sequence[str] = (),
) -> dict[str, Any]:
    """The sweep's top-n trials, best first, plus the causes of its failed trials.

    `sweep` may be a unique prefix; `metric` ranks by another stored metric; `sort` (asc|desc)
    overrides the direction; `filters` narrow the trials (all must hold).
    """
    if n < 1:
        raise UserError(f"--n must be at least 1, got {n}", where="--n")
    if sort is not None and sort not in SORTS:
        raise UserError(f"expected one of {list(SORTS)}, got {sort!r}", where="--sort")
    sweep = resolve_sweep(store, sweep)
    frame = store.runs(sweep)
    facts = Facts(store, sweep, frame)
    failures = _failures(frame)
    for text in filters:
        frame = frame[facts.keep(text).to_numpy()]
        facts.frame = frame
    by = metric or facts.metric
    direction = guess_mode(by, facts.metric, facts.mode) if metric else facts.mode
    ascending = (sort or ("asc" if direction == "min" else "desc")) == "asc"
    values = facts.column(metric) if metric else frame["objective"]
    ranked = frame.assign(_value=pd.to_numeric(values, errors="coerce").to_numpy())
    ranked = ranked[ranked["_value"].notna()]
    ranked = ranked.sort_values(["_value", "run_id"], ascending=[ascending, True], kind="stable")
    top = ranked.head(n)
    params = param_names(frame)
    rows = leaderboard_rows(top, params, facts.metric)
    for row, value in zip(rows, top["_value"], strict=True):
        row["value"] = value_of(value)
    return {
        "sweep": sweep,
        "metric": facts.metric,
        "mode": facts.mode,
        "sort_by": by,
        "sort": "asc" if ascending else "desc",
        "filters": list(filters),
        "params": params,
        "trials": len(store.runs(sweep)),
        "matched": len(ranked),
        "rows": rows,
        "failures": failures,
        "store": str(store.root),
    }


def _failures(frame: pd.DataFrame) -> list[dict[str, Any]]:
    failed = frame[frame["status"].isin(FAILED)]
    return [
        {
            "run_id": r["run_id"],
            "status": r["status"],
            "error": value_of(r["error"]) or "(no cause stored)",
        }
        for _, r in failed.iterrows()
    ]


def render_best(console: Console, data: Mapping[str, Any]) -> None:
    for item in best_renderables(data):
        console.print(item)


def best_renderables(data: Mapping[str, Any]) -> list[RenderableType]:
    """The leaderboard, a count line and the failed trials' causes, ready to print."""
    rows = data["rows"]
    out: list[RenderableType] = []
    if rows:
        ranked_by = data["sort_by"] if data["sort_by"] != data["metric"] else None
        title = f"ranked by {ranked_by} ({data['sort']})" if ranked_by else None
        out.append(
            leaderboard(
                rows, data["metric"], data["mode"], data["params"], title=title, value=ranked_by
            )
        )
        shown = f"{len(rows)} of {data['matched']} matching" if data["filters"] else len(rows)
        out.append(Text(f"{shown} of {data['trials']} trial(s); the best one in detail:"))
        out.append(_show_hint(data, rows[0]["run_id"]))
    elif data["filters"]:
        out.append(Text(f"No trial of {data['sweep']} matches {' and '.join(data['filters'])}."))
    else:
        out.append(Text(f"Sweep {data['sweep']} has no trial with an objective."))
    if data["failures"]:
        out.append(Text(f"{len(data['failures'])} failed trial(s)", style="bold red"))
        for failure in data["failures"]:
            line = Text(f"  {failure['run_id']} ")
            line.append(failure["status"], style="red")
            line.append(f": {failure['error']}")
            out.append(line)
        out.append(Text("the first one's traceback:"))
        out.append(_show_hint(data, data["failures"][0]["run_id"]))
    return out


def _show_hint(data: Mapping[str, Any], run_id: str) -> Text:
    """A `medsweep results show` command that runs as printed."""
    import shlex

    argv = ["medsweep", "results", "show", f"{data['sweep']}/{run_id}"]
    if data.get("store"):
        argv += ["--store", str(data["store"])]
    return Text(f"  {shlex.join(argv)}", style="dim")

"""What `medsweep results ls|show|best|compare|export|prune|compact|sql` print.

Each view returns plain JSON-ready data (for `--json`) and has a `render_*` function that prints
that same data with rich, so the two outputs can never disagree. The views live in
`views_runs` (ls, show), `views_best` (best), `views_compare` (compare) and `views_export`
(export, prune, compact, sql); this module gathers them and holds `leaderboard_table`, also what
the sweep engine prints at the end of a sweep.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
from rich.console import Console, Group, RenderableType
from rich.table import Table

from orchestrator.results.store import ResultsStore
from orchestrator.results.views_best import best, best_renderables, render_best
from orchestrator.results.views_common import leaderboard, leaderboard_rows, resolve_sweep
from orchestrator.results.views_compare import compare, render_compare
from orchestrator.results.views_export import (
    EXPORT_FORMATS,
    export,
    prune,
    render_compact,
    render_export,
    render_prune,
    render_sql,
    sql,
)
from orchestrator.results.views_runs import ls, render_ls, render_show, show

__all__ = [
    "EXPORT_FORMATS",
    "best",
    "compare",
    "export",
    "leaderboard_for",
    "leaderboard_table",
    "ls",
    "prune",
    "render",
    "render_best",
    "render_compact",
    "render_compare",
    "render_export",
    "render_ls",
    "render_prune",
    "render_show",
    "render_sql",
    "resolve_sweep",
    "show",
    "sql",
]


def leaderboard_table(df: pd.DataFrame, metric: str, mode: str, params: Sequence[str]) -> Table:
    """Rich table of runs (a frame from `ResultsStore.best`/`runs`) in the frame's order.

    `params` are searched parameter keys, with or without the `param.` prefix.
    """
    names = [p.removeprefix("param.") for p in params]
    return leaderboard(leaderboard_rows(df, names, metric), metric, mode, names)


def leaderboard_for(
    store: ResultsStore, sweep: str, n: int = 10, failures: bool = True
) -> RenderableType:
    """The leaderboard of a sweep as printed at the end of `medsweep sweep`, with the cause of
    each failed trial under it (unless `failures` is off)."""
    data = best(store, sweep, n=n)
    return Group(*best_renderables(data if failures else {**data, "failures": []}))


_RENDERERS: dict[str, Callable[[Console, Any], None]] = {
    "ls": render_ls,
    "show": render_show,
    "best": render_best,
    "compare": render_compare,
    "export": render_export,
    "compact": render_compact,
    "prune": render_prune,
    "sql": render_sql,
}


def render(command: str, data: Any, console: Console) -> None:
    """Print the data of `medsweep results <command>` (as returned by the view) with rich."""
    _RENDERERS[command](console, data)

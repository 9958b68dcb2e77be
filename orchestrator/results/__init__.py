"""Results store v1: immutable Parquet parts per sweep (runs, metrics) plus artifact folders.

Imports are lazy (as in ray.tune.search) so that `import orchestrator.results` stays cheap for the
CLI; pandas/pyarrow/fastparquet load on first use of the store.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.results.schema import (
        METRICS_COLUMNS,
        RUNS_COLUMNS,
        metrics_rows,
        split_metric_name,
    )
    from orchestrator.results.store import DEFAULT_ROOT, ResultsStore
    from orchestrator.results.views import leaderboard_table

_LAZY = {
    "METRICS_COLUMNS": "schema",
    "RUNS_COLUMNS": "schema",
    "metrics_rows": "schema",
    "split_metric_name": "schema",
    "DEFAULT_ROOT": "store",
    "ResultsStore": "store",
    "leaderboard_table": "views",
}

__all__ = [
    "DEFAULT_ROOT",
    "METRICS_COLUMNS",
    "RUNS_COLUMNS",
    "ResultsStore",
    "leaderboard_table",
    "metrics_rows",
    "split_metric_name",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)

"""The results store: one folder per sweep holding immutable Parquet parts.

Layout under the store root::

    <root>/<sweep>/sweep.json                      sweep metadata (task, command, metric, mode, ...)
    <root>/<sweep>/runs/part-<ns>-<uuid8>.parquet    one row per write of a run (latest wins)
    <root>/<sweep>/metrics/part-*.parquet            long-format metrics (last write per key wins)
    <root>/<sweep>/artifacts/<run_id>/...            files written by tasks, referenced by run_id

Writers only ever add parts; readers deduplicate, so a run is simply written again when its status
changes, and a compaction that crashed half-way leaves nothing worse than duplicates. The sweep
driver merges a table's small parts every few hundred parts (`compact_live`) and the engine merges
each table into one part when the sweep ends (`compact`).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from orchestrator.errors import UserError
from orchestrator.results import parquet_io as pio
from orchestrator.results.schema import (
    KEYS,
    MODES,
    ORDER_BY,
    SCHEMA_VERSION,
    TABLES,
    RowError,
    coerce_metrics_row,
    coerce_runs_row,
    metrics_columns,
    plain,
)

DEFAULT_ROOT = Path("medsweep_results")
SWEEP_FILE = "sweep.json"
_READ_ATTEMPTS = 3
# Parts per table a live sweep's compaction keeps below: reading one small part costs about
# half a millisecond, so a leaderboard read stays well under a second.
LIVE_PARTS = 200


def check_name(what: str, name: str) -> str:
    """Sweep names and run ids become folder names: no separators, not hidden, not empty."""
    bad = not name or name.startswith(".") or any(c in name for c in "/\\\0") or len(name) > 200
    if bad:
        raise UserError(
            f"{what} {name!r} cannot be used as a folder name; use letters, digits and . _ - = "
            "(not starting with a dot, at most 200 characters)",
            where=what,
        )
    return name


def utc_iso(timestamp: float | None = None) -> str:
    """Seconds since the epoch (default: now) as ISO-8601 UTC, e.g. 2025-01-31T12:00:00Z."""
    moment = datetime.fromtimestamp(time.time() if timestamp is None else timestamp, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class ResultsStore:
    """Read and write the results of runs and sweeps under one root folder."""

    def __init__(self, root: str | Path = DEFAULT_ROOT) -> None:
        self.root = Path(root)

    # ----- layout -------------------------------------------------------------------------

    def sweep_dir(self, sweep: str) -> Path:
        return self.root / check_name("sweep name", sweep)

    def table_dir(self, sweep: str, table: str) -> Path:
        return self.sweep_dir(sweep) / table

    def artifacts_dir(self, sweep: str, run_id: str) -> Path:
        """Where a run's artifact files live (not created here: writers create it)."""
        return self.sweep_dir(sweep) / "artifacts" / check_name("run id", run_id)

    # ----- sweeps -------------------------------------------------------------------------

    def init_sweep(self, sweep: str, info: Mapping[str, Any]) -> Path:
        """Write `<sweep>/sweep.json` atomically; a resumed sweep keeps its original `created`."""
        path = self.sweep_dir(sweep) / SWEEP_FILE
        previous = self._load_info(path) if path.exists() else {}
        document = {"sweep": sweep, "schema_version": SCHEMA_VERSION, **info}
        document["created"] = previous.get("created") or document.get("created") or utc_iso()
        if document.get("mode", "max") not in MODES:
            raise UserError(f"mode must be one of {list(MODES)}", source=path, where="mode")
        with pio.atomic_path(path) as tmp:
            tmp.write_text(json.dumps(plain(document), indent=2, allow_nan=False) + "\n")
        return path

    def sweep_info(self, sweep: str) -> dict[str, Any]:
        """The sweep.json document ({"sweep": name} for a folder written without one)."""
        self.require_sweep(sweep)
        path = self.sweep_dir(sweep) / SWEEP_FILE
        return self._load_info(path) if path.exists() else {"sweep": sweep}

    def sweeps(self) -> list[str]:
        """Sweep folders: those with sweep.json, or with parts written before init_sweep."""
        if not self.root.is_dir():
            return []
        return sorted(
            d.name
            for d in self.root.iterdir()
            if d.is_dir()
            and not d.name.startswith(".")
            and any((d / name).exists() for name in (SWEEP_FILE, *TABLES))
        )

    def require_sweep(self, sweep: str) -> None:
        known = self.sweeps()
        if sweep not in known:
            listing = ", ".join(known) if known else "none yet"
            raise UserError(
                f"unknown sweep {sweep!r}; sweeps in this store: {listing}", source=self.root
            )

    @staticmethod
    def _load_info(path: Path) -> dict[str, Any]:
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read the sweep metadata: {exc}", source=path) from exc
        if not isinstance(document, dict):
            raise UserError("expected a JSON object", source=path)
        return document

    # ----- writes -------------------------------------------------------------------------

    def write_runs(self, sweep: str, rows: Iterable[Mapping[str, Any]]) -> Path:
        """Add one part to the runs table. Rows are validated; omitted optional fields get defaults
        and `written_at` defaults to now. Raises ValueError (RowError) on a bad or empty batch."""
        return self._write(sweep, "runs", rows)

    def write_metrics(self, sweep: str, rows: Iterable[Mapping[str, Any]]) -> Path:
        """Add one part to the metrics table (rows as made by `metrics_rows`)."""
        return self._write(sweep, "metrics", rows)

    def _write(self, sweep: str, table: str, rows: Iterable[Mapping[str, Any]]) -> Path:
        batch = list(rows)
        now = time.time()
        # metrics come in batches (an epoch, a history): checked column-wise; a batch that
        # needs more (an error to word) and every runs batch (one row) are checked row by row
        columns = metrics_columns(batch, sweep, now) if table == "metrics" else None
        if columns is None:
            columns = _checked_columns(sweep, table, batch, now)
        frame = pio.columns_frame(columns, TABLES[table])
        return pio.write_part(frame, self.table_dir(sweep, table), table)

    # ----- reads --------------------------------------------------------------------------

    def runs(self, sweep: str | None = None, *, folds: bool = False) -> pd.DataFrame:
        """Latest row per (sweep, run_id), plus `param.<key>` and `best.<name>` columns.

        Trial-level rows only, unless `folds` (then also the fold runs of CV trials).
        """
        frame = self._read("runs", sweep)
        if not folds:
            parent = frame["parent_run_id"].fillna("")
            frame = frame[parent == ""].reset_index(drop=True)
        return expand_json(expand_json(frame, "params", "param."), "best", "best.")

    def metrics(self, sweep: str | None = None, run_id: str | None = None) -> pd.DataFrame:
        """Long-format metrics, one row per (sweep, run_id, epoch, split, name)."""
        frame = self._read("metrics", sweep)
        if run_id is not None:
            frame = frame[frame["run_id"] == run_id].reset_index(drop=True)
        return frame

    def _read(self, table: str, sweep: str | None) -> pd.DataFrame:
        if sweep is not None:
            self.require_sweep(sweep)
        names = [sweep] if sweep is not None else self.sweeps()
        return dedup(table, pio.to_pandas(self._read_raw(table, names)))

    def _read_raw(self, table: str, sweeps: list[str]) -> pa.Table:
        schema = pio.arrow_schema(TABLES[table])
        for attempt in range(_READ_ATTEMPTS):
            parts = [p for s in sweeps for p in pio.list_parts(self.table_dir(s, table))]
            try:
                return pio.read_parts(parts, schema)
            except FileNotFoundError:
                # A compaction replaced parts between listing and reading; its merged part now
                # exists, so listing again sees every row.
                if attempt == _READ_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    # ----- maintenance and queries --------------------------------------------------------

    def compact(self, sweep: str) -> dict[str, Any]:
        """Merge the parts of each table into one deduplicated part, then delete the old parts.

        The merged part is in place before anything is deleted, so a crash leaves duplicates
        that reads remove; parts written meanwhile are not touched.
        """
        self.require_sweep(sweep)
        return {table: self._compact_table(sweep, table, list) for table in TABLES}

    def compact_live(self, sweep: str, max_parts: int | None = None) -> dict[str, Any]:
        """Merge the small parts of each table holding `max_parts` (default `LIVE_PARTS`) parts or
        more; the reports of the tables merged. The sweep driver runs it as trials report and
        end, so reads during a sweep open a few hundred parts at most, not two per trial plus
        one per epoch and fold.

        Safe beside writers and other compactions as `compact` is. Each merge takes the smallest
        parts (`parquet_io.plan_merge`), so a row is rewritten a logarithmic number of times in
        all and a merge costs about what was written since the last one.
        """
        max_parts = max_parts or LIVE_PARTS
        reports = {}
        for table in TABLES:
            if pio.count_parts(self.table_dir(sweep, table)) >= max_parts:
                choose = functools.partial(pio.plan_merge, max_parts=max_parts)
                reports[table] = self._compact_table(sweep, table, choose)
        return {table: report for table, report in reports.items() if "rows_after" in report}

    def _compact_table(
        self, sweep: str, table: str, choose: Callable[[list[Path]], list[Path]]
    ) -> dict[str, Any]:
        """Merge the parts `choose` picks from the table's parts (in write order)."""
        folder = self.table_dir(sweep, table)
        for attempt in range(_READ_ATTEMPTS):
            parts = choose(pio.list_parts(folder))
            if len(parts) < 2:
                return {"parts_before": len(parts), "part": str(parts[0]) if parts else None}
            try:
                return self._merge(folder, table, parts)
            except FileNotFoundError:
                # another compaction merged some of them meanwhile: choose again
                if attempt == _READ_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _merge(folder: Path, table: str, parts: list[Path]) -> dict[str, Any]:
        raw = pio.read_parts(parts, pio.arrow_schema(TABLES[table]))
        merged = dedup(table, pio.to_pandas(raw))
        frame = pio.typed_frame(merged, TABLES[table])
        path = pio.write_part(frame, folder, table, name=pio.merged_name(parts))
        for old in parts:
            old.unlink(missing_ok=True)
        return {
            "parts_before": len(parts),
            "rows_before": raw.num_rows,
            "rows_after": len(merged),
            "part": str(path),
        }

    def latest_sql(self, table: str = "runs", sweep: str | None = None) -> str:
        """DuckDB SQL reading a table's raw parts as one row per key (the latest write), as
        `runs`/`metrics` do: plain `select *` over the parts returns every rewrite of a run
        (its `running` row and its `completed` row)."""
        if table not in TABLES:
            raise UserError(f"expected one of {list(TABLES)}, got {table!r}", where="--table")
        folder = self.sweep_dir(sweep) if sweep else self.root / "*"
        glob = (folder / table / pio.PART_GLOB).as_posix().replace("'", "''")
        keys = ", ".join(KEYS[table])
        return (
            f"SELECT * EXCLUDE (filename)\n"
            f"FROM read_parquet('{glob}', union_by_name = true, filename = true)\n"
            f"QUALIFY row_number() OVER (PARTITION BY {keys} "
            f"ORDER BY {ORDER_BY[table]} DESC NULLS LAST, filename DESC) = 1"
        )

    def best(self, sweep: str, n: int | None = 10) -> pd.DataFrame:
        """Runs with an objective, best first by the sweep's mode (default max); top `n`."""
        mode = self.sweep_info(sweep).get("mode") or "max"
        if mode not in MODES:
            raise UserError(f"mode must be one of {list(MODES)}, got {mode!r}", where="mode")
        frame = self.runs(sweep)
        frame = frame[frame["objective"].notna()]
        frame = frame.sort_values(
            ["objective", "run_id"], ascending=[mode == "min", True], kind="stable"
        )
        return (frame if n is None else frame.head(n)).reset_index(drop=True)

    def resolve_run(self, run_id_or_prefix: str) -> tuple[str, str]:
        """(sweep, run_id) for a run id, a unique prefix of one, or `sweep/run_id`."""
        text = run_id_or_prefix.strip()
        sweep, _, ident = text.rpartition("/")
        frame = self.runs(sweep) if sweep else self.runs()
        exact = frame[frame["run_id"] == ident]
        found = exact if len(exact) else frame[frame["run_id"].str.startswith(ident)]
        if len(found) == 1:
            return str(found["sweep"].iloc[0]), str(found["run_id"].iloc[0])
        if found.empty:
            raise UserError(
                f"no run id starts with {ident!r}; `medsweep results ls` lists the sweeps",
                source=self.root,
            )
        names = [f"{s}/{r}" for s, r in zip(found["sweep"], found["run_id"], strict=True)]
        shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
        raise UserError(
            f"{text!r} matches {len(names)} runs: {shown}; give more characters or sweep/run_id",
            source=self.root,
        )


def _checked_columns(
    sweep: str, table: str, rows: list[Mapping[str, Any]], now: float
) -> dict[str, list[Any]]:
    """The row-by-row check: coerced columns, or a RowError naming the first bad row."""
    coerce = coerce_runs_row if table == "runs" else coerce_metrics_row
    checked = []
    for index, row in enumerate(rows):
        try:
            record = coerce({"sweep": sweep, **row}, now)
        except RowError as exc:
            raise RowError(f"{table} row {index}: {exc}") from exc
        if record["sweep"] != sweep:
            raise RowError(f"{table} row {index}: sweep {record['sweep']!r} != {sweep!r}")
        checked.append(record)
    if not checked:
        raise RowError(f"no {table} rows to write for sweep {sweep!r}")
    return {name: [r[name] for r in checked] for name in TABLES[table]}


def dedup(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Keep the last write of each key: ordered by written_at/wall_time, ties by read order."""
    keys = list(KEYS[table])
    ordered = frame.sort_values(ORDER_BY[table], kind="stable", na_position="first")
    latest = ordered.drop_duplicates(keys, keep="last")
    sort_by = ["sweep", "start_time", "run_id"] if table == "runs" else keys
    return latest.sort_values(sort_by, kind="stable").reset_index(drop=True)


def expand_json(frame: pd.DataFrame, column: str, prefix: str) -> pd.DataFrame:
    """Add one `<prefix><key>` column per key found in the JSON objects of `column`."""
    parsed = (json.loads(text) if text else {} for text in frame[column])
    records = [item if isinstance(item, dict) else {} for item in parsed]
    wide = pd.DataFrame.from_records(records, index=frame.index) if records else pd.DataFrame()
    if not len(wide.columns):
        return frame
    wide = wide[sorted(wide.columns)].add_prefix(prefix)
    return pd.concat([frame, wide], axis=1)

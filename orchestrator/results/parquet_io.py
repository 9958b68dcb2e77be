"""Immutable Parquet part files: atomic writes with fastparquet, tolerant reads with pyarrow.

A part is written under a hidden temporary name in its final folder, flushed to disk, then renamed
into place with `os.replace`, so readers see either the whole file or nothing. Readers only pick
up `part-*.parquet`; stray temporaries (a writer that crashed) are ignored, and pyarrow.dataset
skips them too because their names start with a dot.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import fastparquet
import fastparquet.compression
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.errors import UserError
from orchestrator.results.schema import RENAMED, SCHEMA_VERSION, ColumnType

PART_GLOB = "part-*.parquet"
TMP_PREFIX = ".tmp-"

_ARROW_TYPES: dict[ColumnType, pa.DataType] = {
    "str": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
}
_PANDAS_DTYPES: dict[ColumnType, Any] = {"str": "object", "int": "Int64", "float": "float64"}
_THREADED_ROWS = 10_000  # a part with more rows decodes its columns in parallel
_last_ns = 0
_ns_lock = threading.Lock()


def compression() -> str:
    """ZSTD when this fastparquet build has it (smaller files), else SNAPPY."""
    return "ZSTD" if "ZSTD" in fastparquet.compression.compressions else "SNAPPY"


def arrow_schema(columns: Mapping[str, ColumnType]) -> pa.Schema:
    return pa.schema([pa.field(name, _ARROW_TYPES[kind]) for name, kind in columns.items()])


def new_part_name() -> str:
    """`part-<utc ns>-<uuid8>.parquet`; ns strictly increase within a process so names sort by
    write order."""
    global _last_ns
    with _ns_lock:
        _last_ns = max(time.time_ns(), _last_ns + 1)
        stamp = _last_ns
    return f"part-{stamp:019d}-{uuid.uuid4().hex[:8]}.parquet"


def list_parts(folder: Path) -> list[Path]:
    """Part files in write order (their names sort chronologically)."""
    if not folder.is_dir():
        return []
    return sorted(folder.glob(PART_GLOB))


def count_parts(folder: Path) -> int:
    """How many parts `folder` holds: `list_parts` without sorting or path objects (cheap enough
    to run on every trial report)."""
    try:
        with os.scandir(folder) as entries:
            return sum(1 for e in entries if fnmatch.fnmatchcase(e.name, PART_GLOB))
    except FileNotFoundError:
        return 0


def plan_merge(parts: list[Path], max_parts: int) -> list[Path]:
    """The parts a live compaction merges (in write order): none while fewer than `max_parts`;
    else all but the `max_parts // 2` biggest (in rows), smallest first, and then each next one
    up while it has no more rows than those taken together.

    Every part left then outweighs all smaller ones together, so a table keeps a few parts of
    geometrically growing sizes besides those written since, and a part is only merged again
    once as many rows were written after it: each row is rewritten a logarithmic number of times.
    """
    if len(parts) < max_parts:
        return []
    counted = []
    for part in parts:
        with contextlib.suppress(FileNotFoundError):  # merged away meanwhile
            counted.append((_num_rows(part), part))
    counted.sort(key=lambda item: item[0])
    at_least = len(counted) - max_parts // 2
    taken: list[Path] = []
    total = 0
    for rows, part in counted:
        if len(taken) >= at_least and rows > total:
            break
        taken.append(part)
        total += rows
    return sorted(taken)


def _num_rows(part: Path) -> int:
    """Rows of a part from its footer (file sizes are mostly footer for small parts); 0 for an
    unreadable one, so a merge reports it as reads do."""
    try:
        return int(pq.read_metadata(part).num_rows)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError):
        return 0


def merged_name(parts: Sequence[Path]) -> str:
    """A merged part takes the write-order place of the newest part it replaces (its stamp, a
    new id), so parts written during the merge still sort after it: ties in written_at/wall_time
    keep resolving by write order."""
    newest = max(p.name for p in parts)
    stamp = newest.removeprefix("part-").split("-", 1)[0]
    if len(stamp) != 19 or not stamp.isdigit():  # not a name `new_part_name` made
        return new_part_name()
    return f"part-{stamp}-{uuid.uuid4().hex[:8]}.parquet"


def typed_frame(frame: pd.DataFrame, columns: Mapping[str, ColumnType]) -> pd.DataFrame:
    """Exactly the schema columns with writer dtypes (object strings use None for missing)."""
    out = pd.DataFrame(index=range(len(frame)))
    for name, kind in columns.items():
        values = frame[name].reset_index(drop=True)
        if kind == "str":
            values = values.astype(object).where(values.notna(), None)
        out[name] = values.astype(_PANDAS_DTYPES[kind])
    return out


def columns_frame(
    values: Mapping[str, Sequence[Any]], columns: Mapping[str, ColumnType]
) -> pd.DataFrame:
    """`typed_frame` of coerced columns, built column by column (no intermediate frame)."""
    index = pd.RangeIndex(len(next(iter(values.values()))))
    data: dict[str, pd.Series] = {}
    for name, kind in columns.items():
        column = values[name]
        if kind == "float":
            data[name] = pd.Series(np.array(column, dtype=np.float64), index=index, copy=False)
        else:  # explicit dtypes: pandas 3 would infer its string dtype for text
            data[name] = pd.Series(column, index=index, dtype=_PANDAS_DTYPES[kind])
    return pd.DataFrame(data, index=index, copy=False)


def write_part(frame: pd.DataFrame, folder: Path, table: str, name: str | None = None) -> Path:
    """Write `frame` as a new immutable part of `folder` (or as file `name`); return its path."""
    final = folder / (name or new_part_name())
    metadata = {"medsweep.table": table, "medsweep.schema_version": str(SCHEMA_VERSION)}
    with atomic_path(final) as tmp:
        fastparquet.write(
            str(tmp),
            frame,
            compression=compression(),
            object_encoding="utf8",
            write_index=False,
            custom_metadata=metadata,
        )
    return final


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to `final`; on success fsync it and rename it to `final`."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}{final.suffix}"
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(final.parent)


def _fsync(path: Path) -> None:
    """Flush a file or a directory entry to disk; best effort where the OS refuses (dirs on some
    filesystems)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_parts(parts: Sequence[Path], schema: pa.Schema) -> pa.Table:
    """Concatenate parts in order, cast to `schema`; a part that cannot be read is a UserError.

    FileNotFoundError passes through: a concurrent compaction removed the part, so the caller
    should list the folder again.
    """
    tables = [read_part(path, schema) for path in parts]
    # one chunk per column: converting thousands of one-row chunks to pandas costs more
    return pa.concat_tables(tables).combine_chunks() if tables else schema.empty_table()


def read_part(path: Path, schema: pa.Schema) -> pa.Table:
    """One part cast to `schema`; parts of older schemas are migrated on read (renamed columns
    take their new names, dropped columns are ignored, new columns are null)."""
    try:
        with pq.ParquetFile(path) as part:  # a third of read_table's cost for one small file
            # threads only pay off for big parts: a small one reads 30% faster without
            table = part.read(use_threads=part.metadata.num_rows > _THREADED_ROWS)
        return _conform(table, schema, _table_of(table, path))
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise UserError(
            f"cannot read this results part ({exc}); it is corrupt or was written with another "
            "schema. Move it out of the store (or delete it) and run the command again.",
            source=path,
        ) from exc


def _table_of(table: pa.Table, path: Path) -> str:
    meta = table.schema.metadata or {}
    return (meta.get(b"medsweep.table") or path.parent.name.encode()).decode()


def _conform(table: pa.Table, schema: pa.Schema, name: str) -> pa.Table:
    if table.schema.equals(schema, check_metadata=False):  # a part of the current schema
        return table.replace_schema_metadata(None)
    renames = RENAMED.get(name, {})
    table = table.rename_columns([renames.get(c, c) for c in table.column_names])
    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow -> pandas keeping integer columns integer (nullable Int64) even with nulls."""
    return table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)

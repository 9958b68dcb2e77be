"""Column-wise checks of metric batches: the same rows, files and errors as the row-by-row check."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from orchestrator.results import parquet_io as pio
from orchestrator.results import store as store_mod
from orchestrator.results.schema import (
    METRICS_COLUMNS,
    RowError,
    coerce_metrics_row,
    metrics_columns,
    metrics_rows,
)
from orchestrator.results.store import ResultsStore, _checked_columns

NOW = 1234.5


def per_row(rows: list[Mapping[str, Any]], sweep: str = "s1") -> dict[str, list[Any]]:
    """The row-by-row check (the reference the column-wise check must equal)."""
    return _checked_columns(sweep, "metrics", rows, NOW)


def frame(columns: Mapping[str, list[Any]]) -> pd.DataFrame:
    return pio.columns_frame(columns, METRICS_COLUMNS)


def history(epochs: int = 30, **ids: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for epoch in range(1, epochs + 1):
        report = {"val_auc": 0.5 + epoch / 100, "train_loss": 1 / epoch, "lr": math.nan, "n": 3}
        rows += metrics_rows("s1", "r1", epoch, report, wall_time=float(epoch), ids=ids)
    return rows


def with_row(rows: list[dict[str, Any]], index: int, **fields: Any) -> list[dict[str, Any]]:
    out = [dict(r) for r in rows]
    out[index].update(fields)
    return out


def without(rows: list[dict[str, Any]], index: int, name: str) -> list[dict[str, Any]]:
    out = [dict(r) for r in rows]
    del out[index][name]
    return out


FAST = {
    "a worker's history": history(),
    "fold and round ids": history(parent_run_id="t1", fold=2, round=None),
    "defaults omitted": [
        {"run_id": "r", "epoch": e, "name": "auc", "value": e / 10} for e in range(1, 40)
    ],
    "integer values and None ids": [
        {"run_id": "r", "epoch": e, "name": "n", "value": e, "parent_run_id": None, "fold": None}
        for e in range(1, 40)
    ],
    "explicit sweep": [{"sweep": "s1", "run_id": "r", "epoch": 1, "name": "a", "value": 1.0}],
}


@pytest.mark.parametrize("rows", FAST.values(), ids=FAST.keys())
def test_column_check_equals_the_row_check(rows: list[dict[str, Any]]) -> None:
    columns = metrics_columns(rows, "s1", NOW)
    assert columns is not None, "a plain batch must take the column-wise check"
    pd.testing.assert_frame_equal(frame(columns), frame(per_row(rows)))


ROW_PATH: dict[str, list[Any]] = {
    "numpy scalars": with_row(history(), 7, value=np.float32(0.25), epoch=np.int64(8)),
    "integral float epoch": with_row(history(), 3, epoch=4.0),
    "None value": with_row(history(), 5, value=None),
    "None wall time": with_row(history(), 5, wall_time=None),
    "text that is not str": with_row(history(), 2, parent_run_id=7),
    "keys differ": [*history(3), {"run_id": "r", "epoch": 9, "name": "x", "value": 1.0}],
    "not a dict": [MappingProxyType(r) for r in history(3)],
}


@pytest.mark.parametrize("rows", ROW_PATH.values(), ids=ROW_PATH.keys())
def test_unusual_valid_batches_are_checked_row_by_row(store: ResultsStore, rows: list[Any]) -> None:
    assert metrics_columns(rows, "s1", NOW) is None
    store.write_metrics("s1", rows)
    (part,) = pio.list_parts(store.table_dir("s1", "metrics"))
    written = pio.to_pandas(pio.read_part(part, pio.arrow_schema(METRICS_COLUMNS)))
    expected = pa.Table.from_pandas(frame(per_row(rows)), preserve_index=False)
    pd.testing.assert_frame_equal(
        written.drop(columns="wall_time"), pio.to_pandas(expected).drop(columns="wall_time")
    )


def bad(maker: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return maker(history())


BAD = {
    "text value": bad(lambda h: with_row(h, 41, value="high")),
    "bool value": bad(lambda h: with_row(h, 41, value=True)),
    "fractional epoch": bad(lambda h: with_row(h, 41, epoch=1.5)),
    "NaN epoch": bad(lambda h: with_row(h, 41, epoch=math.nan)),
    "empty name": bad(lambda h: with_row(h, 41, name="")),
    "no run id": bad(lambda h: with_row(h, 41, run_id=None)),
    "unknown split": bad(lambda h: with_row(h, 41, split="dev")),
    "text wall time": bad(lambda h: with_row(h, 41, wall_time="now")),
    "unknown field": bad(lambda h: with_row(h, 41, colour="red")),
    "missing field": bad(lambda h: without(h, 41, "name")),
    "other sweep": bad(lambda h: with_row(h, 41, sweep="s2")),
    "two bad rows": bad(lambda h: with_row(with_row(h, 90, value="x"), 41, fold=0.5)),
    "huge integer": bad(lambda h: with_row(h, 41, value=10**400)),
    "empty batch": [],
}


@pytest.mark.parametrize("rows", BAD.values(), ids=BAD.keys())
def test_errors_are_worded_as_by_the_row_check(store: ResultsStore, rows: list[Any]) -> None:
    with pytest.raises(Exception) as expected:
        per_row(rows)
    with pytest.raises(type(expected.value)) as got:
        store.write_metrics("s1", rows)
    assert str(got.value) == str(expected.value)
    assert pio.list_parts(store.table_dir("s1", "metrics")) == []


def test_error_names_the_row(store: ResultsStore) -> None:
    rows = with_row(history(), 41, value="high")
    with pytest.raises(RowError) as caught:
        store.write_metrics("s1", rows)
    assert str(caught.value) == "metrics row 41: field 'value' must be a number, got 'high'"


def test_a_plain_batch_skips_the_row_check(
    store: ResultsStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def counted(row: Mapping[str, Any], now: float) -> dict[str, Any]:
        calls.append(1)
        return coerce_metrics_row(row, now)

    monkeypatch.setattr(store_mod, "coerce_metrics_row", counted)
    store.write_metrics("s1", history())
    assert calls == []
    store.write_metrics("s1", with_row(history(2), 0, value=np.float64(1.0)))
    assert len(calls) == 8  # numpy scalars: every row of that batch checked one by one
    assert len(store.metrics("s1")) == 30 * 4


@pytest.fixture
def store(tmp_path: Path) -> ResultsStore:
    store = ResultsStore(tmp_path / "store")
    store.init_sweep("s1", {"task": "t", "command": "sweep", "metric": "val_auc"})
    return store

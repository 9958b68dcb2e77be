"""ResultsStore: immutable parts, latest-row reads, compaction, and failure tolerance."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from orchestrator.errors import UserError
from orchestrator.results import parquet_io as pio
from orchestrator.results.schema import METRICS_COLUMNS, RUNS_COLUMNS, RowError, metrics_rows
from orchestrator.results.store import ResultsStore

ARROW = {"str": pa.string(), "int": pa.int64(), "float": pa.float64()}


def expected_schema(columns: Mapping[str, str]) -> pa.Schema:
    return pa.schema([(name, ARROW[kind]) for name, kind in columns.items()])


def run(run_id: str, **fields: Any) -> dict[str, Any]:
    return {"run_id": run_id, "task": "fundus", "metric": "val_auc", **fields}


@pytest.fixture
def store(tmp_path: Path) -> ResultsStore:
    store = ResultsStore(tmp_path / "medsweep_results")
    store.init_sweep(
        "s1", {"task": "fundus", "command": "sweep", "metric": "val_auc", "mode": "max"}
    )
    return store


def fill(store: ResultsStore) -> None:
    """Two runs written as running then completed, plus per-epoch metrics in several parts."""
    for rid, lr, auc in (("aaa111", 0.1, 0.8), ("bbb222", 0.01, 0.9)):
        params = {"train": {"lr": lr}, "model": "resnet18"}
        store.write_runs("s1", [run(rid, status="running", params=params, start_time=1.0)])
        for epoch in (1, 2):
            report = {"train_loss": 1.0 / epoch, "val_auc": auc * epoch / 2}
            store.write_metrics("s1", metrics_rows("s1", rid, epoch, report, 10.0 + epoch))
        store.write_runs(
            "s1",
            [
                run(
                    rid,
                    status="completed",
                    params=params,
                    objective=auc,
                    epochs=2,
                    best={"val_auc": auc},
                    final={"val_auc": auc, "train_loss": 0.5},
                    seed=7,
                    start_time=1.0,
                    end_time=3.0,
                    duration_s=2.0,
                )
            ],
        )


def test_parts_are_readable_by_pyarrow_pandas_and_dataset(store: ResultsStore) -> None:
    fill(store)
    # A part whose optional fields are all missing must keep the same schema.
    store.write_runs("s1", [{"run_id": "ccc333"}])
    for table, columns in (("runs", RUNS_COLUMNS), ("metrics", METRICS_COLUMNS)):
        folder = store.table_dir("s1", table)
        (folder / ".tmp-crashed.parquet").write_bytes(b"half a file")  # a crashed writer
        parts = sorted(folder.glob("part-*.parquet"))
        assert parts
        for part in parts:
            read = pq.read_table(part)
            assert read.schema.remove_metadata().equals(expected_schema(columns)), part
            assert list(pd.read_parquet(part).columns) == list(columns)
        dataset = ds.dataset(folder, format="parquet").to_table()
        assert dataset.num_rows == sum(pq.read_metadata(p).num_rows for p in parts)
        assert dataset.schema.remove_metadata().equals(expected_schema(columns))


def test_writer_leaves_no_temporaries(store: ResultsStore) -> None:
    fill(store)
    leftovers = [p for p in store.root.rglob("*") if p.name.startswith(".tmp-")]
    assert leftovers == []
    names = [p.name for p in store.table_dir("s1", "runs").iterdir()]
    assert all(n.startswith("part-") and n.endswith(".parquet") for n in names)


def test_latest_row_per_run_with_expanded_json(store: ResultsStore) -> None:
    fill(store)
    runs = store.runs("s1")
    assert list(runs["run_id"]) == ["aaa111", "bbb222"]
    assert set(runs["status"]) == {"completed"}
    assert list(runs["param.train.lr"]) == [0.1, 0.01]
    assert list(runs["param.model"]) == ["resnet18", "resnet18"]
    assert list(runs["best.val_auc"]) == [0.8, 0.9]
    assert str(runs["epochs"].dtype) == "Int64" and list(runs["seed"]) == [7, 7]
    assert list(runs.columns[: len(RUNS_COLUMNS)]) == list(RUNS_COLUMNS)


def test_latest_is_by_written_at_not_file_order(store: ResultsStore) -> None:
    store.write_runs("s1", [run("r1", status="completed", written_at=200.0)])
    store.write_runs("s1", [run("r1", status="running", written_at=100.0)])
    assert list(store.runs("s1")["status"]) == ["completed"]


def test_same_batch_last_row_wins(store: ResultsStore) -> None:
    store.write_runs("s1", [run("r1", status="running"), run("r1", status="error", error="OOM")])
    row = store.runs("s1").iloc[0]
    assert (row["status"], row["error"]) == ("error", "OOM")


def test_metrics_dedup_keeps_last_written(store: ResultsStore) -> None:
    store.write_metrics("s1", metrics_rows("s1", "r1", 1, {"val_auc": 0.5}, wall_time=1.0))
    store.write_metrics("s1", metrics_rows("s1", "r1", 1, {"val_auc": 0.7}, wall_time=2.0))
    store.write_metrics("s1", metrics_rows("s1", "r2", 1, {"val_auc": 0.1}, wall_time=3.0))
    metrics = store.metrics("s1")
    assert len(metrics) == 2
    assert store.metrics("s1", run_id="r1")["value"].tolist() == [0.7]
    assert metrics["epoch"].dtype == "Int64"


def test_empty_sweep_and_empty_store(store: ResultsStore, tmp_path: Path) -> None:
    assert list(store.runs("s1").columns) == list(RUNS_COLUMNS)
    assert list(store.metrics("s1").columns) == list(METRICS_COLUMNS)
    assert store.runs("s1").empty and store.best("s1").empty
    empty = ResultsStore(tmp_path / "nowhere")
    assert empty.sweeps() == [] and empty.runs().empty and empty.metrics().empty


def test_unknown_sweep_lists_available(store: ResultsStore) -> None:
    with pytest.raises(UserError, match=r"unknown sweep 'nope'.*s1"):
        store.runs("nope")


def test_stray_files_are_ignored(store: ResultsStore) -> None:
    fill(store)
    folder = store.table_dir("s1", "runs")
    (folder / ".tmp-abc.parquet").write_bytes(b"garbage")
    (folder / "notes.txt").write_text("hello")
    assert len(store.runs("s1")) == 2


def test_corrupt_part_names_the_file(store: ResultsStore) -> None:
    fill(store)
    bad = store.table_dir("s1", "metrics") / "part-0000000000000000001-deadbeef.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(UserError) as caught:
        store.metrics("s1")
    assert str(bad) in str(caught.value)


def test_compaction_merges_and_keeps_reads_identical(store: ResultsStore) -> None:
    fill(store)
    before = (store.runs("s1"), store.metrics("s1"))
    report = store.compact("s1")
    assert report["runs"]["parts_before"] == 4 and report["runs"]["rows_after"] == 2
    for table in ("runs", "metrics"):
        assert len(pio.list_parts(store.table_dir("s1", table))) == 1
    pd.testing.assert_frame_equal(store.runs("s1"), before[0])
    pd.testing.assert_frame_equal(store.metrics("s1"), before[1])
    # A write after compaction still wins.
    store.write_runs("s1", [run("aaa111", status="error")])
    assert store.runs("s1").set_index("run_id").loc["aaa111", "status"] == "error"


def test_crash_between_rename_and_delete_leaves_harmless_duplicates(
    store: ResultsStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(store)
    before = (store.runs("s1"), store.metrics("s1"))
    old_runs = pio.list_parts(store.table_dir("s1", "runs"))

    def crash(self: Path, missing_ok: bool = False) -> None:
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(Path, "unlink", crash)
    with pytest.raises(KeyboardInterrupt):
        store.compact("s1")
    monkeypatch.undo()
    parts = pio.list_parts(store.table_dir("s1", "runs"))
    assert set(old_runs) < set(parts) and len(parts) == len(old_runs) + 1
    pd.testing.assert_frame_equal(store.runs("s1"), before[0])
    pd.testing.assert_frame_equal(store.metrics("s1"), before[1])
    store.compact("s1")  # a second compaction cleans up
    pd.testing.assert_frame_equal(store.runs("s1"), before[0])


def test_read_retries_when_compaction_removes_a_part(
    store: ResultsStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(store)
    real = pio.read_parts
    calls = []

    def flaky(parts: list[Path], schema: pa.Schema) -> pa.Table:
        calls.append(1)
        if len(calls) == 1:
            raise FileNotFoundError(parts[0])
        return real(parts, schema)

    monkeypatch.setattr(pio, "read_parts", flaky)
    assert len(store.runs("s1")) == 2 and len(calls) == 2


def test_best_uses_sweep_mode(store: ResultsStore) -> None:
    fill(store)
    store.write_runs("s1", [run("ccc333", status="error")])  # NaN objective: excluded
    assert store.best("s1")["run_id"].tolist() == ["bbb222", "aaa111"]
    assert store.best("s1", n=1)["run_id"].tolist() == ["bbb222"]
    store.init_sweep(
        "s1", {"task": "fundus", "command": "sweep", "metric": "val_loss", "mode": "min"}
    )
    assert store.best("s1")["run_id"].tolist() == ["aaa111", "bbb222"]


def test_resolve_run(store: ResultsStore) -> None:
    fill(store)
    store.init_sweep("s2", {"task": "fundus", "command": "run"})
    store.write_runs("s2", [run("aaa999")])
    assert store.resolve_run("bbb") == ("s1", "bbb222")
    assert store.resolve_run("aaa111") == ("s1", "aaa111")
    assert store.resolve_run("s2/aaa") == ("s2", "aaa999")
    with pytest.raises(UserError, match=r"s1/aaa111.*s2/aaa999"):
        store.resolve_run("aaa")
    with pytest.raises(UserError, match="no run id"):
        store.resolve_run("zzz")


def test_sweep_metadata(store: ResultsStore) -> None:
    info = store.sweep_info("s1")
    assert info["task"] == "fundus" and info["sweep"] == "s1" and info["created"]
    store.init_sweep("s1", {"task": "fundus", "command": "sweep", "created": "later"})
    assert store.sweep_info("s1")["created"] == info["created"]  # resume keeps creation time
    assert json.loads((store.sweep_dir("s1") / "sweep.json").read_text())["command"] == "sweep"
    store.write_runs("bare", [run("x")])  # parts without sweep.json still count as a sweep
    assert store.sweeps() == ["bare", "s1"]
    assert store.artifacts_dir("s1", "r1") == store.root / "s1" / "artifacts" / "r1"
    for bad in ("../up", ".hidden", ""):
        with pytest.raises(UserError):
            store.sweep_dir(bad)


def test_bad_writes_raise_value_errors(store: ResultsStore) -> None:
    with pytest.raises(RowError, match="no runs rows"):
        store.write_runs("s1", [])
    with pytest.raises(RowError, match="row 1"):
        store.write_runs("s1", [run("a"), run("b", status="finished")])
    with pytest.raises(RowError, match="sweep"):
        store.write_runs("s1", [run("a", sweep="other")])
    assert pio.list_parts(store.table_dir("s1", "runs")) == []


def test_copied_store_reads_the_same(store: ResultsStore, tmp_path: Path) -> None:
    # Parts are self-contained files (no absolute paths inside), so a store can be moved.
    fill(store)
    copy = ResultsStore(shutil.copytree(store.root, tmp_path / "copy"))
    pd.testing.assert_frame_equal(copy.runs(), store.runs())

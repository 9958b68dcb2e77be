"""Compaction while a sweep runs: bounded part counts, logarithmic rewrites, no lost rows beside
concurrent writers and readers, and the driver callback that runs it."""

from __future__ import annotations

import itertools
import logging
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.plan import SweepInfo
from orchestrator.results import parquet_io as pio
from orchestrator.results import store as store_mod
from orchestrator.results.schema import METRICS_COLUMNS, metrics_rows
from orchestrator.results.store import ResultsStore
from orchestrator.tune_callbacks import MetricGuard, ResultsCallback


@pytest.fixture
def store(tmp_path: Path) -> ResultsStore:
    store = ResultsStore(tmp_path / "store")
    store.init_sweep("s1", {"task": "t", "command": "sweep", "metric": "val_loss", "mode": "min"})
    return store


def parts(store: ResultsStore, table: str = "runs") -> list[Path]:
    return pio.list_parts(store.table_dir("s1", table))


def write_trial(store: ResultsStore, i: int) -> None:
    """A trial as the driver writes it: a running row, then its final row."""
    run = {"run_id": f"t{i:04d}", "start_time": float(i), "params": {"x": i}}
    store.write_runs("s1", [{**run, "written_at": 2.0 * i}])
    final = {"status": "completed", "objective": (i * 37 % 101) / 100.0}
    store.write_runs("s1", [{**run, **final, "written_at": 2.0 * i + 1}])


def with_rows(folder: Path, counts: list[int]) -> list[Path]:
    folder.mkdir(exist_ok=True)
    out = []
    for i, rows in enumerate(counts):
        path = folder / f"part-{i:019d}-{i:08x}.parquet"
        pq.write_table(pa.table({"x": list(range(rows))}), path)
        out.append(path)
    return out


def test_plan_merges_the_small_parts_and_absorbs_what_they_outweigh(tmp_path: Path) -> None:
    files = with_rows(tmp_path / "a", [10] * 7 + [60, 100, 1000])
    assert pio.plan_merge(files, max_parts=11) == []  # below the threshold: nothing
    # the seven small parts (70 rows) absorb the 60-row one, then (130) the 100-row one
    assert pio.plan_merge(files, max_parts=10) == files[:9]
    # two tiny parts beside bigger ones: all but max_parts // 2 are merged all the same
    skewed = with_rows(tmp_path / "b", [50] * 8 + [1, 1])
    assert pio.plan_merge(skewed, max_parts=10) == skewed


def test_merged_part_takes_the_place_of_the_newest_part_it_replaces(store: ResultsStore) -> None:
    for i in range(3):
        write_trial(store, i)
    before = parts(store)
    store.compact("s1")
    (merged,) = parts(store)
    assert merged.name.split("-")[1] == before[-1].name.split("-")[1]
    write_trial(store, 3)
    assert parts(store)[0] == merged  # later writes sort after it


def test_live_compaction_bounds_parts_and_rewrites(store: ResultsStore) -> None:
    max_parts, trials = 8, 32
    rows_merged, most = 0, 0
    for i in range(trials):
        write_trial(store, i)
        most = max(most, len(parts(store)))
        for report in store.compact_live("s1", max_parts).values():
            rows_merged += report["rows_before"]
            assert len(parts(store)) <= max_parts // 2 + 1
    assert most <= max_parts + 1  # two parts per trial, checked after each trial
    # rows are rewritten a logarithmic number of times (106; a full compaction each time: 176)
    assert rows_merged < 140
    runs = store.runs("s1")
    assert runs["run_id"].tolist() == [f"t{i:04d}" for i in range(trials)]
    assert set(runs["status"]) == {"completed"}
    assert runs["param.x"].tolist() == list(range(trials))
    best = min(range(trials), key=lambda i: (i * 37 % 101, i))
    assert store.best("s1", n=1)["run_id"].tolist() == [f"t{best:04d}"]


def metric_batch(writer: int, batch: int, value: float) -> list[dict[str, Any]]:
    run = f"w{writer}-b{batch}"
    return metrics_rows("s1", run, 1, {"val_a": value, "val_b": value + 1}, wall_time=value)


def test_concurrent_writers_readers_and_compactions_lose_no_row(store: ResultsStore) -> None:
    writers, batches = 3, 40
    start = threading.Barrier(writers + 2)
    done = threading.Event()
    merged_while_writing: list[int] = []
    reads: list[set[tuple[str, str]]] = []

    def write(w: int) -> None:
        start.wait()
        for b in range(batches):
            store.write_metrics("s1", metric_batch(w, b, 1.0))
            if b % 4 == 0:  # a later rewrite of an earlier batch: the newer value must win
                store.write_metrics("s1", metric_batch(w, b // 2, 2.0 + b))

    def compact() -> None:
        start.wait()
        while not done.is_set():
            reports = store.compact_live("s1", max_parts=6)
            merged_while_writing.extend(r["parts_before"] for r in reports.values())
        store.compact_live("s1", max_parts=2)

    def read() -> None:
        start.wait()
        while not done.is_set():
            try:
                frame = store.metrics("s1")
            except FileNotFoundError:  # three compactions in a row during one read
                continue
            reads.append(set(zip(frame["run_id"], frame["name"], strict=True)))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    helpers = [threading.Thread(target=compact), threading.Thread(target=read)]
    for thread in threads + helpers:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    for thread in helpers:
        thread.join()

    assert merged_while_writing, "no compaction ran while the writers wrote"
    assert reads and all(a <= b for a, b in itertools.pairwise(reads))  # rows never vanish
    expected = {}
    for w in range(writers):
        for b in range(batches):
            expected[f"w{w}-b{b}"] = 1.0
        for b in range(0, batches, 4):
            expected[f"w{w}-b{b // 2}"] = 2.0 + b
    metrics = store.metrics("s1")
    assert len(metrics) == 2 * len(expected)  # every key once after dedup
    got = metrics[metrics["name"] == "a"].set_index("run_id")["value"].to_dict()
    assert got == expected  # with its latest value
    raw = pio.read_parts(parts(store, "metrics"), pio.arrow_schema(METRICS_COLUMNS)).to_pandas()
    assert set(raw["run_id"]) == set(expected)  # no raw row lost either
    assert len(raw) >= len(metrics)


def callback(store: ResultsStore) -> ResultsCallback:
    info = SimpleNamespace(store_root=str(store.root), sweep="s1")
    return ResultsCallback(cast(SweepInfo, info), MetricGuard("val_loss"))


def report(cb: ResultsCallback) -> None:
    result = {"val_loss": 0.5, "objective": 0.5, "epoch": 1, "best_epoch": 1}
    cb.on_trial_result(0, [], SimpleNamespace(trial_id="t0000"), result)


def test_driver_callback_compacts_every_few_hundred_parts(
    store: ResultsStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_mod, "LIVE_PARTS", 8)
    cb = callback(store)
    for epoch in range(1, 8):
        store.write_metrics("s1", metrics_rows("s1", "t0000", epoch, {"val_loss": 1.0 / epoch}))
        report(cb)
    assert len(parts(store, "metrics")) == 7  # below the threshold: untouched
    store.write_metrics("s1", metrics_rows("s1", "t0000", 8, {"val_loss": 0.1}))
    report(cb)
    assert len(parts(store, "metrics")) <= 5
    assert sorted(store.metrics("s1")["epoch"]) == list(range(1, 9))


def test_a_failed_live_compaction_never_stops_the_sweep(
    store: ResultsStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(store_mod, "LIVE_PARTS", 2)
    for i in range(2):
        write_trial(store, i)
    corrupt = store.table_dir("s1", "runs") / "part-0000000000000000001-deadbeef.parquet"
    corrupt.write_bytes(b"PAR1 not parquet")
    cb = callback(store)
    with caplog.at_level(logging.WARNING):
        report(cb)
        report(cb)
    assert cb.compact_failed and len(parts(store)) == 5  # nothing merged, nothing deleted
    warned = [r for r in caplog.records if "live compaction stopped" in r.getMessage()]
    assert len(warned) == 1 and str(corrupt) in warned[0].getMessage()

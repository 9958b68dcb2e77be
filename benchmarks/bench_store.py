"""Results store: ingesting 1,000,000 metric rows, a leaderboard over 10,000 trials (during a
sweep, uncompacted and compacted), against Ray Tune's `ExperimentAnalysis` over the same results.

Metric rows go through `ResultsStore.write_metrics` in batches of one trial's history (50 epochs
x 20 metrics); the per-epoch write a worker makes is timed too. The 10,000 trials' runs rows are
written as a sweep writes them: two parts per trial (its `running` row and its final row), with a
resolved config of realistic size. During a sweep the driver merges a table's parts once it holds
`LIVE_PARTS` of them (`ResultsStore.compact_live`, run by the results callback as trials report
and end): that leaderboard is timed at the worst moment this allows, just before a merge. The
same trials never compacted (no target) and compacted as the engine leaves a sweep are timed too.
Tune's layout of the same trials (experiment state plus one `result.json` per trial) is written
once and read with `ExperimentAnalysis`.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import row, timed

CORES = 1
ROWS, BATCH, TRIALS, EPOCHS = 1_000_000, 1_000, 10_000, 5
METRICS = 20  # per epoch
MODE = "min"


def _metric_batch(sweep: str, run_id: str, epochs: int) -> list[dict[str, Any]]:
    from orchestrator.results.schema import metrics_rows

    names = [f"val_m{i}" for i in range(METRICS - 2)] + ["train_loss", "val_loss"]
    rows: list[dict[str, Any]] = []
    for epoch in range(1, epochs + 1):
        rows += metrics_rows(sweep, run_id, epoch, dict.fromkeys(names, 1.0 / epoch))
    return rows


def _ingest(root: Path, rows: int, batch: int) -> tuple[list[dict[str, Any]], Path]:
    from orchestrator.results import ResultsStore

    store = ResultsStore(root)
    store.init_sweep("ingest", {"task": "toy", "command": "sweep", "metric": "val_loss"})
    epoch_rows = _metric_batch("ingest", "epoch-writer", 1)
    per_epoch = timed(lambda: store.write_metrics("ingest", epoch_rows), 30, warmup=2)
    trial = _metric_batch("ingest", "t", batch // METRICS)
    calls = max(1, rows // len(trial))
    start = time.perf_counter()
    for i in range(calls):
        run = f"t{i:06d}"
        store.write_metrics("ingest", [{**r, "run_id": run} for r in trial])
    ingest = time.perf_counter() - start
    read = timed(lambda: store.metrics("ingest"), 1)
    total = calls * len(trial)
    return [
        row(
            "write_metrics: one epoch of one run",
            per_epoch,
            size=f"{len(epoch_rows)} rows, one part",
            note="what a worker pays per epoch",
        ),
        row(
            f"{total:,} metric rows ingested",
            [ingest],
            size=f"{calls:,} write_metrics calls of {len(trial):,} rows (one trial's history)",
            target=10.0 * total / ROWS,
            note=f"{total / ingest:,.0f} rows/s; target scaled to the row count",
            why="every call writes one immutable part: a fastparquet file (about 4 ms of the "
            "5 a call of 1,000 rows costs on a quiet core), fsync and rename, after a "
            "column-wise check of the rows; larger batches would close it",
        ),
        row(
            f"read {total:,} metric rows back (store.metrics)",
            read,
            size=f"{calls:,} parts",
            note="deduplicated, as every view reads them",
        ),
    ], store.table_dir("ingest", "metrics")


def _runs_schema() -> Any:
    from orchestrator.results import parquet_io as pio
    from orchestrator.results.schema import SCHEMA_VERSION, TABLES

    return pio.arrow_schema(TABLES["runs"]).with_metadata(
        {"medsweep.table": "runs", "medsweep.schema_version": str(SCHEMA_VERSION)}
    )


def _trial_rows(sweep: str, i: int, value: float, epochs: int, now: float) -> list[Any]:
    """A trial's two runs rows as the driver writes them: `running`, then its final row."""
    from orchestrator.results.schema import coerce_runs_row

    config = json.dumps({"train": {"lr": 1e-3, "epochs": epochs}, "pad": "x" * 1500})
    base = {
        "run_id": f"t{i:05d}",
        "command": "sweep",
        "task": "toy",
        "metric": "val_loss",
        "mode": MODE,
        "config": config,
        "start_time": now + i,
        "params": {"model.x": float(i % 101), "model.y": float(i % 7)},
    }
    final = {
        **base,
        "status": "completed",
        "objective": value,
        "epochs": epochs,
        "best_epoch": epochs,
        "best": {"val_loss": value},
        "end_time": now + i + 60,
    }
    return [
        coerce_runs_row({"sweep": sweep, **fields}, now + i + j)
        for j, fields in enumerate((base, final))
    ]


def _sweep_writer(root: Path, sweep: str, epochs: int) -> Any:
    """A store with `sweep` and a function writing trial i's two runs parts into it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from orchestrator.results import ResultsStore
    from orchestrator.results import parquet_io as pio

    store = ResultsStore(root)
    store.init_sweep(sweep, {"task": "toy", "command": "sweep", "metric": "val_loss", "mode": MODE})
    folder = store.table_dir(sweep, "runs")
    folder.mkdir(parents=True, exist_ok=True)
    schema, now = _runs_schema(), time.time()

    def write(i: int, value: float) -> None:
        for record in _trial_rows(sweep, i, value, epochs, now):
            # pyarrow writes the setup faster than fastparquet; readers see the same columns
            pq.write_table(
                pa.Table.from_pylist([record], schema=schema), folder / pio.new_part_name()
            )

    return store, write


def _runs_parts(root: Path, trials: int, epochs: int) -> tuple[str, dict[str, float]]:
    """A sweep's runs table as written, never compacted (two parts per trial); the best trial."""
    sweep = "leaderboard"
    _, write = _sweep_writer(root, sweep, epochs)
    objectives = _objectives(trials)
    for i, value in enumerate(objectives.values()):
        write(i, value)
    return sweep, _best(objectives)


def _live_parts(root: Path, trials: int, epochs: int, every: int) -> dict[str, Any]:
    """The same sweep with the driver's compaction after each trial (`compact_live`, as the
    results callback runs it), stopped at its worst moment past `trials`: the table holds
    `every` parts, so the next check merges."""
    from orchestrator.results import parquet_io as pio

    sweep = "live"
    store, write = _sweep_writer(root, sweep, epochs)
    objectives = _objectives(trials + every)
    spent, merges = 0.0, 0
    for i, value in enumerate(objectives.values()):
        write(i, value)
        if i + 1 >= trials and pio.count_parts(store.table_dir(sweep, "runs")) >= every:
            break
        start = time.perf_counter()
        merges += len(store.compact_live(sweep, every))
        spent += time.perf_counter() - start
    written = dict(list(objectives.items())[: i + 1])
    parts = pio.count_parts(store.table_dir(sweep, "runs"))
    return {
        "sweep": sweep,
        "best": _best(written),
        "trials": len(written),
        "parts": parts,
        "spent": spent,
        "merges": merges,
    }


def _best(objectives: dict[str, float]) -> dict[str, float]:
    best_id = min(objectives, key=lambda k: objectives[k])
    return {best_id: objectives[best_id]}


def _objectives(trials: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    values = 1.0 + rng.random(trials)
    return {f"t{i:05d}": float(v) for i, v in enumerate(values)}


def _tune_layout(root: Path, trials: int, epochs: int) -> Path:
    """The same trials as Tune writes them: experiment state and a result.json per trial."""
    from ray.train._internal.storage import StorageContext
    from ray.tune import PlacementGroupFactory
    from ray.tune.experiment.trial import Trial
    from ray.tune.utils.serialization import TuneFunctionEncoder

    states = []
    for trial_id, value in _objectives(trials).items():
        storage = StorageContext(
            storage_path=str(root), experiment_dir_name="tune", trial_dir_name=f"fn_{trial_id}"
        )
        trial = Trial(
            "fn",
            config={"model.x": 0.0},
            trial_id=trial_id,
            storage=storage,
            stub=True,
            placement_group_factory=PlacementGroupFactory([{"memory": 1}]),
        )
        trial.create_placement_group_factory()
        folder = Path(storage.trial_fs_path)
        folder.mkdir(parents=True)
        lines = []
        for epoch in range(1, epochs + 1):
            loss = value + (epochs - epoch) * 0.1  # falls to the trial's objective
            result = {"val_loss": loss, "epoch": epoch, "training_iteration": epoch}
            lines.append({**result, "trial_id": trial_id, "config": {"model.x": 0.0}})
        (folder / "result.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
        trial.update_last_result(lines[-1])
        trial.status = Trial.TERMINATED
        states.append(trial.get_json_state())
    state = {"trial_data": states, "runner_data": {}, "stats": {"start_time": 0.0}}
    path = root / "tune" / "experiment_state-bench.json"
    path.write_text(json.dumps(state, cls=TuneFunctionEncoder))
    return root / "tune"


def _timed_best(store: Any, sweep: str, expected: dict[str, float], repeat: int) -> list[float]:
    def leaderboard() -> None:
        best = store.best(sweep, n=10)
        assert best["run_id"].iloc[0] in expected, "the leaderboard lost the best trial"

    return timed(leaderboard, repeat)


def _leaderboard(
    root: Path, trials: int, epochs: int, repeat: int, every: int
) -> list[dict[str, Any]]:
    from ray.tune import ExperimentAnalysis

    from orchestrator.results import ResultsStore

    sweep, expected = _runs_parts(root / "store", trials, epochs)
    store = ResultsStore(root / "store")
    live = _live_parts(root / "live", trials, epochs, every)
    tune_dir = _tune_layout(root / "tune_root", trials, epochs)

    def analysis() -> None:
        ea = ExperimentAnalysis(str(tune_dir), default_metric="val_loss", default_mode=MODE)
        best = ea.get_best_trial(scope="all")
        ea.dataframe(metric="val_loss", mode=MODE)
        assert best is not None and best.trial_id in expected

    reference = timed(analysis, repeat)
    during = _timed_best(ResultsStore(root / "live"), live["sweep"], live["best"], repeat)
    as_written = _timed_best(store, sweep, expected, repeat)
    compact = timed(lambda: store.compact(sweep), 1)
    compacted = _timed_best(store, sweep, expected, repeat)
    tune = "Tune ExperimentAnalysis (load, best trial, dataframe)"
    size = f"{trials:,} trials"
    return [
        row(
            f"leaderboard (ResultsStore.best), during a sweep (compaction every {every} parts)",
            during,
            size=f"{live['trials']:,} trials, {live['parts']} runs parts: the most the driver's "
            "compaction leaves",
            target=1.0,
            reference=reference,
            reference_name=tune,
            note=f"{live['merges']} merges over the sweep took {live['spent']:.1f} s in all "
            f"({1000 * live['spent'] / live['trials']:.1f} ms per trial)",
            why=f"reads the up to {every} small parts written since the last merge, about half "
            "a millisecond each; a smaller `LIVE_PARTS` merges more often and reads fewer",
        ),
        row(
            "leaderboard (ResultsStore.best), uncompacted",
            as_written,
            size=f"{size}, {2 * trials:,} runs parts",
            reference=reference,
            reference_name=tune,
            note="every part as written, no compaction at all (no target): reads and "
            "deduplicates every part",
        ),
        row(
            "leaderboard (ResultsStore.best), compacted",
            compacted,
            size=f"{size}, 1 runs part",
            target=1.0,
            reference=reference,
            reference_name=tune,
            note=f"as the engine leaves a sweep; compacting it took {compact[0]:.1f} s",
        ),
    ]


def run(
    quick: bool = False,
    rows: int = ROWS,
    batch: int = BATCH,
    trials: int = TRIALS,
    repeat: int = 3,
    every: int = 0,
) -> list[dict[str, Any]]:
    """The figures; `every`: the driver's compaction threshold (default `LIVE_PARTS`);
    `quick`: 4,000 rows, 40 trials compacted every 20 parts, one repeat."""
    from orchestrator.results.store import LIVE_PARTS

    every = every or LIVE_PARTS
    if quick:
        rows, trials, repeat, every = 4_000, 40, 1, 20
    with tempfile.TemporaryDirectory() as tmp:
        ingest, _ = _ingest(Path(tmp) / "ingest", rows, batch)
        board = _leaderboard(Path(tmp), trials, EPOCHS, repeat, every)
    assert all(math.isfinite(r["value"]) for r in ingest + board)
    return ingest + board

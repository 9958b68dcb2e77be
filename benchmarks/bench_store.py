"""Results store: ingesting 1,000,000 metric rows, a leaderboard over 10,000 trials (as a sweep
writes them and compacted), against Ray Tune's `ExperimentAnalysis` over the same results.

Metric rows go through `ResultsStore.write_metrics` in batches of one trial's history (50 epochs
x 20 metrics); the per-epoch write a worker makes is timed too. The 10,000 trials' runs rows are
laid out as a sweep leaves them: two parts per trial (its `running` row and its final row), with
a resolved config of realistic size. Tune's layout of the same trials (experiment state plus one
`result.json` per trial) is written once and read with `ExperimentAnalysis`.
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
            why="every call writes one immutable part (fastparquet file, fsync, rename) and "
            "checks each row in Python; per call that is a fixed cost of milliseconds, so "
            "larger batches or a vectorised row check would close it",
        ),
        row(
            f"read {total:,} metric rows back (store.metrics)",
            read,
            size=f"{calls:,} parts",
            note="deduplicated, as every view reads them",
        ),
    ], store.table_dir("ingest", "metrics")


def _runs_parts(root: Path, trials: int, epochs: int) -> tuple[str, dict[str, float]]:
    """A sweep's runs table as a sweep leaves it (two parts per trial); the best trial's value."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from orchestrator.results import ResultsStore
    from orchestrator.results import parquet_io as pio
    from orchestrator.results.schema import SCHEMA_VERSION, TABLES, coerce_runs_row

    store = ResultsStore(root)
    sweep = "leaderboard"
    store.init_sweep(sweep, {"task": "toy", "command": "sweep", "metric": "val_loss", "mode": MODE})
    folder = store.table_dir(sweep, "runs")
    folder.mkdir(parents=True, exist_ok=True)
    schema = pio.arrow_schema(TABLES["runs"]).with_metadata(
        {"medsweep.table": "runs", "medsweep.schema_version": str(SCHEMA_VERSION)}
    )
    config = json.dumps({"train": {"lr": 1e-3, "epochs": epochs}, "pad": "x" * 1500})
    objectives = _objectives(trials)
    now = time.time()
    for i, value in enumerate(objectives.values()):
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
        for j, fields in enumerate((base, final)):
            record = coerce_runs_row({"sweep": sweep, **fields}, now + i + j)
            table = pa.Table.from_pylist([record], schema=schema)
            # pyarrow writes the setup faster than fastparquet; readers see the same columns
            pq.write_table(table, folder / pio.new_part_name())
    best_id = min(objectives, key=lambda k: objectives[k])
    return sweep, {best_id: objectives[best_id]}


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


def _leaderboard(root: Path, trials: int, epochs: int, repeat: int) -> list[dict[str, Any]]:
    from ray.tune import ExperimentAnalysis

    from orchestrator.results import ResultsStore

    sweep, expected = _runs_parts(root / "store", trials, epochs)
    store = ResultsStore(root / "store")

    def leaderboard() -> None:
        best = store.best(sweep, n=10)
        assert best["run_id"].iloc[0] in expected, "the leaderboard lost the best trial"

    tune_dir = _tune_layout(root / "tune_root", trials, epochs)

    def analysis() -> None:
        ea = ExperimentAnalysis(str(tune_dir), default_metric="val_loss", default_mode=MODE)
        best = ea.get_best_trial(scope="all")
        ea.dataframe(metric="val_loss", mode=MODE)
        assert best is not None and best.trial_id in expected

    reference = timed(analysis, repeat)
    as_written = timed(leaderboard, repeat)
    compact = timed(lambda: store.compact(sweep), 1)
    compacted = timed(leaderboard, repeat)
    tune = "Tune ExperimentAnalysis (load, best trial, dataframe)"
    size = f"{trials:,} trials"
    return [
        row(
            "leaderboard (ResultsStore.best), as a sweep leaves the store",
            as_written,
            size=f"{size}, {2 * trials:,} runs parts",
            target=1.0,
            reference=reference,
            reference_name=tune,
            note="reads and deduplicates every part",
            why="one small Parquet file per runs row: reading costs about half a millisecond "
            "per part; compacting the sweep when it ends (engine) or every few hundred trials "
            "(driver callback) closes it, see the compacted row",
        ),
        row(
            "leaderboard (ResultsStore.best), compacted",
            compacted,
            size=f"{size}, 1 runs part",
            target=1.0,
            reference=reference,
            reference_name=tune,
            note=f"`medsweep results compact` took {compact[0]:.1f} s",
        ),
    ]


def run(
    quick: bool = False,
    rows: int = ROWS,
    batch: int = BATCH,
    trials: int = TRIALS,
    repeat: int = 3,
) -> list[dict[str, Any]]:
    """The figures; `quick`: 4,000 rows, 40 trials, one repeat."""
    if quick:
        rows, trials, repeat = 4_000, 40, 1
    with tempfile.TemporaryDirectory() as tmp:
        ingest, _ = _ingest(Path(tmp) / "ingest", rows, batch)
        board = _leaderboard(Path(tmp), trials, EPOCHS, repeat)
    assert all(math.isfinite(r["value"]) for r in ingest + board)
    return ingest + board

"""`medsweep report` on a synthetic 200-trial sweep (the issue's budget: <= 10 s on 2 cores).

The store is written the way a real sweep writes it — a `running` and a final runs row per trial,
one metrics part per trial and epoch, an Optuna journal with every trial and its intermediate
values, the best trial's per-case predictions — so the report reads as many part files as it
would after a real sweep of that size (nothing compacted).
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TRIALS, EPOCHS = 200, 20
TARGET_S = 10.0
SPACE = {
    "train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
    "train.label_smoothing": {"type": "uniform", "low": 0.0, "high": 0.15},
    "model.backbone": {"type": "choice", "values": ["resnet18", "resnet10t", "efficientnet_b0"]},
}


def synthetic_store(root: Path, trials: int = TRIALS, epochs: int = EPOCHS, seed: int = 0) -> str:
    """Write a finished sweep `synth` (fundus-like, val_auc max) under `root`; return its name.

    Trial i (0-based) is `t0000i`; every 10th trial fails with a stored cause, every 7th is
    pruned at half its epochs; the rest complete. Returns the sweep name.
    """
    from orchestrator.results.schema import metrics_rows
    from orchestrator.results.store import ResultsStore

    rng = np.random.default_rng(seed)
    store = ResultsStore(root)
    sweep = "synth"
    store.init_sweep(
        sweep,
        {
            "task": "fundus",
            "command": "sweep",
            "metric": "val_auc",
            "mode": "max",
            "objective": "best",
            "space": SPACE,
            "created": 1_700_000_000.0,
        },
    )
    study_trials = []
    for i in range(trials):
        run_id = f"t{i:05d}"
        params = {
            "train.lr": float(10 ** rng.uniform(-4, -2)),
            "train.label_smoothing": float(rng.uniform(0, 0.15)),
            "model.backbone": str(rng.choice(SPACE["model.backbone"]["values"])),  # type: ignore[index]
        }
        start = 1_700_000_000.0 + 30 * i
        base = {"run_id": run_id, "command": "sweep", "task": "fundus", "metric": "val_auc"}
        config = {"train": {"lr": params["train.lr"], "epochs": epochs}, "seed": 0}
        store.write_runs(sweep, [{**base, "params": params, "config": config, "start_time": start}])
        status, ran = _fate(i, epochs)
        ceiling = 0.7 + 0.25 * rng.random()
        curve = [ceiling * (1 - math.exp(-(e + 1) / 4)) + rng.normal(0, 0.01) for e in range(ran)]
        for epoch, auc in enumerate(curve, start=1):
            report = {
                "val_auc": auc,
                "val_loss": 1.0 - auc,
                "train_loss": 1.2 / epoch,
                "train_lr": params["train.lr"] * (1 - epoch / (epochs + 1)),
                "val_accuracy": auc - 0.05,
                "val_sensitivity": auc - 0.1,
                "val_specificity": auc,
                "objective": max(curve[:epoch]),
            }
            rows = metrics_rows(sweep, run_id, epoch, report, start + 3 * epoch)
            store.write_metrics(sweep, rows)
        store.write_runs(sweep, [{**base, **_final(status, curve, params, config, start)}])
        study_trials.append((params, status, curve))
    _journal(store.sweep_dir(sweep) / "optuna.journal", sweep, study_trials)
    _predictions(store, sweep, trials, epochs, rng)
    return sweep


def _fate(i: int, epochs: int) -> tuple[str, int]:
    if i % 10 == 9:
        return "error", 2
    if i % 7 == 6:
        return "pruned", max(1, epochs // 2)
    return "completed", epochs


def _final(
    status: str, curve: list[float], params: dict[str, Any], config: Any, start: float
) -> dict[str, Any]:
    best_epoch = int(np.argmax(curve)) + 1
    row: dict[str, Any] = {
        "status": status,
        "params": params,
        "config": config,
        "epochs": len(curve),
        "start_time": start,
        "end_time": start + 3 * len(curve) + 5,
        "duration_s": 3.0 * len(curve) + 5,
    }
    if status == "error":
        row.update(
            error="RuntimeError: CUDA out of memory (synthetic)",
            traceback="Traceback (most recent call last):\n  ...\nRuntimeError: CUDA out of memory",
        )
        return row
    row.update(
        objective=max(curve),
        best_epoch=best_epoch,
        best={"val_auc": max(curve), "val_loss": 1 - max(curve)},
        final={"val_auc": curve[-1], "val_loss": 1 - curve[-1]},
    )
    return row


def _journal(path: Path, sweep: str, trials: list[tuple[dict[str, Any], str, list[float]]]) -> None:
    import optuna
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
    )
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {
        "train.lr": FloatDistribution(1e-4, 1e-2, log=True),
        "train.label_smoothing": FloatDistribution(0.0, 0.15),
        "model.backbone": CategoricalDistribution(SPACE["model.backbone"]["values"]),  # type: ignore[arg-type]
    }
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    study = optuna.create_study(study_name=sweep, storage=storage, direction="maximize")
    states = {
        "completed": optuna.trial.TrialState.COMPLETE,
        "pruned": optuna.trial.TrialState.PRUNED,
        "error": optuna.trial.TrialState.FAIL,
    }
    made = [
        optuna.trial.create_trial(
            params=params,
            distributions=dists,
            value=max(curve) if status == "completed" else None,
            intermediate_values=dict(enumerate(curve, start=1)),
            state=states[status],
        )
        for params, status, curve in trials
    ]
    study.add_trials(made)


def _predictions(store: Any, sweep: str, trials: int, epochs: int, rng: Any) -> None:
    """Per-case validation predictions of the best trial, as the fundus task writes them."""
    runs = store.best(sweep, 1)
    if runs.empty:
        return
    labels = rng.integers(0, 2, size=500)
    scores = np.clip(labels * 0.35 + rng.random(500) * 0.65, 0, 1)
    frame = pd.DataFrame({"case": [f"c{i}" for i in range(500)], "label": labels, "score": scores})
    folder = store.artifacts_dir(sweep, str(runs["run_id"].iloc[0]))
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "val_predictions.csv", index=False)


def run() -> list[dict[str, Any]]:
    """The report of a 200-trial sweep as a finished sweep leaves the store (compacted), and of
    the same store before compaction (every part as written, e.g. a sweep still running)."""
    from orchestrator.report import build_report
    from orchestrator.results.store import ResultsStore

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        store = ResultsStore(root)
        sweep = synthetic_store(root)
        parts = sum(1 for _ in root.glob("*/*/part-*.parquet"))
        for state in ("as written", "compacted"):
            if state == "compacted":
                store.compact(sweep)
                parts = sum(1 for _ in root.glob("*/*/part-*.parquet"))
            cpu, start = time.process_time(), time.perf_counter()
            result = build_report(store, sweep, Path(tmp) / "report.html")
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            rows.append(
                {
                    "name": f"medsweep report, store {state}",
                    "size": f"{TRIALS} trials x {EPOCHS} epochs, {parts:,} part files",
                    "seconds": seconds,
                    "target_s": TARGET_S,
                    "note": f"1 run, {cpu:.1f} s CPU, {len(result['figures'])} figures, "
                    f"{result['bytes'] // 1024} KB",
                }
            )
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)

"""What the sweep driver keeps per trial: once a trial's final runs row is stored, nothing (the
driver's memory stays flat over thousands of trials, benchmarks/bench_driver_memory)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from orchestrator.config import from_dict
from orchestrator.engine import _searcher, _sweep_info
from orchestrator.results import ResultsStore
from orchestrator.tune_callbacks import MetricGuard, ResultsCallback


def _pieces(tmp_path: Path) -> tuple[Any, ResultsCallback, ResultsStore]:
    raw = {
        "name": "flat",
        "task": "toy",
        "store": {"root": str(tmp_path)},
        "sweep": {"num_samples": 3, "space": {"model.x": {"type": "uniform", "low": 0, "high": 1}}},
    }
    config = from_dict(raw, source="flat.yaml")
    store = ResultsStore(tmp_path)
    info = _sweep_info(config, "sweep", "flat", store.sweep_dir("flat").resolve(), None)
    store.init_sweep("flat", info.to_json())
    search = _searcher(config, info)
    search.set_search_properties(None, None, {})
    return search, ResultsCallback(info, MetricGuard(info.metric)), store


def _epoch(epoch: int, loss: float) -> dict[str, Any]:
    return {"val_loss": loss, "objective": loss, "epoch": epoch, "step": epoch, "best_epoch": 1}


def test_a_finished_trial_leaves_no_state_in_the_driver(tmp_path: Path) -> None:
    search, callback, store = _pieces(tmp_path)
    trials = {}
    for tid in ("done", "boom"):
        trials[tid] = SimpleNamespace(
            trial_id=tid, config=search.suggest(tid), last_result={}, get_error=lambda: "boom"
        )
        callback.on_trial_start(0, [], trials[tid])
    for epoch, loss in ((1, 0.5), (2, 0.7)):
        result = _epoch(epoch, loss)
        trials["done"].last_result = result
        callback.on_trial_result(0, [], trials["done"], result)
        search.on_trial_result("done", result)
    trials["done"].last_result = {**result, "finished": 1}
    callback.on_trial_complete(0, [], trials["done"])
    search.on_trial_complete("done", trials["done"].last_result)
    callback.on_trial_error(0, [], trials["boom"])
    search.on_trial_complete("boom", None, error=True)

    runs = store.runs("flat").set_index("run_id")
    assert runs.loc["done", "status"] == "completed"
    assert json.loads(runs.loc["done", "best"])["val_loss"] == 0.5  # the best epoch's row
    assert runs.loc["done", "duration_s"] >= 0 and runs.loc["boom", "status"] == "error"
    assert "done" not in callback.started and "done" not in callback.best
    assert "boom" in callback.started  # a resume may restart an errored trial: its start stays
    assert not search._steps

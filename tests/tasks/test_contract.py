"""The task contract suite: every registered task, without Ray, on its own tiny synthetic data.

A new task is checked by being registered: it synthesises data, trains one CPU epoch, predicts,
scores its predictions through the same code as its evaluation, round-trips its state, and a run
interrupted after an epoch and resumed from its checkpoint gives the metrics of one that was not.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from orchestrator.loop import CHECKPOINT_FILE, Objective, restore, run_epoch
from orchestrator.registry import get_task, task_names
from tasks.base import RunContext, Task
from tasks.common.torch_utils import rng_state, seed_everything

TASKS = task_names()


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=TASKS)
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    cls = get_task(request.param)
    n, size = cls.tiny_synth
    data = cls.synthesize(tmp_path_factory.mktemp(request.param), n=n, size=size, seed=0)
    return cls, data


def _task(cls: type[Task[Any]], data: Path) -> Task[Any]:
    config = cls.config_model.model_validate(cls.tiny_config(data))
    task = cls(config)
    task.check_data()
    return task


def _fresh(cls: type[Task[Any]], data: Path, seed: int = 0) -> Task[Any]:
    seed_everything(seed)
    task = _task(cls, data)
    task.setup(RunContext(run_id="contract", seed=seed))
    return task


def test_trains_predicts_and_reports_its_default_metric(case: Any, tmp_path: Path) -> None:
    cls, data = case
    task = _fresh(cls, data)
    metrics = run_epoch(task, 1)
    assert cls.default_metric in metrics, f"{cls.name} never reports {cls.default_metric}"
    assert all(math.isfinite(v) for v in metrics.values())
    assert any(k.startswith("train_loss") for k in metrics)

    preds = task.predict("val")
    assert {"index", "case"} <= set(preds.columns)
    assert preds["index"].is_unique and preds["case"].is_unique
    assert preds["index"].tolist() == sorted(preds["index"])
    # one scoring path: the validation metrics are the score of the per-case predictions
    scored = task.score("val", preds)
    for key, value in scored.items():
        assert metrics[f"val_{key}"] == pytest.approx(value, nan_ok=True)

    written = task.save_artifacts(tmp_path)
    assert written and all(p.is_file() for p in written)
    out = task.write_predictions(preds, tmp_path / f"again_{cls.predictions_file}")
    assert out.stat().st_size > 0


def test_state_round_trips(case: Any) -> None:
    cls, data = case
    task = _fresh(cls, data)
    run_epoch(task, 1)
    before = task.evaluate(1)
    other = _fresh(cls, data, seed=1)
    other.load_state_dict(task.state_dict())
    assert other.evaluate(1) == pytest.approx(before, nan_ok=True)
    weights = _fresh(cls, data, seed=2)
    weights.load_model_state(task.model_state())
    assert weights.evaluate(1) == pytest.approx(before, nan_ok=True)


class _Checkpoint:
    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def as_directory(self) -> Iterator[str]:
        yield str(self.path)


def test_an_interrupted_run_resumes_to_the_same_metrics(case: Any, tmp_path: Path) -> None:
    cls, data = case
    straight = _fresh(cls, data)
    expected = [run_epoch(straight, e) for e in (1, 2)]

    first = _fresh(cls, data)
    run_epoch(first, 1)
    objective = Objective(cls.default_metric, cls.default_mode, "best")
    state = {
        "task": first.state_dict(),
        "epoch": 1,
        "rng": [rng_state()],
        "objective": objective.state(),
    }
    torch.save(state, tmp_path / CHECKPOINT_FILE)
    del first

    resumed = _fresh(cls, data, seed=7)  # another process: its own RNG until restored
    start = restore(
        resumed,
        Objective(cls.default_metric, cls.default_mode, "best"),
        _Checkpoint(tmp_path),
        rank=0,
    )
    assert start == 2
    again = run_epoch(resumed, 2)
    for key, value in expected[1].items():
        if not key.endswith("_time_s"):  # wall times differ run to run
            assert again[key] == pytest.approx(value, rel=1e-5, abs=1e-6, nan_ok=True), key


def test_cases_fit_the_cross_validation_engine(case: Any) -> None:
    cls, data = case
    task = _task(cls, data)
    cases = task.cases()
    if cases is None:
        pytest.skip(f"{cls.name} has no labelled cases (it cannot be cross-validated)")
    assert {"case", "label"} <= set(cases.columns) and cases["case"].is_unique
    assert cases["label"].nunique() >= 2
    # an ensemble of identical predictions is those predictions
    trained = _fresh(cls, data)
    preds = trained.predict("val")
    merged = cls.ensemble([preds, preds])
    assert sorted(merged["case"]) == sorted(preds["case"])
    left = trained.score("val", preds)
    right = trained.score("val", merged.set_index("case").loc[preds["case"]].reset_index())
    assert left == pytest.approx(right, nan_ok=True)


def test_frames_given_by_the_engine_are_used(case: Any) -> None:
    cls, data = case
    task = _task(cls, data)
    cases = task.cases()
    if cases is None:
        pytest.skip(f"{cls.name} has no labelled cases")
    order = np.random.default_rng(0).permutation(len(cases))
    half = len(cases) // 2
    frames = {
        "train": cases.iloc[order[:half]].reset_index(drop=True),
        "val": cases.iloc[order[half:]].reset_index(drop=True),
        "test": cases.iloc[order[half:]].reset_index(drop=True),
    }
    task.setup(RunContext(run_id="frames", seed=0, frames=frames))
    preds = task.predict("test")
    assert set(preds["case"]) == set(frames["test"]["case"])
    assert isinstance(preds, pd.DataFrame)

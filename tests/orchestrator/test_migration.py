"""A store written by schema 1 (tests/fixtures/store_v1, made by the previous code's `make demo`)
opens and reads correctly with the current code: renamed columns, new columns, latest-row reads,
views and the sweep record."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from orchestrator.results import ResultsStore
from orchestrator.results import table as table_mod
from orchestrator.resume import stored_info

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "store_v1"
SWEEP = "fundus-demo-20261127-134734"


@pytest.fixture
def store(tmp_path: Path) -> ResultsStore:
    shutil.copytree(FIXTURE, tmp_path / "v1")  # reads never write, but keep the fixture pristine
    return ResultsStore(tmp_path / "v1")


def test_v1_runs_and_metrics_read_with_the_current_schema(store: ResultsStore) -> None:
    runs = store.runs(SWEEP)
    assert len(runs) == 6 and set(runs["status"]) == {"completed"}  # latest row of each run
    assert set(runs["command"]) == {"sweep"}  # renamed from `kind`
    assert runs["parent_run_id"].isna().all() and runs["fold"].isna().all()
    assert runs["objective"].max() == pytest.approx(0.935429, abs=1e-6)
    params = json.loads(runs.sort_values("objective").iloc[-1]["params"])
    assert set(params) == {"train.lr", "train.label_smoothing", "model.backbone"}
    metrics = store.metrics(SWEEP)
    assert len(metrics) == 324 and metrics["round"].isna().all()
    per_run = metrics[(metrics["split"] == "val") & (metrics["name"] == "auc")]
    assert per_run.groupby("run_id")["epoch"].nunique().eq(6).all()  # 6 epochs, none twice


def test_v1_sweep_record_and_views(store: ResultsStore) -> None:
    info = stored_info(store.sweep_dir(SWEEP))
    assert (info.command, info.task, info.metric, info.mode) == (
        "sweep",
        "fundus",
        "val_auc",
        "max",
    )
    best = store.best(SWEEP, n=1)
    assert best["run_id"].iloc[0] == "50b5d9d8"
    data = table_mod.table(store, SWEEP)
    assert len(data["rows"]) == 6 and data["rows"][0]["test"] is None
    assert max(r["cv"] for r in data["rows"]) == pytest.approx(0.935429, abs=1e-6)
    # a unique prefix names the sweep (demo sweeps carry a timestamp), in the table and predict
    assert table_mod.table(store, "fundus-demo")["sweep"] == SWEEP
    from orchestrator.predict import _trial

    assert _trial(store, "fundus-demo")[1]["run_id"] == "50b5d9d8"
    assert _trial(store, "50b5d9")[1]["run_id"] == "50b5d9d8"  # a run id prefix still works

"""Real sweeps on the shared local Ray: Tune + Optuna + Ray Train workers + results store."""

from __future__ import annotations

import json
from pathlib import Path
from unittest.mock import ANY

import optuna
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

import orchestrator
from orchestrator.config import load
from orchestrator.errors import UserError
from orchestrator.results import ResultsStore
from tasks.fundus.task import FundusTask

pytestmark = pytest.mark.ray


def _config(tmp_path: Path, csv: Path, **extra: str) -> Path:
    text = f"""
name: itest
task: fundus
seed: 0
data: {{manifest: {csv}, image_size: 64, val_fraction: 0.25}}
model: {{backbone: resnet10t}}
train: {{epochs: 2, batch_size: 16}}
checkpoint: {{num_to_keep: 1, keep_completed: true}}
store: {{root: {tmp_path / "store"}}}
sweep:
  num_samples: 2
  max_concurrent: 2
  space:
    train.lr: {{type: loguniform, low: 1.0e-4, high: 3.0e-3}}
    train.label_smoothing: {{type: choice, values: [0.0, 0.1]}}
"""
    path = tmp_path / "itest.yaml"
    path.write_text(text)
    return path


def _actors(kind: str) -> set[str]:
    """Ids of the actors of that class this Ray has started, dead ones included."""
    from ray._private import state

    return {i for i, actor in state.actors().items() if actor["ActorClassName"] == kind}


def test_two_trial_sweep_stores_every_row(
    tmp_path: Path, fundus_csv: Path, ray_session: None
) -> None:
    cfg = _config(tmp_path, fundus_csv)
    watchers = _actors("PreemptionWatcher")
    out = orchestrator.sweep(cfg, name="sw")
    assert (out.trials, out.errors) == (2, 0)
    # each run's Train controller started no preemption watcher (see orchestrator/trainer.py)
    assert _actors("RayTrainWorker") and _actors("PreemptionWatcher") == watchers

    store = ResultsStore(tmp_path / "store")
    runs = store.runs("sw")
    assert len(runs) == 2 and set(runs["status"]) == {"completed"}
    assert set(runs["epochs"]) == {2}
    assert runs["objective"].between(0, 1).all()
    params = [json.loads(p) for p in runs["params"]]
    assert all(set(p) == {"train.lr", "train.label_smoothing"} for p in params)
    for _, row in runs.iterrows():
        resolved = json.loads(row["config"])
        # each worker's device is stored with the run (a CPU run names no GPU)
        assert json.loads(row["nodes"]) == [
            {"hostname": ANY, "node_id": ANY, "ip": ANY, "device": "cpu"}
        ]
        assert resolved["train"]["lr"] == pytest.approx(json.loads(row["params"])["train.lr"])
        assert json.loads(row["best"])["val_auc"] == pytest.approx(row["objective"])
        # the stored weights are the best epoch's; the path is relative to the store
        curve = store.metrics("sw", run_id=row["run_id"])
        auc = curve[curve["name"] == "auc"].set_index("epoch")["value"]
        assert row["best_epoch"] == auc.idxmax()
        weights = torch.load(store.root / row["checkpoint"], weights_only=True)
        assert any(k.endswith("weight") for k in weights)
        preds = store.artifacts_dir("sw", row["run_id"]) / "val_predictions.csv"
        assert preds.exists()

    metrics = store.metrics("sw")
    auc = metrics[(metrics["split"] == "val") & (metrics["name"] == "auc")]
    assert sorted(auc["epoch"].tolist()) == [1, 1, 2, 2]

    # num_to_keep holds: of the two epochs' resume checkpoints one is left (keep_completed keeps
    # them after the run; by default they are dropped)
    for run_id in runs["run_id"]:
        kept = [p for p in (out.path / "train" / run_id).glob("checkpoint_*") if p.is_dir()]
        assert len(kept) == 1, kept

    # every part file is plain Parquet that pyarrow reads
    for part in (out.path / "runs").glob("part-*.parquet"):
        assert pq.read_table(part).num_rows >= 1
    for part in (out.path / "metrics").glob("part-*.parquet"):
        assert pq.read_table(part).num_rows >= 1

    # the Optuna study lives in a journal next to the results, one trial per Tune trial
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out.path / "optuna.journal"))
    )
    study = optuna.load_study(study_name="sw", storage=storage)
    assert len(study.get_trials(states=[optuna.trial.TrialState.COMPLETE])) == 2

    # an existing sweep is never overwritten
    with pytest.raises(UserError, match="already exists"):
        orchestrator.sweep(cfg, name="sw")
    assert len(store.runs("sw")) == 2


def test_single_run_and_resume_errors(tmp_path: Path, fundus_csv: Path, ray_session: None) -> None:
    # two DDP ranks (gloo): each evaluates half the validation set, rank 0 gathers it all
    cfg = load(_config(tmp_path, fundus_csv), {"train.epochs": 1, "resources.workers": 2})
    out = orchestrator.run(cfg, name="one")
    assert (out.trials, out.errors) == (1, 0)
    store = ResultsStore(tmp_path / "store")
    runs = store.runs("one")
    assert runs["command"].tolist() == ["run"] and runs["status"].tolist() == ["completed"]
    assert json.loads(runs["params"].iloc[0]) == {}
    preds = pd.read_csv(store.artifacts_dir("one", runs["run_id"].iloc[0]) / "val_predictions.csv")
    expected = FundusTask(cfg.task).default_frames()["val"]  # 25% of the patients
    assert len(preds) == len(expected) and preds["path"].is_unique  # every case once
    with pytest.raises(UserError, match="nothing to resume"):
        orchestrator.sweep(cfg, name="never-ran", resume=True)

"""A cross-validated trial on the shared local Ray: fold runs, fold-mean and out-of-fold rows,
the test-split fold ensemble, a pseudo-label round, and prediction with the fold ensemble."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import orchestrator
from orchestrator.cli import main
from orchestrator.results import ResultsStore
from tasks.common.metrics import binary_metrics

pytestmark = pytest.mark.ray


def _config(tmp_path: Path, csv: Path) -> Path:
    path = tmp_path / "cv.yaml"
    path.write_text(f"""
name: cv
task: fundus
seed: 0
data: {{manifest: {csv}, image_size: 32}}
model: {{backbone: resnet10t}}
train: {{epochs: 2, batch_size: 16, scheduler: none}}
cv: {{folds: 3, test_fraction: 0.3, group_by: patient_id}}
pseudo: {{rounds: 1, high: 0.5, low: 0.499}}
store: {{root: {tmp_path / "store"}}}
sweep: {{num_samples: 1}}
""")
    return path


def test_a_cross_validated_trial_with_a_pseudo_label_round(
    tmp_path: Path, fundus_csv: Path, ray_session: None, capsys: pytest.CaptureFixture[str]
) -> None:
    out = orchestrator.sweep(_config(tmp_path, fundus_csv), name="cv")
    assert (out.trials, out.errors) == (1, 0)
    store = ResultsStore(tmp_path / "store")
    info = json.loads((out.path / "sweep.json").read_text())
    assert info["folds"] == 3 and info["split_digest"] and info["transductive"] is True
    assert (out.path / "split.csv").is_file()

    trial = store.runs("cv").iloc[0]
    assert trial["status"] == "completed"
    folds = store.runs("cv", folds=True).query("parent_run_id == @trial.run_id")
    assert sorted(zip(folds["round"], folds["fold"], strict=True)) == [
        (r, f) for r in (0, 1) for f in range(3)
    ]
    assert set(folds["status"]) == {"completed"}

    m = store.metrics("cv")
    auc = m[(m["split"] == "val") & (m["name"] == "auc")]
    for (round_, epoch), rows in auc[auc["fold"].notna()].groupby(["round", "epoch"]):
        mean = auc[
            (auc["run_id"] == trial["run_id"]) & (auc["round"] == round_) & (auc["epoch"] == epoch)
        ]["value"]
        assert mean.iloc[0] == pytest.approx(rows["value"].mean())  # AUC(CV) = fold mean
    mine = m[m["run_id"] == trial["run_id"]]
    assert {"oof_auc", "auc"} <= set(mine[mine["split"] == "val"]["name"])
    test_auc = mine[(mine["split"] == "test") & (mine["name"] == "auc")]
    assert sorted(test_auc["round"]) == [0, 1]
    pseudo = mine[mine["name"] == "pseudo_total"]
    assert pseudo["round"].tolist() == [1] and pseudo["value"].iloc[0] > 0

    # AUC(inner_test) is the score of the stored fold-ensemble predictions, privacy applied
    arts = store.artifacts_dir("cv", trial["run_id"])
    preds = pd.read_csv(arts / "test_predictions.csv")
    last = test_auc[test_auc["round"] == 1]["value"].iloc[0]
    assert binary_metrics(preds["label"], preds["score"])["auc"] == pytest.approx(last, abs=1e-6)
    raw_ids = set(pd.read_csv(fundus_csv)["patient_id"].astype(str))
    assert not raw_ids & set(preds["patient_id"].astype(str))
    assert not preds["path"].str.startswith("/").any()  # relative to the data root
    labels = pd.read_csv(arts / "pseudo_labels_r1.csv")
    assert len(labels) == pseudo["value"].iloc[0] and set(labels["label"]) <= {0, 1}

    # the trial predicts with its last round's fold ensemble
    capsys.readouterr()
    code = main(
        [
            "predict",
            trial["run_id"],
            "--store",
            str(store.root),
            "--data",
            str(fundus_csv),
            "--out",
            str(tmp_path / "p.csv"),
            "--json",
        ]
    )
    assert code == 0 and json.loads(capsys.readouterr().out)["models"] == 3
    assert len(pd.read_csv(tmp_path / "p.csv")) == len(pd.read_csv(fundus_csv))
    assert np.isfinite(pd.read_csv(tmp_path / "p.csv")["score"]).all()

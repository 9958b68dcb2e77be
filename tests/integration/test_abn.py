"""A tiny 3-fold ABN sweep on the shared Ray: alpha switches at the configured epoch in every
fold run, fold and trial rows exist, patient counts pool over folds, overlays are stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import orchestrator
from orchestrator.results import ResultsStore

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tasks.abn.synth import generate

    return generate(tmp_path_factory.mktemp("ct"), n=36, size=32, seed=5, slices_per_patient=4)


def test_three_fold_sweep_switches_alpha_at_the_configured_epoch(
    tmp_path: Path, ct: Path, ray_session: None
) -> None:
    store = tmp_path / "store"
    config = tmp_path / "abn.yaml"
    config.write_text(
        f"""
name: abn-itest
task: abn
data: {{manifest: {ct}, image_size: 32}}
model: {{backbone: resnet10t}}
loss: {{mode: dynamic, alpha: {{start: 0.9, end: 0.1, switch: 2}}}}
train: {{epochs: 3, batch_size: 8}}
eval: {{attention_samples: 2}}
cv: {{folds: 3, group_by: patient_id}}
resources: {{workers: 1, cpus_per_worker: 0.5}}
store: {{root: {store}}}
sweep:
  num_samples: 1
  scheduler: {{type: asha, grace_period: 1}}
"""
    )
    out = orchestrator.sweep(config, name="abn")
    assert (out.trials, out.errors) == (1, 0)

    results = ResultsStore(store)
    runs = results.runs("abn", folds=True)
    trial = runs[runs["parent_run_id"].fillna("") == ""]
    folds = runs[runs["parent_run_id"].fillna("") != ""]
    assert len(trial) == 1 and sorted(folds["fold"].tolist()) == [0, 1, 2]
    assert set(runs["status"]) == {"completed"}

    metrics = results.metrics("abn")
    alpha = metrics[(metrics["split"] == "train") & (metrics["name"] == "alpha")]
    for run_id in [*folds["run_id"], trial["run_id"].iloc[0]]:
        mine = alpha[alpha["run_id"] == run_id].set_index("epoch")["value"].sort_index()
        assert mine.tolist() == pytest.approx([0.9, 0.1, 0.1]), run_id  # switch: 2 (an epoch)

    val = metrics[metrics["split"] == "val"]
    pooled = val[(val["run_id"] == trial["run_id"].iloc[0]) & (val["name"] == "oof_patient_n")]
    assert set(pooled["value"]) == {9.0}  # every patient once, out of fold

    warnings = json.loads((out.path / "sweep.json").read_text())["warnings"]
    assert len(warnings) == 1 and "grace_period 1" in warnings[0] and "epoch 2" in warnings[0]
    trial_dir = results.artifacts_dir("abn", trial["run_id"].iloc[0])
    overlays = sorted(trial_dir.glob("*-f*/attention/case_*.png"))
    assert len(overlays) == 6  # 2 per fold run

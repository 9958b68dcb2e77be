"""The anomaly family (seed 001) on the shared Ray: a tiny sweep of each task with a hold-out
validation split and a test split, storing AUC / FROC points and overlay artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import orchestrator
from orchestrator.results import ResultsStore

pytestmark = pytest.mark.ray

SWEEP = """
cv: {{folds: 1, test_fraction: 0.3, val_fraction: 0.3, seed: 0}}
resources: {{workers: 1, cpus_per_worker: 1}}
store: {{root: {store}}}
sweep:
  num_samples: 2
  max_concurrent: 2
  space:
    train.lr: {{type: loguniform, low: 1.0e-3, high: 3.0e-3}}
"""


def _trials(store: ResultsStore, sweep: str) -> pd.DataFrame:
    runs = store.runs(sweep)
    trials = runs[runs["fold"].isna()]
    assert len(trials) == 2 and set(trials["status"]) == {"completed"}, runs["status"]
    return trials


def _names(store: ResultsStore, sweep: str, run_id: str, split: str) -> set[str]:
    m = store.metrics(sweep)
    return set(m[(m["run_id"] == run_id) & (m["split"] == split)]["name"])


def test_glow_sweep_stores_auc_bits_per_dim_and_overlays(tmp_path: Path, ray_session: None) -> None:
    from tasks.anomaly.synth import generate_cxr

    data = generate_cxr(tmp_path / "cxr", n=60, size=32, seed=1)
    config = tmp_path / "glow.yaml"
    config.write_text(
        f"""
name: glow
task: glow
data: {{manifest: {data}, image_size: 16}}
model: {{levels: 2, depth: 2, width: 8}}
score: {{kind: emphasis_max, overlays: 4}}
train: {{epochs: 2, batch_size: 8}}
"""
        + SWEEP.format(store=tmp_path / "store")
    )
    out = orchestrator.sweep(config, name="glow")
    assert (out.trials, out.errors) == (2, 0)
    store = ResultsStore(tmp_path / "store")
    for run_id in _trials(store, "glow")["run_id"]:
        names = _names(store, "glow", run_id, "val")
        assert {"auc", "auc_nll", "auc_complexity", "auc_emphasis_max", "bpd"} <= names
        assert {"auc", "bpd"} <= _names(store, "glow", run_id, "test")
        art = store.artifacts_dir("glow", run_id)
        test = pd.read_csv(art / "test_predictions.csv")
        assert test["label"].nunique() == 2 and "emphasis_max" in test
        assert len(list((art / "test_predictions_overlays").glob("*.png"))) == 4
        assert list(art.glob("*/val_predictions_overlays/*abnormal*.png"))


def test_petct_sweep_stores_froc_points_and_overlays(tmp_path: Path, ray_session: None) -> None:
    from tasks.anomaly.synth import generate_petct

    data = generate_petct(tmp_path / "petct", n=40, size=32, seed=1)
    config = tmp_path / "petct.yaml"
    config.write_text(
        f"""
name: petct
task: petct
data: {{manifest: {data}}}
model: {{levels: 2, width: 4}}
eval: {{overlays: 2}}
train: {{epochs: 2, batch_size: 8}}
"""
        + SWEEP.format(store=tmp_path / "store")
    )
    out = orchestrator.sweep(config, name="petct")
    assert (out.trials, out.errors) == (2, 0)
    store = ResultsStore(tmp_path / "store")
    rates = {"froc_s0.5", "froc_s1", "froc_s2", "froc_s3", "froc_s4", "froc_s8", "froc_mean"}
    for run_id in _trials(store, "petct")["run_id"]:
        assert rates <= _names(store, "petct", run_id, "val")
        assert rates <= _names(store, "petct", run_id, "test")
        art = store.artifacts_dir("petct", run_id)
        froc = json.loads((art / "test_predictions_froc.json").read_text())
        assert froc["n_lesions"] > 0 and froc["curve"]["sensitivity"]
        m = store.metrics("petct")
        stored = m[(m["run_id"] == run_id) & (m["split"] == "test") & (m["name"] == "froc_s3")]
        assert stored["value"].iloc[-1] == pytest.approx(froc["sensitivity_at"]["3"])
        assert (art / "test_predictions_froc.png").is_file()
        assert len(list((art / "test_predictions_overlays").glob("*.png"))) == 2
        zmaps = pd.read_csv(art / "test_predictions.csv")["zmap"]
        assert all((art / z).is_file() for z in zmaps)
        assert list(art.glob("*/val_predictions_froc.json"))

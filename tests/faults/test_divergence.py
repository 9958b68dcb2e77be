"""Divergence end to end: a learning rate of 1e30 (the loss turns non-finite) and a loss above
`train.max_loss` each end their trial as `diverged` at that epoch, with the cause stored, no
row of the bad epoch, Optuna told PRUNED, no traceback printed, and the sweep goes on."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import optuna
import pytest

import orchestrator
from orchestrator.results import ResultsStore
from tests.faults._driver import study

pytestmark = pytest.mark.ray


def _config(tmp_path: Path, csv: Path) -> Path:
    path = tmp_path / "diverge.yaml"
    path.write_text(f"""
name: diverge
task: fundus
seed: 0
data: {{manifest: {csv}, image_size: 32, val_fraction: 0.25}}
model: {{backbone: resnet10t}}
train: {{epochs: 2, batch_size: 16, scheduler: none, lr: 1.0e-3}}
store: {{root: {tmp_path / "store"}}}
sweep:
  sampler: random          # seed 0 draws all three kinds in three trials (checked below)
  num_samples: 3
  max_concurrent: 2
  space:
    train.lr: {{type: choice, values: [1.0e30, 1.0e-3]}}
    train.max_loss: {{type: choice, values: [1.0e-6, 1.0e6]}}
""")
    return path


def _kind(params: dict[str, float]) -> str:
    if params["train.lr"] > 1:
        return "non-finite"  # the loss turns NaN/inf in the first epoch
    return "max_loss" if params["train.max_loss"] < 1 else "fine"


def test_diverging_trials_end_as_diverged_and_the_sweep_goes_on(
    tmp_path: Path, tiny_csv: Path, ray_session: None, capfd: pytest.CaptureFixture[str]
) -> None:
    out = orchestrator.sweep(_config(tmp_path, tiny_csv), name="dv", quiet=False)
    assert (out.trials, out.errors) == (3, 0)
    store = ResultsStore(tmp_path / "store")
    runs = store.runs("dv")
    records: list[dict[str, Any]] = runs.to_dict("records")  # type: ignore[assignment]
    kinds = {row["run_id"]: _kind(json.loads(row["params"])) for row in records}
    assert set(kinds.values()) == {"non-finite", "max_loss", "fine"}, "pick another sweep seed"
    states = {t.user_attrs["medsweep_run_id"]: t.state for t in study(out.path).trials}
    for row in records:
        run_id, epochs, error = row["run_id"], int(row["epochs"]), str(row["error"])
        kind = kinds[run_id]
        if kind == "fine":
            assert row["status"] == "completed"
            assert states[run_id] == optuna.trial.TrialState.COMPLETE
            continue
        assert row["status"] == "diverged", (kind, row["status"], error)
        assert epochs >= 1  # the epoch it diverged at, in the message too
        assert f"diverged at epoch {epochs}" in error, (kind, error)
        rows = store.metrics("dv", run_id=run_id)
        assert epochs not in set(rows["epoch"])  # nothing of the bad epoch is stored
        assert rows["value"].map(math.isfinite).all()  # what is stored is finite
        assert states[run_id] == optuna.trial.TrialState.PRUNED
    err = capfd.readouterr().err
    assert "Traceback" not in err and "scores must be finite" not in err
    assert "diverged" in err

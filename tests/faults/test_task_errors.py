"""An exception raised inside a task's `evaluate` in a real Ray Train worker: the run is stored as
an error with the exception's own message and a traceback that names `evaluate`, the epochs
before it are kept, and the sweep goes on (the toy task injects the failure)."""

from __future__ import annotations

from pathlib import Path

import pytest

import orchestrator
from orchestrator.results import ResultsStore

pytestmark = pytest.mark.ray


def test_an_exception_in_evaluate_is_stored_with_its_cause(
    tmp_path: Path, ray_session: None
) -> None:
    config = tmp_path / "toy.yaml"
    config.write_text(
        f"""
name: toy-fault
task: toy
train: {{epochs: 4, fail_at_epoch: 3}}
failure: {{max_retries: 0}}
store: {{root: {tmp_path / "store"}}}
"""
    )
    out = orchestrator.run(config, name="evaluate-fails")
    assert (out.trials, out.errors) == (1, 1)
    store = ResultsStore(tmp_path / "store")
    row = store.runs("evaluate-fails").iloc[0]
    assert row["status"] == "error"
    assert "injected failure in evaluate at epoch 3" in row["error"]
    assert "in evaluate" in row["traceback"] and "RuntimeError" in row["traceback"]
    m = store.metrics("evaluate-fails")
    assert sorted(m[m["name"] == "loss"]["epoch"].unique()) == [1, 2]  # what it trained is kept

"""A small finished sweep written the way a real one is (see benchmarks/bench_report.py), shared
by the report, dashboard and hint tests; tests that change files copy it first."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks.bench_report import synthetic_store
from orchestrator.results.store import ResultsStore

TRIALS, EPOCHS = 12, 4


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "store"
    synthetic_store(root, trials=TRIALS, epochs=EPOCHS, seed=3)
    return root


@pytest.fixture
def synth(synth_root: Path, tmp_path: Path) -> ResultsStore:
    """A private copy of the synthetic store (sweep `synth`)."""
    return ResultsStore(shutil.copytree(synth_root, tmp_path / "store"))

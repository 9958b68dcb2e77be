"""A Ray Train worker killed with SIGKILL mid-run: the run restarts from its last checkpoint
(`failure.max_retries`), and when its retries are used up the trial is stored as failed with its
cause (one line, the traceback and the worker's last log lines), Optuna is told FAIL, and the
console names the cause."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import optuna
import pytest

import orchestrator
from orchestrator.config import load
from orchestrator.results import ResultsStore
from tests.faults._driver import raw_metrics, study, wait_for
from tests.faults.conftest import sweep_yaml

pytestmark = pytest.mark.ray


def _pid(run_dir: Path) -> int | None:
    try:
        return int((run_dir / "worker-rank0.pid").read_text())
    except (OSError, ValueError):
        return None


def _epochs_written(sweep_dir: Path) -> list[int]:
    """The epoch of every `val auc` row written so far (a retrained epoch shows up twice)."""
    raw = raw_metrics(sweep_dir)
    if raw.empty:
        return []
    return sorted(raw.query("split == 'val' and name == 'auc'")["epoch"].astype(int))


class Killer(threading.Thread):
    """Kills rank 0 once epoch 3 is stored, then its replacement as soon as that has stored an
    epoch of its own; `seen` holds the epochs written before each kill. (Rows are written before
    their report, and a report waits until the previous one was taken: epoch 3's rows mean
    epoch 1's checkpoint is registered, so the replacement must not train epoch 1 again.)"""

    def __init__(self, sweep_dir: Path) -> None:
        super().__init__(daemon=True)
        self.sweep_dir, self.stop = sweep_dir, threading.Event()
        self.kills: list[int] = []
        self.seen: list[list[int]] = []

    def _worker(self) -> int | None:
        found = [p for p in (self.sweep_dir / "artifacts").glob("*") if p.is_dir()]
        return _pid(found[0]) if found else None

    def _ready(self) -> bool:
        if self.stop.is_set():
            return True
        pid = self._worker()
        if pid is None or pid in self.kills:
            return False
        written = _epochs_written(self.sweep_dir)
        return len(written) > len(self.seen[-1]) if self.kills else 3 in written

    def run(self) -> None:
        for _ in range(2):
            wait_for(self._ready, 240, "a worker to store an epoch")
            pid = self._worker()
            if self.stop.is_set() or pid is None:
                return
            self.seen.append(_epochs_written(self.sweep_dir))
            os.kill(pid, signal.SIGKILL)
            self.kills.append(pid)


def test_a_killed_worker_resumes_then_fails_with_its_cause(
    tmp_path: Path, tiny_csv: Path, ray_session: None, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = load(sweep_yaml(tmp_path, tiny_csv, epochs=6), {"failure.max_retries": 1})
    killer = Killer(tmp_path / "store" / "wk")
    killer.start()
    try:
        out = orchestrator.sweep(cfg, name="wk", quiet=False)
    finally:
        killer.stop.set()
        killer.join()
    assert len(killer.kills) == 2 and out.errors == 1
    # the replacement resumed from a checkpoint: it trained on, and never epoch 1 again
    first, second = killer.seen
    assert second.count(1) == 1 and len(second) > len(first), killer.seen

    row = ResultsStore(tmp_path / "store").runs("wk").iloc[0]
    assert row["status"] == "error"
    assert "Error" in row["error"] and "\n" not in row["error"]  # one line: type and message
    assert "--- worker rank 0" in row["traceback"]  # the worker's last log lines come with it
    assert f"pid {killer.kills[-1]}" in row["traceback"]  # ... of the process that died last
    assert study(tmp_path / "store" / "wk").trials[0].state == optuna.trial.TrialState.FAIL
    assert row["error"][:60] in capsys.readouterr().err  # the console names the cause

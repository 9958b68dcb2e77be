"""The Optuna journal after a process died holding its lock, or mid-entry: the next run goes
on at once (Optuna's own lock would wait 30 s), and a live holder is still respected."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import optuna

from orchestrator.journal import HolderFileLock, open_backend
from tests.faults._driver import wait_for

REPO = Path(__file__).resolve().parents[2]

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from orchestrator.journal import HolderFileLock

    HolderFileLock(sys.argv[1]).acquire()
    Path(sys.argv[2]).touch()
    time.sleep(600)
    """
)


def _study(journal: Path) -> optuna.Study:
    storage = optuna.storages.JournalStorage(open_backend(journal))
    return optuna.create_study(study_name="s", storage=storage, load_if_exists=True)


def test_a_lock_left_by_a_killed_process_is_broken_at_once(tmp_path: Path) -> None:
    journal, ready = tmp_path / "optuna.journal", tmp_path / "ready"
    _study(journal).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(journal), str(ready)], cwd=REPO)
    try:
        wait_for(lambda: ready.exists() or proc.poll() is not None, 60, "the holder to lock")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert Path(f"{journal}.lock").exists()  # what the killed process left behind

    started = time.monotonic()
    study = _study(journal)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert time.monotonic() - started < 10  # no 30 s grace period
    assert len(study.trials) == 3 and not Path(f"{journal}.lock").exists()


def test_an_old_optuna_symlink_lock_is_broken_and_a_live_holder_is_waited_for(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "optuna.journal"
    journal.touch()
    lock_path = Path(f"{journal}.lock")
    os.symlink(journal, lock_path)  # Optuna's own kind of lock, of an unknown holder
    old = time.time() - 120
    os.utime(lock_path, (old, old), follow_symlinks=False)
    lock = HolderFileLock(str(journal), grace_period=30)
    assert lock.stale()
    assert lock.acquire()  # broken at once: older than the grace period
    assert lock_path.read_text().split()[1] == str(os.getpid())

    got = threading.Event()

    def second() -> None:
        HolderFileLock(str(journal)).acquire()
        got.set()

    waiter = threading.Thread(target=second, daemon=True)
    waiter.start()
    assert not got.wait(0.5)  # this process is alive: its lock holds
    lock.release()
    assert got.wait(10)
    waiter.join()


def test_a_half_written_last_entry_is_cut_off(tmp_path: Path) -> None:
    journal = tmp_path / "optuna.journal"
    _study(journal).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    before = journal.read_bytes()
    with journal.open("ab") as fh:
        fh.write(b'{"op_code": 5, "worker_id": "x", "trial_id": 9')  # killed mid-write
    study = _study(journal)
    after = journal.read_bytes()
    assert after.startswith(before) and b'"trial_id": 9' not in after
    assert all(json.loads(line) for line in after.splitlines())
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert [t.state for t in _study(journal).trials] == [optuna.trial.TrialState.COMPLETE] * 3

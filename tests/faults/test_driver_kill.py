"""The sweep driver killed at several points of the epoch cycle, then resumed: no metric row
lost, none counted twice, the Optuna study consistent with the store, no orphaned Ray process;
SIGTERM stores the trials as interrupted and prints a resume command that runs as printed.

One sweep (one trial of 4 epochs) lives through every stop, so the suite pays for Ray's
start-up once per stop rather than once per scenario:

1. `kill -9` while the first epoch trains (before any report);
2. `kill -9` the moment an epoch's rows reach the store (before or while it checkpoints);
3. `kill -9` the moment a checkpoint appears (before the trial hears of it);
4. SIGTERM after that: every row written so far is in the store exactly once (raw parts);
5. Ctrl-C (SIGINT to the driver's process group, as a terminal sends it) after another epoch,
   with a stale Optuna journal lock planted before the resume;
6. the printed resume command, run by a shell, finishes the sweep.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import optuna
import pytest

from orchestrator.results import ResultsStore
from tests.faults._driver import (
    SLOW_TO_NOTICE,
    Driver,
    checkpoints,
    cli_env,
    epochs_stored,
    medsweep,
    part_count,
    raw_metrics,
    study,
)
from tests.faults.conftest import sweep_yaml

EPOCHS, TRIALS = 6, 1
pytestmark = pytest.mark.ray  # it starts Ray (in each driver it runs)
SWEEP = "killed"
KEYS = ["run_id", "round", "epoch", "split", "name"]


def _resume(tmp_path: Path, log: Path) -> Driver:
    args = medsweep("sweep", "sweep.yaml", "--name", SWEEP, "--resume")
    return Driver(args, tmp_path, cli_env(), log)


def _plant_dead_holder_lock(sweep_dir: Path) -> None:
    """A journal lock whose holder (a pid that no longer exists) was killed."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    (sweep_dir / "optuna.journal.lock").write_text(f"{os.uname().nodename} {dead.pid}\n")


def test_driver_kills_lose_and_duplicate_nothing(tmp_path: Path, tiny_csv: Path) -> None:
    sweep_yaml(tmp_path, tiny_csv, epochs=EPOCHS, trials=TRIALS)
    sweep_dir = tmp_path / "store" / SWEEP
    log = tmp_path / "driver.log"
    left: list[list[str]] = []

    # 1. during the first epoch: a worker runs, nothing is reported yet
    first = Driver(medsweep("sweep", "sweep.yaml", "--name", SWEEP), tmp_path, cli_env(), log)
    first.wait_until(
        lambda: any(sweep_dir.glob("artifacts/*/worker-rank0.pid")), "a worker to start"
    )
    assert part_count(sweep_dir, "metrics") == 0
    left.append(first.kill9())

    # 2. the moment new epoch rows are stored (the checkpoint follows them)
    second = _resume(tmp_path, log)
    before = part_count(sweep_dir, "metrics")
    second.wait_until(lambda: part_count(sweep_dir, "metrics") > before, "an epoch's rows")
    left.append(second.kill9())

    # 3. the moment a checkpoint is written (Tune has not heard of it yet)
    third = _resume(tmp_path, log)
    ckpts = checkpoints(sweep_dir)
    third.wait_until(lambda: checkpoints(sweep_dir) > ckpts, "a new checkpoint")
    left.append(third.kill9())

    # 4. SIGTERM once a later epoch is stored
    fourth = _resume(tmp_path, log)
    _wait_for_another_epoch(fourth, sweep_dir)
    # the dashboard URL the driver printed is where Ray serves it (401: it asks for the token)
    url = re.search(r"Ray dashboard: (http://127\.0\.0\.1:\d+)", fourth.output.split("$ ")[-1])
    assert url, fourth.output[-2000:]
    assert _http_status(url.group(1)) in (200, 401)
    fourth.note("SIGTERM")
    fourth.proc.terminate()
    _check_interrupted(fourth, tmp_path / "store", "SIGTERM", 128 + 15)
    # a kill between an epoch's rows and its checkpoint makes the resume train that epoch again
    # and write its keys again: raw parts may hold both until the sweep's closing compaction
    assert not ResultsStore(tmp_path / "store").metrics(SWEEP).duplicated(KEYS).any()

    # 5. Ctrl-C after another epoch; the resume then meets a lock left by a dead pid
    fifth = _resume(tmp_path, log)
    _wait_for_another_epoch(fifth, sweep_dir)
    fifth.note("SIGINT to the process group")
    os.killpg(fifth.proc.pid, signal.SIGINT)
    hint = _check_interrupted(fifth, tmp_path / "store", "SIGINT", 128 + 2)
    _plant_dead_holder_lock(sweep_dir)

    # 6. the printed command, as printed, finishes the sweep
    final = subprocess.run(
        hint,
        shell=True,
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=400,
        start_new_session=True,
    )
    assert final.returncode == 0, final.stdout[-2000:] + final.stderr[-3000:]
    assert "taking longer than" not in final.stderr  # the dead holder's lock was broken at once
    # the leaderboard printed after the resume lists the trial (it once printed only a header)
    for run_id in ResultsStore(tmp_path / "store").runs(SWEEP)["run_id"]:
        assert run_id in final.stdout, final.stdout[-2000:]

    for leftovers in left:  # only Ray's agents may outlive a killed driver (they end on their own)
        assert set(leftovers) <= set(SLOW_TO_NOTICE), leftovers
    _check_store_and_study(tmp_path / "store")


def _wait_for_another_epoch(driver: Driver, sweep_dir: Path) -> None:
    done = sum(len(e) for e in epochs_stored(sweep_dir).values())
    driver.wait_until(
        lambda: sum(len(e) for e in epochs_stored(sweep_dir).values()) > done, "another epoch"
    )


def _check_interrupted(driver: Driver, root: Path, signame: str, code: int) -> str:
    """The trials are stored as interrupted by the signal; returns the resume command printed."""
    assert driver.finish() == code, driver.output[-3000:]
    runs = ResultsStore(root).runs(SWEEP)
    assert "interrupted" in set(runs["status"]), runs[["run_id", "status"]]
    assert "running" not in set(runs["status"])
    assert all(signame in e for e in runs.query("status == 'interrupted'")["error"])
    out = driver.output.split("$ ")[-1]
    assert "Tuner.restore" not in out and "Traceback" not in out, out[-3000:]
    hint = re.search(r"Resume it with:\n\s*(medsweep .*)", out)
    assert hint, out[-2000:]
    return hint.group(1)


def _check_store_and_study(root: Path) -> None:
    store = ResultsStore(root)
    runs = store.runs(SWEEP)
    assert len(runs) == TRIALS and set(runs["status"]) == {"completed"}, runs[["run_id", "status"]]
    metrics = store.metrics(SWEEP)
    assert not metrics.duplicated(KEYS).any()  # zero duplicates
    assert not raw_metrics(root / SWEEP).duplicated(KEYS).any()  # none left in the parts either
    for run_id in runs["run_id"]:
        auc = metrics.query("run_id == @run_id and split == 'val' and name == 'auc'")
        assert sorted(auc["epoch"]) == list(range(1, EPOCHS + 1)), run_id  # zero gaps
        train = metrics.query("run_id == @run_id and split == 'train' and name == 'loss'")
        assert sorted(train["epoch"]) == list(range(1, EPOCHS + 1)), run_id

    sweep_study = study(root / SWEEP)
    by_run = {t.user_attrs.get("medsweep_run_id"): t for t in sweep_study.trials}
    stray = [t.number for t in sweep_study.trials if t.state != optuna.trial.TrialState.COMPLETE]
    assert not stray, f"Optuna trials not complete: {stray}"
    records: list[dict[str, Any]] = runs.to_dict("records")  # type: ignore[assignment]
    for row in records:
        trial = by_run[row["run_id"]]
        assert trial.value is not None and math.isclose(trial.value, row["objective"])
        assert trial.params["train.lr"] == pytest.approx(json.loads(row["params"])["train.lr"])


def _http_status(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code

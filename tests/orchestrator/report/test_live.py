"""The live view: line mode for logs, the terminal table, progress and ETA arithmetic, and the
Tune callback that forwards to it (also after being pickled with a sweep and restored)."""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass, field
from typing import Any

import pytest
from rich.console import Console

from orchestrator import live


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def console() -> Console:
    return Console(file=io.StringIO(), width=200, color_system=None, force_terminal=False)


def text_of(con: Console) -> str:
    file = con.file
    assert isinstance(file, io.StringIO)
    return file.getvalue()


@dataclass
class FakeTrial:
    trial_id: str
    config: dict[str, Any] = field(default_factory=dict)
    last_result: dict[str, Any] = field(default_factory=dict)
    status: str = "RUNNING"
    error: str = ""

    def get_error(self) -> str:
        return self.error


def test_line_mode_prints_epochs_and_ends_with_progress_and_eta() -> None:
    clock, con = Clock(), console()
    view = live.LiveView("val_auc", "max", total=2, epochs=2, console=con, tty=False, clock=clock)
    view.started("a", "lr=0.001")
    clock.now += 30
    view.result("a", {"epoch": 1, "val_auc": 0.6, "epoch_time_s": 2.0})
    clock.now += 10
    view.result("a", {"epoch": 2, "val_auc": 0.8, "test_auc": 0.7})
    view.ended("a", "completed")
    view.ended("a", "completed")  # Tune may report an end twice: one line
    lines = text_of(con).splitlines()
    assert lines[0] == "trial 1 (a) epoch 1/2 val_auc 0.6000 (2.0s)"
    assert lines[1] == "trial 1 (a) epoch 2/2 val_auc 0.8000 test_auc 0.7000"
    assert lines[2].startswith("trial 1 (a) completed 1/2 trials done, 0 running, 50% of epochs")
    assert "ETA 40s" in lines[2]  # 2 of 4 epochs in 40 s: 2 more take 40 s
    assert "best val_auc 0.8000 (trial 1)" in lines[2]
    assert len(lines) == 3
    p = view.progress()
    assert (p["done"], p["total"], p["fraction"], p["eta_s"]) == (1, 2, 0.5, 40.0)


def test_failed_pruned_and_min_mode() -> None:
    clock, con = Clock(), console()
    view = live.LiveView("val_loss", "min", total=3, epochs=4, console=con, tty=False, clock=clock)
    for trial, losses in (("a", [0.9, 0.5]), ("b", [0.7, 0.8])):
        for epoch, loss in enumerate(losses, start=1):
            view.result(trial, {"epoch": epoch, "val_loss": loss})
    view.ended("a", "pruned")  # counts whole: its skipped epochs will not run
    view.ended("b", "error", "RuntimeError: boom")
    view.result("c", {"epoch": 1, "diverged": True})  # a diverged report is not a value
    out = text_of(con)
    assert "trial 2 (b) error: RuntimeError: boom" in out
    p = view.progress()
    assert p["best"] == 0.5 and p["best_trial"] == 1 and p["fraction"] == 8 / 12
    assert "c" not in view.rows


def test_terminal_render_shows_rows_and_hides_old_finished_trials() -> None:
    clock = Clock()
    view = live.LiveView(
        "val_auc", "max", total=20, epochs=3, console=console(), tty=True, clock=clock
    )
    for i in range(12):
        view.started(f"t{i}", f"lr={i}")
        view.result(f"t{i}", {"epoch": 3, "val_auc": i / 20})
        clock.now += 1
        if i < 11:
            view.ended(f"t{i}", "completed")
    rec = Console(record=True, width=160, color_system=None)
    rec.print(view.render())
    text = rec.export_text()
    assert "12 t11" in text and "running" in text and "lr=11" in text
    assert "1 t0 " not in text
    assert "3 earlier finished trial(s)" in text  # 11 finished, the last 8 shown
    assert "11/20 trials done, 1 running, 60% of epochs, elapsed 12s, ETA 8s" in text
    assert "best val_auc 0.5500 (trial 12)" in text


def test_callback_forwards_to_the_view_and_adopts_restored_trials() -> None:
    con = console()
    space = {"train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}
    callback = live.LiveCallback(space, sweep_dir="")
    callback.on_trial_result(0, [], FakeTrial("x"), {"epoch": 1, "val_auc": 0.5})  # no view
    restored = FakeTrial("old", {"train.lr": 0.001}, {"epoch": 2, "val_auc": 0.7,
                         "objective": 0.75, "finished": True}, status="TERMINATED")  # fmt: skip
    pending = FakeTrial("new", {"train.lr": 0.002}, status="PENDING")
    with live.LiveView("val_auc", "max", total=2, epochs=2, console=con, tty=False) as view:
        assert live.current() is view
        callback.on_step_end(0, [restored, pending])
        assert view.rows["old"].state == "completed" and view.rows["old"].best == 0.75
        assert view.rows["new"].state == "pending" and view.rows["new"].params == "lr=0.002"
        copy = pickle.loads(pickle.dumps(callback))  # Tune pickles callbacks with the sweep
        copy.on_trial_start(0, [], pending)
        assert view.rows["new"].state == "starting"
        copy.on_trial_result(0, [], pending, {"epoch": 1, "val_auc": 0.6})
        pending.error = "Traceback ...\nValueError: bad value"
        copy.on_trial_error(0, [], pending)
    assert live.current() is None
    out = text_of(con)
    assert "trial 1 (old)" not in out  # restored trials print nothing
    assert "trial 2 (new) epoch 1/2 val_auc 0.6000" in out
    assert "trial 2 (new) error: ValueError: bad value" in out


def test_old_progress_callback_state_unpickles_into_a_live_callback() -> None:
    from orchestrator.tune_callbacks import ProgressCallback

    old = ProgressCallback.__new__(ProgressCallback)
    old.__setstate__({"metric": "val_auc", "epochs": 3, "store_root": "/s", "sweep": "sw"})
    assert old.space == {} and old.sweep_dir == "/s/sw"
    with live.LiveView("val_auc", "max", 1, 3, console=console(), tty=False) as view:
        old.on_trial_result(0, [], FakeTrial("a"), {"epoch": 1, "val_auc": 0.5})
    assert view.rows["a"].value == 0.5


def test_session_say_and_helpers(capsys: pytest.CaptureFixture[str]) -> None:
    with live.session("val_auc", "max", 3, 2, quiet=True) as view:
        assert view is None and live.current() is None
    live.say("starting Ray")
    live.say("hidden", quiet=True)
    assert capsys.readouterr().err == "› starting Ray\n"
    assert [live.duration(s) for s in (0, 59.4, 61, 3725)] == ["0s", "59s", "1m01s", "1h02m"]
    assert live.status_of({"finished": True}) == "completed"
    assert live.status_of({"diverged": True}) == "diverged"
    assert live.status_of({}) == "pruned" and live.status_of({}, error=True) == "error"


def test_dashboard_hint_without_ray_is_none() -> None:
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray instance runs in this process")
    assert live.dashboard_hint() is None


def test_library_noise_is_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray's token notice and Optuna's study lines are replaced by medsweep's own lines; Tune's
    experiment box and TensorBoard hint by the live view (its legacy reporter prints nothing)."""
    import logging

    import optuna

    from orchestrator import engine

    name = "ray._private.authentication.authentication_token_setup"
    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)
    from ray._private import worker

    printed: list[str] = []
    monkeypatch.setattr(worker, "print_to_stdstream", lambda data, _: printed.extend(data["lines"]))
    level, verbosity = logging.getLogger(name).level, optuna.logging.get_verbosity()
    try:
        engine._quiet_libraries()
        assert logging.getLogger(name).level == logging.ERROR
        assert optuna.logging.get_verbosity() == optuna.logging.WARNING
        assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0"
        # the raylet's worker-count warning is dropped, its other messages are not
        count = "WARNING: 8 PYTHON worker processes have been started on node: ab with address"
        for pid, line in [("raylet", count), ("raylet", "a node died"), (42, count)]:
            worker.print_to_stdstream({"lines": [line], "pid": pid}, ignore_prefix=False)
        assert printed == ["a node died", count]
    finally:
        logging.getLogger(name).setLevel(level)
        optuna.logging.set_verbosity(verbosity)

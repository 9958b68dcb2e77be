"""Stopping a sweep cleanly on SIGINT (Ctrl-C) or SIGTERM (`kill`, a batch system's time limit).

While Ray Tune runs, the first SIGINT or SIGTERM asks Tune to stop the way its own Ctrl-C handler
does (through SIGUSR1, which Tune always listens to): it saves the experiment state, ends the
trials and returns. The results callback then stores every trial that had not ended as
``interrupted`` and the engine raises :class:`Interrupted`, whose message is medsweep's own
resume command (Tune's ``Tuner.restore(...)`` hint is not shown: it is not how medsweep resumes).
A second signal stops at once (KeyboardInterrupt).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.plan import SweepInfo

# Tune's messages about its own interruption handling and resume API (medsweep prints its own).
_TUNE_NOISE = ("Stop signal received", "Tuner.restore", "Trials did not complete", "restore_entry")
_received: list[str] = []


class Interrupted(Exception):
    """A run or sweep stopped by a signal; its unfinished trials are stored as interrupted."""

    def __init__(self, sweep: str, command: str, signal_name: str, trials: int) -> None:
        self.sweep, self.command, self.trials = sweep, command, trials
        self.signal_name = signal_name
        super().__init__(f"{command} {sweep!r} interrupted by {signal_name}")

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports a process ended by it."""
        return 128 + int(getattr(signal, self.signal_name, signal.SIGINT))


def interrupted(info: SweepInfo) -> Interrupted:
    """The exception for a sweep a signal stopped, counting its trials stored as interrupted."""
    from orchestrator.results import ResultsStore

    runs = ResultsStore(info.store_root).runs(info.sweep)
    stored = int((runs["status"] == "interrupted").sum())
    return Interrupted(info.sweep, info.command, received() or "SIGINT", stored)


def received() -> str | None:
    """The signal that stopped the current sweep (None while none has)."""
    return _received[-1] if _received else None


class _QuietTune(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return not any(noise in text for noise in _TUNE_NOISE)


@contextlib.contextmanager
def graceful_stop() -> Iterator[None]:
    """Route SIGINT and SIGTERM to Tune's graceful stop while the block runs (main thread only;
    elsewhere signals keep their handlers)."""
    _received.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    quiet = _QuietTune()
    tune_logger = logging.getLogger("ray.tune.tune")
    tune_logger.addFilter(quiet)
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # keep ours; Tune still listens to SIGUSR1

    def before_tune(signum: int, frame: FrameType | None) -> Any:
        """SIGUSR1 until Tune installs its handler (its default action would kill us)."""

    def handler(signum: int, frame: FrameType | None) -> Any:
        tune_listens = signal.getsignal(signal.SIGUSR1) is not before_tune
        if _received or not tune_listens:  # a second signal, or no trial started yet: stop now
            raise KeyboardInterrupt
        _received.append(signal.Signals(signum).name)
        os.kill(os.getpid(), signal.SIGUSR1)

    try:
        signal.signal(signal.SIGUSR1, before_tune)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, handler)
        yield
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)
        if env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = env
        tune_logger.removeFilter(quiet)

"""SIGINT/SIGTERM routing while Tune runs (`orchestrator.signals`), without Ray: the first
signal asks Tune to stop (through the SIGUSR1 Tune always listens to), a second one, or one
before Tune listens, stops at once; Tune's own resume hint is not shown; and the resume command
the CLI prints parses back to the command that was interrupted."""

from __future__ import annotations

import logging
import os
import shlex
import signal
import threading
from collections.abc import Iterator

import pytest

from orchestrator import signals
from orchestrator.cli import _resume_command, build_parser


@pytest.fixture
def tune_listening() -> Iterator[threading.Event]:
    """What `ray.tune.tune._setup_signal_catching` does once a Tune run starts."""
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGUSR1)
    with signals.graceful_stop():
        signal.signal(signal.SIGUSR1, lambda *_: stop.set())
        yield stop
    signal.signal(signal.SIGUSR1, previous)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_first_signal_asks_tune_to_stop(
    sig: signal.Signals, tune_listening: threading.Event
) -> None:
    os.kill(os.getpid(), sig)
    assert tune_listening.wait(5)
    assert signals.received() == sig.name
    with pytest.raises(KeyboardInterrupt):  # a second one stops at once
        os.kill(os.getpid(), sig)
        threading.Event().wait(1)  # the handler runs at the next bytecode


def test_a_signal_before_tune_listens_stops_at_once() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    with pytest.raises(KeyboardInterrupt), signals.graceful_stop():
        os.kill(os.getpid(), signal.SIGTERM)
        threading.Event().wait(1)
    assert {s: signal.getsignal(s) for s in before} == before  # handlers are restored
    assert "TUNE_DISABLE_SIGINT_HANDLER" not in os.environ


def test_tunes_own_resume_hint_is_not_shown(caplog: pytest.LogCaptureFixture) -> None:
    tune = logging.getLogger("ray.tune.tune")
    with caplog.at_level(logging.WARNING), signals.graceful_stop():
        tune.warning("Experiment has been interrupted ... Resume with: Tuner.restore(path)")
        tune.warning("something else")
    assert "Tuner.restore" not in caplog.text and "something else" in caplog.text


def test_the_printed_resume_command_is_the_interrupted_one() -> None:
    argv = ["sweep", "my dir/x.yaml", "--set", "model.backbone=[a, b]", "--set", "train.lr=1e-3"]
    args = build_parser().parse_args(argv)
    hint = _resume_command(args, "the-sweep")
    words = shlex.split(hint)
    assert words[0] == "medsweep"
    again = build_parser().parse_args(words[1:])
    assert (again.command, again.config, again.set) == (args.command, args.config, args.set)
    assert again.name == "the-sweep" and again.resume is True

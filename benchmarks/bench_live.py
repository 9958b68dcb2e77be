"""The live view costs no measurable sweep time (the issue's requirement).

Two measurements:

* the same small fundus sweep (2 trials x 2 epochs at 32 px, two at a time, on an embedded Ray)
  with the live view (terminal mode, forced with TTY_COMPATIBLE=1) and without it (quiet),
  alternated twice so warm-up does not favour one side; the difference is within run-to-run
  noise;
* the view's own cost per Tune event: 200 trials x 20 epochs of results fed through the
  callback, with a terminal redraw (what rich does 4 times a second) after every 50 events.
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

TRIALS, EPOCHS = 200, 20


def _config(folder: Path, csv: Path) -> Path:
    path = folder / "live.yaml"
    path.write_text(
        f"""
name: live
task: fundus
seed: 0
data: {{manifest: {csv}, image_size: 32, val_fraction: 0.25}}
model: {{backbone: resnet10t}}
train: {{epochs: 2, batch_size: 16}}
store: {{root: {folder / "store"}}}
sweep:
  num_samples: 2
  max_concurrent: 2
  space:
    train.lr: {{type: loguniform, low: 1.0e-4, high: 3.0e-3}}
"""
    )
    return path


def _sweep(config: Path, name: str, live: bool) -> float:
    import orchestrator

    saved = os.environ.get("TTY_COMPATIBLE")
    os.environ["TTY_COMPATIBLE"] = "1"  # the live view's terminal mode, as on a console
    start = time.perf_counter()
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            orchestrator.sweep(config, name=name, quiet=not live)
    finally:
        if saved is None:
            os.environ.pop("TTY_COMPATIBLE", None)
        else:
            os.environ["TTY_COMPATIBLE"] = saved
    return time.perf_counter() - start


def sweeps() -> dict[str, list[float]]:
    """Wall time of the same sweep with and without the live view, alternated."""
    import ray

    from tasks.fundus.synth import generate

    times: dict[str, list[float]] = {"quiet": [], "live": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = _config(folder, generate(folder / "data", n=64, size=64, seed=1))
        try:
            from orchestrator.engine import connect_ray

            connect_ray()  # Ray starts once, before any timed sweep
            for i, live in enumerate((False, True, False, True)):
                key = "live" if live else "quiet"
                times[key].append(_sweep(config, f"{key}-{i}", live))
        finally:
            ray.shutdown()
    return times


def per_event() -> float:
    """Seconds per Tune result handled by the callback and the view (redraws included)."""
    from rich.console import Console

    from orchestrator import live

    class Trial:
        def __init__(self, i: int) -> None:
            self.trial_id, self.config, self.last_result = f"t{i:05d}", {"train.lr": 1e-3}, {}

    space = {"train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}
    callback = live.LiveCallback(space)
    console = Console(file=io.StringIO(), width=160, force_terminal=True)
    trials = [Trial(i) for i in range(TRIALS)]
    events = 0
    view = live.LiveView("val_auc", "max", TRIALS, EPOCHS, console=console, tty=True)
    start = time.perf_counter()
    with view:
        for trial in trials:
            callback.on_trial_start(0, trials, trial)
            for epoch in range(1, EPOCHS + 1):
                callback.on_trial_result(0, trials, trial, {"epoch": epoch, "val_auc": 0.5})
                events += 1
                if events % 50 == 0:
                    console.print(view.render())
            trial.last_result = {"finished": True}
            callback.on_trial_complete(0, trials, trial)
    return (time.perf_counter() - start) / events


def run() -> list[dict[str, Any]]:
    event = per_event()
    times = sweeps()
    quiet, shown = statistics.mean(times["quiet"]), statistics.mean(times["live"])
    noise = max(times["quiet"]) - min(times["quiet"])
    return [
        {
            "name": "sweep with the live view (terminal mode)",
            "size": "2 trials x 2 epochs, fundus 32 px, 2 at a time",
            "seconds": shown,
            "target_s": None,
            "note": f"mean of 2; quiet: {quiet:.1f} s (runs differ by {noise:.1f} s); "
            f"difference {shown - quiet:+.1f} s",
        },
        {
            "name": "live view per Tune result (callback + redraw every 50 events)",
            "size": f"{TRIALS} trials x {EPOCHS} epochs",
            "seconds": event,
            "target_s": None,
            "note": f"{event * 1e6:.0f} us per event",
        },
    ]


if __name__ == "__main__":
    for row in run():
        print(row)

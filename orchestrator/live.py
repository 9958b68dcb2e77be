"""What a researcher watches while a sweep runs.

On a terminal: a rich live view with one row per trial (state, epoch/total, current and best
value of the sweep metric, parameters) above an overall progress bar (trials done/total, the
share of epochs done, an ETA). Elsewhere (logs, CI, `ray job submit`): plain lines — one per
epoch, one per finished trial with done/total and the ETA.

Before Tune starts, `say` prints what is happening (checking data, starting Ray, the dashboard
URL), so a sweep is never silent while Ray starts.

`LiveCallback` is the Tune side. Tune pickles callbacks with the experiment and a resumed sweep
gets the pickled ones back, so the callback holds no display: it forwards events to the view of
the `session` running in this process (none when quiet), and `on_step_end` catches the view up
with trials restored from an earlier run.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ray.tune import Callback
from rich.console import Console, Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

_views: list[LiveView] = []  # the view of the sweep this process runs (at most one)
ENDED = ("completed", "pruned", "diverged", "error", "interrupted")
_STYLE = {
    "pending": "dim",
    "starting": "blue",
    "running": "cyan",
    "completed": "green",
    "pruned": "yellow",
    "diverged": "red",
    "error": "red",
    "interrupted": "yellow",
}
_RECENT = 8  # finished trials kept in the terminal table besides the running ones


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def say(text: str, quiet: bool = False, console: Console | None = None) -> None:
    """One progress line before the live view exists (what the sweep is doing now)."""
    if not quiet:
        (console or stderr_console()).print(f"[dim]›[/dim] {text}")


def dashboard_hint() -> str | None:
    """The Ray dashboard URL in use (it moves off 8265 when that port is taken) and how to
    log in when token authentication is on; None when Ray runs without a dashboard."""
    try:
        import ray._private.worker as worker

        url = worker._global_node.webui_url if worker._global_node is not None else None
    except (AttributeError, ImportError):
        return None
    if not url:
        return None
    hint = f"Ray dashboard: http://{url}" if "://" not in url else f"Ray dashboard: {url}"
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled

        token = bool(is_token_auth_enabled())
    except (ImportError, AttributeError, RuntimeError):
        token = False
    if token:
        hint += " (token auth: paste the output of `ray get-auth-token` when the page asks)"
    return hint


@dataclass
class TrialRow:
    """The live state of one trial."""

    trial_id: str
    number: int
    params: str = ""
    state: str = "starting"
    epoch: int = 0
    epochs: int = 0
    round: int | None = None
    value: float = math.nan
    best: float = math.nan
    error: str = ""
    updated: float = field(default_factory=time.monotonic)

    @property
    def ended(self) -> bool:
        return self.state in ENDED


class LiveView:
    """Trial table and overall progress of one sweep; thread-safe (rich refreshes the terminal
    from its own thread while Tune's callbacks update the rows)."""

    def __init__(
        self,
        metric: str,
        mode: str,
        total: int,
        epochs: int,
        console: Console | None = None,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metric, self.mode, self.total, self.epochs = metric, mode, max(total, 1), epochs
        self.console = console or stderr_console()
        self.tty = self.console.is_terminal if tty is None else tty
        self.clock = clock
        self.start = clock()
        self.rows: dict[str, TrialRow] = {}
        self._lock = threading.RLock()
        self._live: Any = None

    # ----- events ---------------------------------------------------------------------------

    def row(self, trial_id: str, params: str = "") -> TrialRow:
        with self._lock:
            if trial_id not in self.rows:
                number = len(self.rows) + 1
                self.rows[trial_id] = TrialRow(trial_id, number, params, epochs=self.epochs)
            found = self.rows[trial_id]
            found.params = found.params or params
            return found

    def started(self, trial_id: str, params: str) -> None:
        """Tune started the trial: its Ray Train workers are starting up (no epoch yet)."""
        with self._lock:
            row = self.row(trial_id, params)
            row.state, row.updated = "starting", self.clock()

    def result(self, trial_id: str, result: Mapping[str, Any], params: str = "") -> None:
        """One reported epoch: its metric value, the best so far, epoch and round."""
        if result.get("diverged"):
            return
        with self._lock:
            row = self.row(trial_id, params)
            row.state = "running"
            row.epoch = int(result.get("epoch", row.epoch) or 0)
            row.round = int(result["round"]) if result.get("round") is not None else None
            value = result.get(self.metric)
            if isinstance(value, (int, float)) and math.isfinite(value):
                row.value = float(value)
                row.best = self._better(row.best, row.value)
            row.updated = self.clock()
        if not self.tty:
            self._line(self._epoch_line(row, result))

    def ended(self, trial_id: str, status: str, error: str = "") -> None:
        with self._lock:
            row = self.row(trial_id)
            already = row.ended
            row.state, row.error, row.updated = status, error, self.clock()
        if not self.tty and not already:
            self._line(self._end_line(row))

    def sync(self, trials: list[Any], params_of: Callable[[Any], str]) -> None:
        """Follow Tune's trial states: pending (waiting for resources), starting (its workers
        start up), and trials this view has not seen (restored from an earlier run of the
        sweep, adopted without printing lines)."""
        for trial in trials:
            status = str(getattr(trial, "status", ""))
            with self._lock:
                known = self.rows.get(trial.trial_id)
                if known is not None:
                    if not known.ended and known.epoch == 0:
                        known.state = "pending" if status == "PENDING" else "starting"
                    continue
                self._adopt(trial, params_of(trial), status)

    def _adopt(self, trial: Any, params: str, status: str) -> None:
        last = dict(trial.last_result or {})
        row = self.row(trial.trial_id, params)
        row.epoch = int(last.get("epoch", 0) or 0)
        value, best = last.get(self.metric), last.get("objective")
        if isinstance(value, (int, float)) and math.isfinite(value):
            row.value = float(value)
        if isinstance(best, (int, float)) and math.isfinite(best):
            row.best = float(best)
        if status in ("TERMINATED", "ERROR"):
            row.state = status_of(last, status == "ERROR")
        elif status == "PENDING":
            row.state = "pending"
        else:
            row.state = "running" if row.epoch else "starting"

    def _better(self, old: float, new: float) -> float:
        if math.isnan(old):
            return new
        return max(old, new) if self.mode == "max" else min(old, new)

    # ----- progress -------------------------------------------------------------------------

    def progress(self) -> dict[str, Any]:
        """Trials done/total, epochs done (a finished trial counts whole: what it skipped will
        not run), the best value and trial, and the ETA from the epoch rate so far."""
        with self._lock:
            rows = list(self.rows.values())
        done = sum(1 for r in rows if r.ended)
        per_trial = max(self.epochs, 1)
        units = sum(per_trial if r.ended else min(r.epoch, per_trial) for r in rows)
        total_units = self.total * per_trial
        elapsed = self.clock() - self.start
        trained = sum(min(r.epoch, per_trial) for r in rows)
        eta = None
        if trained and units < total_units:
            eta = (total_units - units) * elapsed / max(units, 1)
        elif units >= total_units:
            eta = 0.0
        scored = [r for r in rows if not math.isnan(r.best)]
        top = None
        if scored:
            key: Callable[[TrialRow], float] = lambda r: r.best  # noqa: E731
            top = max(scored, key=key) if self.mode == "max" else min(scored, key=key)
        return {
            "done": done,
            "total": self.total,
            "running": sum(1 for r in rows if r.state in ("running", "starting")),
            "fraction": min(units / total_units, 1.0) if total_units else 0.0,
            "elapsed_s": elapsed,
            "eta_s": eta,
            "best": None if top is None else top.best,
            "best_trial": None if top is None else top.number,
        }

    def progress_text(self) -> str:
        p = self.progress()
        text = f"{p['done']}/{p['total']} trials done, {p['running']} running"
        text += f", {p['fraction']:.0%} of epochs, elapsed {duration(p['elapsed_s'])}"
        if p["eta_s"] is not None and p["done"] < p["total"]:
            text += f", ETA {duration(p['eta_s'])}"
        if p["best"] is not None:
            text += f"; best {self.metric} {p['best']:.4f} (trial {p['best_trial']})"
        return text

    # ----- terminal -------------------------------------------------------------------------

    def __rich__(self) -> RenderableType:
        return self.render()

    def render(self) -> RenderableType:
        with self._lock:
            rows = sorted(self.rows.values(), key=lambda r: r.number)
        running = [r for r in rows if not r.ended]
        finished = sorted((r for r in rows if r.ended), key=lambda r: r.updated)[-_RECENT:]
        shown = sorted(running + finished, key=lambda r: r.number)
        table = Table(box=None, pad_edge=False, header_style="bold")
        for name in ("trial", "state", "epoch", self.metric, "best", "params"):
            right = name in ("epoch", self.metric, "best")
            table.add_column(name, justify="right" if right else "left", no_wrap=name != "params")
        for r in shown:
            epoch = f"{r.epoch}/{r.epochs}" + (f" r{r.round}" if r.round else "")
            state = f"[{_STYLE.get(r.state, 'white')}]{r.state}[/]"
            table.add_row(
                f"{r.number} {r.trial_id}", state, epoch, _num(r.value), _num(r.best), r.params
            )
        hidden = len(rows) - len(shown)
        p = self.progress()
        footer = Table.grid(padding=(0, 1))
        footer.add_column(width=30, no_wrap=True)
        footer.add_column()
        footer.add_row(
            ProgressBar(total=1.0, completed=p["fraction"], width=30), self.progress_text()
        )
        parts: list[RenderableType] = [table]
        if hidden:
            parts.append(Text(f"... {hidden} earlier finished trial(s)", style="dim"))
        parts.append(footer)
        return Group(*parts)

    def __enter__(self) -> LiveView:
        _views.append(self)
        if self.tty:
            from rich.live import Live

            self._live = Live(
                self, console=self.console, refresh_per_second=4, redirect_stderr=False
            )
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        if self in _views:
            _views.remove(self)

    # ----- lines ----------------------------------------------------------------------------

    def _line(self, text: str) -> None:
        self.console.print(text)

    def _epoch_line(self, row: TrialRow, result: Mapping[str, Any]) -> str:
        tests = [
            f"{k} {v:.4f}"
            for k, v in result.items()
            if k.startswith("test_") and isinstance(v, float) and math.isfinite(v)
        ]
        took = result.get("epoch_time_s")
        return (
            f"[dim]trial {row.number} ({row.trial_id})[/dim] epoch {row.epoch}/{row.epochs}"
            + (f" round {row.round}" if row.round else "")
            + f" {self.metric} [bold]{_num(row.value)}[/bold]"
            + (f" ({took:.1f}s)" if isinstance(took, (int, float)) else "")
            + (f" {' '.join(tests)}" if tests else "")
        )

    def _end_line(self, row: TrialRow) -> str:
        colour = _STYLE.get(row.state, "white")
        why = f": {row.error}" if row.error else ""
        return (
            f"[{colour}]trial {row.number} ({row.trial_id}) {row.state}{why}[/{colour}]"
            f" [dim]{self.progress_text()}[/dim]"
        )


def _num(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.4f}"


def duration(seconds: float) -> str:
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def status_of(last: Mapping[str, Any], error: bool = False) -> str:
    """The results store's word for how a trial ended."""
    if error:
        return "error"
    if last.get("diverged"):
        return "diverged"
    return "completed" if last.get("finished") else "pruned"


def current() -> LiveView | None:
    return _views[-1] if _views else None


@contextlib.contextmanager
def session(
    metric: str, mode: str, total: int, epochs: int, quiet: bool
) -> Iterator[LiveView | None]:
    """The live view while Tune runs (nothing when quiet)."""
    if quiet:
        yield None
        return
    with LiveView(metric, mode, total, epochs) as view:
        yield view
    if not view.tty:
        return
    view.console.print(f"[dim]{view.progress_text()}[/dim]")


class LiveCallback(Callback):
    """Forwards Tune's trial events to the live view of this process (see the module doc)."""

    def __init__(self, space: Mapping[str, Any] | None = None, sweep_dir: str = "") -> None:
        self.space, self.sweep_dir = dict(space or {}), sweep_dir
        self._synced = 0.0

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickled from an older sweep's Tune state: fill what that version did not store."""
        self.__dict__.update({"space": {}, "sweep_dir": "", **state, "_synced": 0.0})
        if not self.sweep_dir and state.get("store_root") and state.get("sweep"):
            self.sweep_dir = f"{state['store_root']}/{state['sweep']}"

    def _params(self, trial: Any) -> str:
        from orchestrator import space as space_mod

        config = dict(getattr(trial, "config", {}) or {})
        if "variant" in config:
            return f"variant={config['variant']}"
        try:
            values = space_mod.decode_json(self.space, config) if self.space else {}
        except (KeyError, TypeError, ValueError):
            values = {}
        return " ".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in values.items())

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        view = current()
        if view is not None:
            view.started(trial.trial_id, self._params(trial))

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        view = current()
        if view is not None:
            view.result(trial.trial_id, result, self._params(trial))

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        view = current()
        if view is not None:
            view.ended(trial.trial_id, status_of(trial.last_result or {}))

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        view = current()
        if view is not None:
            view.ended(trial.trial_id, "error", self._error_line(trial))

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        view = current()
        now = time.monotonic()
        if view is not None and now - self._synced > 1.0:
            self._synced = now
            view.sync(trials, self._params)

    def _error_line(self, trial: Any) -> str:
        """The stored one-line cause of a failed trial (its run's failure file, else Tune's)."""
        from pathlib import Path

        from orchestrator.folds import read_failure

        found = None
        if self.sweep_dir:
            found = read_failure(Path(self.sweep_dir) / "artifacts" / trial.trial_id)
        if found and found.get("error"):
            return str(found["error"])
        text = str(trial.get_error() or "") if hasattr(trial, "get_error") else ""
        lines = [ln for ln in text.splitlines() if ln.strip()]
        return lines[-1][:300] if lines else "failed"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ">".join(map(str, value))
    return str(value)

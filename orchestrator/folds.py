"""The pieces a trial coordinates its fold runs with: a mailbox actor, a runner that starts
`TorchTrainer.fit()` calls in threads under a concurrency limit, per-round bookkeeping, and the
cause of a failure, written where the driver finds it."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from orchestrator.plan import EndEvent, RunSpec, SweepInfo

FAILURE_FILE = "failure.json"
DONE_FILE = ".done.json"


class TrialChannel:
    """Per-trial mailbox (a Ray actor): runs post epoch/end events, the trial can ask them to stop.

    Created with `open_channel`; async methods, so a blocking `get` never holds up `put`.
    """

    def __init__(self) -> None:
        self.events: asyncio.Queue[Any] = asyncio.Queue()
        self.stop = False

    async def put(self, event: Any) -> None:
        await self.events.put(event)

    async def get(self, timeout: float) -> Any:
        if timeout <= 0:  # wait_for(..., 0) would cancel even a ready get
            try:
                return self.events.get_nowait()
            except asyncio.QueueEmpty:
                return None
        try:
            return await asyncio.wait_for(self.events.get(), timeout)
        except TimeoutError:
            return None

    async def request_stop(self) -> None:
        self.stop = True

    async def stopped(self) -> bool:
        return self.stop


def open_channel() -> Any:
    import ray

    actor: Any = ray.remote(TrialChannel)
    return actor.options(num_cpus=0, max_concurrency=64).remote()


class FoldFailed(RuntimeError):
    """A fold run failed for good (its retries used up); the message names the cause."""


@dataclass
class RoundState:
    """What a round has seen: each run's metrics per epoch and how it ended."""

    runs: list[str]
    epochs: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)
    val: dict[str, dict[int, Any]] = field(default_factory=dict)
    ends: dict[str, EndEvent] = field(default_factory=dict)
    reported: set[int] = field(default_factory=set)
    nodes: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # per run, once known

    def complete_epochs(self) -> list[int]:
        """Epochs every run has finished (in order), not yet reported."""
        if not self.runs or any(r not in self.epochs for r in self.runs):
            return []
        common = set.intersection(*(set(self.epochs[r]) for r in self.runs))
        return sorted(common - self.reported)


def mean_metrics(per_run: list[dict[str, float]]) -> dict[str, float]:
    """The mean of every metric all runs reported (the trial's AUC(CV) at that epoch)."""
    skip = {"epoch", "objective", "best_epoch"}
    keys = set.intersection(*(set(m) for m in per_run)) - skip
    return {k: float(sum(m[k] for m in per_run) / len(per_run)) for k in sorted(keys)}


def fold_run_id(trial_id: str, fold: int, round_: int | None) -> str:
    return f"{trial_id}-f{fold}" if round_ is None else f"{trial_id}-r{round_}-f{fold}"


def error_cause(err: BaseException) -> tuple[str, str]:
    """(one line ``Type: message``, full traceback text) of a fold failure."""
    inner: BaseException = err
    failures = getattr(err, "worker_failures", None)
    if failures:
        inner = failures[min(failures)]
    elif getattr(err, "controller_failure", None) is not None:
        inner = err.controller_failure  # type: ignore[attr-defined]
    cause = getattr(inner, "cause", None)  # RayTaskError wraps the user's exception
    shown = cause if isinstance(cause, BaseException) else inner
    text = str(shown).strip().splitlines()
    line = f"{type(shown).__name__}: {text[-1] if text else ''}".strip()
    tb = str(inner) if "Traceback" in str(inner) else "".join(traceback.format_exception(inner))
    return line[:500], tb[-20000:]


def read_log_tail(directory: Path, lines: int = 30) -> str:
    """The last lines of a run's worker log (rank 0)."""
    path = directory / "worker-rank0.log"
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class FoldRunner:
    """Starts a trial's fold runs in threads (each `TorchTrainer.fit()`) under a concurrency
    limit, and remembers how each ended."""

    def __init__(self, fit: Callable[[RunSpec], None], limit: int) -> None:
        self.fit, self.limit = fit, max(1, limit)
        self.errors: dict[str, BaseException] = {}
        self.threads: list[threading.Thread] = []
        self._slots = threading.Semaphore(self.limit)

    def start(self, specs: list[RunSpec]) -> None:
        for spec in specs:
            thread = threading.Thread(target=self._run, args=(spec,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _run(self, spec: RunSpec) -> None:
        with self._slots:
            spec = replace(spec, timings={**spec.timings, "launched": time.time()})
            try:
                self.fit(spec)
            except BaseException as err:  # recorded; the trial decides what it means
                self.errors[spec.run_id] = err

    def alive(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def join(self) -> None:
        for thread in self.threads:
            thread.join()


def write_failure(directory: Path, run_id: str, line: str, tb: str, log: str) -> None:
    """The cause of a trial's failure, read by the driver when Tune reports the error."""
    from tasks.common.io import atomic_write_json

    atomic_write_json(
        directory / FAILURE_FILE,
        {"run_id": run_id, "error": line, "traceback": tb, "log": log, "time": time.time()},
    )


def read_failure(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((directory / FAILURE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def objective_of(values: list[float], mode: str, reduce: str) -> float:
    """The best (or last) finite value of a sequence."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan
    if reduce == "last":
        return values[-1]
    return max(finite) if mode == "max" else min(finite)


def with_fold(spec: RunSpec, **changes: Any) -> RunSpec:
    return replace(spec, **changes)


def base_spec(info: SweepInfo, config: dict[str, Any], trial_id: str) -> RunSpec:
    """The spec of a trial's single run (folds derive theirs from it)."""
    return RunSpec(
        config=config,
        source=info.source,
        sweep=info.sweep,
        store_root=info.store_root,
        trial_id=trial_id,
        run_id=trial_id,
        metric=info.metric,
        mode=info.mode,
        objective=info.objective,
        cwd=info.cwd,
        artifacts_dir=str(Path(info.sweep_dir) / "artifacts" / trial_id),
    )

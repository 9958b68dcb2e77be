"""Helpers shared by the benchmarks: repeated timing, rows in the runner's format, a local Ray,
an older commit checked out beside the current code.

A row is a plain dict (see `benchmarks/__init__.py`); `row()` builds one from samples so that
every figure carries its median, range and repeat count the same way.
"""

from __future__ import annotations

import logging
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

Better = Literal["lower", "higher"]


class Skipped(Exception):
    """Raised by a benchmark that cannot run on this machine (e.g. no GPU); the figures of an
    earlier run elsewhere are kept."""


def timed(fn: Callable[[], Any], repeat: int, warmup: int = 0) -> list[float]:
    """Wall seconds of `repeat` calls of `fn` after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def row(
    name: str,
    samples: Sequence[float],
    *,
    size: str = "",
    unit: str = "s",
    target: float | None = None,
    better: Better = "lower",
    reference: Sequence[float] | float | None = None,
    reference_name: str = "",
    note: str = "",
    why: str = "",
) -> dict[str, Any]:
    """One figure: the median of `samples` with its range, against a target and/or a reference
    (the same quantity measured another way, side by side; its own median and range are kept).

    `why` says why a target is missed and what would close it; it is only kept when the target
    is missed (so a stale excuse cannot outlive a fix).
    """
    if not samples:
        raise ValueError(f"{name}: no samples")
    out: dict[str, Any] = {
        "name": name,
        "size": size,
        "value": statistics.median(samples),
        "range": [min(samples), max(samples)],
        "n": len(samples),
        "unit": unit,
        "better": better,
        "target": target,
        "note": note,
    }
    if reference is not None:
        ref = [float(reference)] if isinstance(reference, int | float) else list(reference)
        out["reference_value"] = statistics.median(ref)
        out["reference_range"] = [min(ref), max(ref)]
        out["reference"] = reference_name
    if why and not meets(out):
        out["why"] = why
    return out


def meets(r: dict[str, Any]) -> bool | None:
    """Whether a row meets its target (None: no target)."""
    target = r.get("target")
    if target is None:
        return None
    value = float(r["value"])
    return value >= target if r.get("better") == "higher" else value <= target


def usable_cores() -> int:
    """Cores this process may run on (taskset / affinity), not the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextmanager
def local_ray(num_cpus: int | None = None) -> Iterator[bool]:
    """The Ray this process already joined (a test's shared instance), else a local one for the
    benchmark, shut down afterwards. Yields True when it started one."""
    import ray

    if ray.is_initialized():
        yield False
        return
    os.environ.pop("RAY_ADDRESS", None)  # a benchmark never joins someone else's cluster
    for key, value in {
        "RAY_TRAIN_V2_ENABLED": "1",
        "RAY_CHDIR_TO_TRIAL_DIR": "0",
        "RAY_DEDUP_LOGS": "0",
    }.items():
        os.environ.setdefault(key, value)
    ray.init(
        address="local",
        num_cpus=num_cpus or usable_cores(),
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    try:
        yield True
    finally:
        ray.shutdown()


def fmt_s(seconds: float) -> str:
    return f"{seconds:.3g} s" if seconds < 100 else f"{seconds:.0f} s"


@contextmanager
def worktree(commit: str) -> Iterator[Path]:
    """`commit` checked out in a temporary git worktree (for before/after figures in one run)."""
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "base"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(old), commit],
            cwd=root,
            check=True,
            capture_output=True,
        )
        try:
            yield old
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(old)],
                cwd=root,
                check=False,
                capture_output=True,
            )

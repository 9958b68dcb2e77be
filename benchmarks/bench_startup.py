"""Trial start-up: from the moment Tune schedules a trial to its first training step, with the
breakdown of where the time goes, and the second trial's data-ready time against the first's
(decoded images are built once per sweep in the on-disk image cache and memory-mapped after).

Each run writes ``timings.json`` (orchestrator/loop.py): the trial coordinator's start, the
launch of its Ray Train run, the worker function's start, the task ready (imports, config,
task), setup done (manifest, images, model, optimiser), the first optimiser step, the first
epoch. The trial's start is the runs table's ``start_time``, written by Tune's `on_trial_start`
once the trial's actor has started: what comes before it (Tune's bookkeeping, the searcher, the
trial actor's process) is bounded by the gap between one trial's end and the next one's start,
reported in its own row (trials run one at a time here). Every measurement runs in a fresh
subprocess with its own Ray and an empty image cache; sweeps of the current code alternate with
sweeps of commit BASE (checked out in a git worktree) for the before/after figure.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import worktree

SWEEPS = True  # quick mode runs whole sweeps: `make bench ARGS="--quick"`, not `make test`
ROOT = Path(__file__).resolve().parent.parent
TARGET_MEDIAN_S, TARGET_MAX_S = 5.0, 8.0
BASE = "55a93f8"  # the last commit whose trials and Train controllers imported torch
REPEATS = 2  # sweeps of each version
PHASES = (  # (label, from mark, to mark)
    ("Tune trial actor start", "scheduled", "trial_started"),
    ("trial coordinator", "trial_started", "launched"),
    ("Ray Train: controller, placement group, worker group, gloo", "launched", "worker_started"),
    ("imports, config, task", "worker_started", "task_ready"),
    ("data (manifest, decode or map) and model", "task_ready", "setup_done"),
    ("first step", "setup_done", "first_step"),
)
WHY = (
    "Ray Train's fixed cost per run is most of what is left (the phase rows below), a chain of "
    "fresh processes: the run's controller starts about 1.1 s after fit() (a new process "
    "importing Train's controller), the worker group takes 2.3 s (placement group, a new worker "
    "process importing ray and torch, gloo), then the task's imports on the worker take 2.3 s "
    "(torchvision brings torch._dynamo, 0.9 s, which torch's optimisers import anyway; "
    "scikit-learn's metrics 0.7 s). Removing every torch import outside the workers took about 2 "
    "s off the median (the reference column): the trial's process imported it for TorchTrainer, "
    "and each controller for Ray's TorchConfig and for the TorchVersion that Train's state "
    "tracking brings back from a worker. Leaving out Train's preemption watcher (one more process "
    "per run, importing Ray Train: about 1 s of CPU) made no clear difference here, where trials "
    "run one at a time (the reference moved as much), but took about 1.2 s off each trial's "
    "overhead in sweeps of 8 trials at concurrency 2 run side by side (wall 71.7 s to 64.6 s, two "
    "runs each), where a starting trial shares the CPUs. Worker prestart, "
    "worker_process_setup_hook, a job runtime env equal to Train's (so pooled workers could host "
    "its actors), importing the task on a worker thread during Train's set-up, switching off "
    "Train metrics, a 0.25 s Train health-check interval (2 s by default) and one mailbox actor "
    "per sweep instead of one per trial (its process imports little) gave no gain; running "
    "Train's controller inside the trial's process started the worker 0.6 s sooner but left each "
    "run's placement group holding its CPU after the run. Closing the rest needs Ray Train to "
    "reuse a warm worker group across runs (not in Ray 2.60) or trials without Ray Train, which "
    "the issue rules out"
)


def _measure(trials: int, size: int) -> dict[str, Any]:
    import orchestrator
    from orchestrator.config import load
    from orchestrator.results import ResultsStore

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MEDSWEEP_CACHE"] = str(Path(tmp) / "cache")
        config = load(
            ROOT / "configs" / "fundus_demo.yaml",
            {
                "store.root": str(Path(tmp) / "store"),
                "train.epochs": 1,
                "sweep.num_samples": trials,
                "sweep.max_concurrent": 1,
                "data.image_size": size,
            },
        )
        t0 = time.time()
        orchestrator.sweep(config, name="startup", quiet=True)
        wall = time.time() - t0
        runs = ResultsStore(Path(tmp) / "store").runs("startup").sort_values("start_time")
        starts, ends = runs["start_time"].to_list(), runs["end_time"].to_list()
        gaps = [start - end for start, end in zip(starts[1:], ends[:-1], strict=True)]
        marks = []
        for row in runs.itertuples():
            path = Path(tmp) / "store" / "startup" / "artifacts" / row.run_id / "timings.json"
            first = json.loads(path.read_text())[0]
            marks.append({"scheduled": float(row.start_time), **first})
    return {"wall_s": wall, "marks": marks, "gaps": gaps}


def _run_subprocess(trials: int, size: int, code_dir: Path = ROOT) -> dict[str, Any]:
    """One measurement with the code in `code_dir` (its Ray workers inherit the path)."""
    code = (
        f"import json; from benchmarks.bench_startup import _measure; "
        f"print(json.dumps(_measure({trials}, {size})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=code_dir,
        env={**os.environ, "PYTHONPATH": str(code_dir)},
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _startups(marks: list[dict[str, float]]) -> list[float]:
    return [m["first_step"] - m["scheduled"] for m in marks]


def run(quick: bool = False) -> list[dict[str, Any]]:
    trials, size = (2, 32) if quick else (4, 64)
    results, before = [], []
    with worktree(BASE) as old:
        for _ in range(1 if quick else REPEATS):  # alternating: a busy spell hits both versions
            results.append(_run_subprocess(trials, size))
            before.extend(_startups(_run_subprocess(trials, size, old)["marks"]))
    marks = [m for result in results for m in result["marks"]]
    startup = _startups(marks)
    rows = [
        {
            "name": "trial start-up (scheduled -> first training step)",
            "note": f"median of {len(startup)} trials ({len(results)} sweeps), fundus demo "
            "config, 1 worker, 1 CPU",
            "size": "480 images",
            "seconds": statistics.median(startup),
            "range": (min(startup), max(startup)),
            "reference_s": statistics.median(before),
            "reference": f"{BASE}, torch imported outside the workers, sweeps alternating "
            f"({min(before):.2f}-{max(before):.2f} s)",
            "target_s": TARGET_MEDIAN_S,
            "why": WHY,
        },
        {
            "name": "trial start-up, slowest trial",
            "note": "max over the trials above: a sweep's first trial, where Train's state actor "
            "starts and the image cache is built",
            "size": "480 images",
            "seconds": max(startup),
            "range": (min(startup), max(startup)),
            "target_s": TARGET_MAX_S,
            "why": WHY,
        },
    ]
    for label, start, end in PHASES:
        spans = [m[end] - m[start] for m in marks if start in m and end in m]
        if spans:
            rows.append(
                {
                    "name": f"start-up phase: {label}",
                    "note": "median over trials",
                    "size": "-",
                    "seconds": statistics.median(spans),
                    "range": (min(spans), max(spans)),
                    "target_s": None,
                }
            )
    gaps = [gap for result in results for gap in result["gaps"]]
    if gaps:
        rows.append(
            {
                "name": "before the figures above: one trial's end to the next one's start",
                "note": "Tune's bookkeeping, the searcher, the next trial actor's process; "
                "median over consecutive trials",
                "size": "-",
                "seconds": statistics.median(gaps),
                "range": (min(gaps), max(gaps)),
                "target_s": None,
            }
        )
    data = [m["setup_done"] - m["task_ready"] for m in results[0]["marks"]]
    if len(data) >= 2:
        rows.append(
            {
                "name": "data ready, second trial (image cache mapped)",
                "note": "setup of trial 2 vs trial 1 (trial 1 decodes and builds the cache)",
                "size": "480 images",
                "seconds": data[1],
                "reference_s": data[0],
                "reference": f"first trial: {data[0]:.2f} s",
                "target_s": None,
            }
        )
    return rows


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))

"""Glow training step: time, images/s and peak memory at 64/128/256 px, with and without
gradient checkpointing (seed 001: flow models hit GPU-memory limits on large images).

Each configuration runs in a fresh subprocess (``python -m benchmarks.bench_glow --worker ...``)
so that its peak memory is its own: on CPU the process's max RSS (``getrusage``), reported with
its increase over the idle process (model initialised by a no-grad pass, batch allocated); on
CUDA ``torch.cuda.max_memory_allocated``. One warm-up step precedes the timed steps; each
figure is the median step with its range.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import row

CORES = 1
SIZES = (64, 128, 256)
BATCH, LEVELS, DEPTH, WIDTH = 4, 3, 8, 128
TIMED_STEPS = 3
ROOT = Path(__file__).resolve().parent.parent


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _worker(size: int, checkpointing: bool, device: str, steps: int) -> dict[str, Any]:
    """One configuration in this process: train steps on random 8-bit images."""
    import torch

    from tasks.anomaly.glow import Glow, bits_per_dim, preprocess

    if hasattr(os, "sched_getaffinity"):
        torch.set_num_threads(len(os.sched_getaffinity(0)))  # honour taskset
    torch.manual_seed(0)
    model = Glow(1, LEVELS, DEPTH, WIDTH, checkpointing=checkpointing).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.randint(0, 256, (BATCH, 1, size, size), dtype=torch.uint8, device=device)

    def step() -> float:
        start = time.perf_counter()
        y, const = preprocess(images)
        loss = bits_per_dim(model.log_prob(y) + const, size * size).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    with torch.no_grad():  # data-dependent ActNorm init, as before training; never checkpointed
        model(preprocess(images)[0])
    idle = _rss_mib()
    step()  # warm-up: allocator growth, lazy initialisation
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = [step() for _ in range(steps)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    gpu = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else float("nan")
    return {"times": times, "idle_mib": idle, "peak_mib": peak, "cuda_peak_mib": gpu}


def _measure(
    size: int, checkpointing: bool, device: str, steps: int, isolated: bool = True
) -> dict[str, Any]:
    if not isolated:  # quick mode: no process of its own (its peak RSS is then not its own)
        return _worker(size, checkpointing, device, steps)
    cmd = [sys.executable, "-m", "benchmarks.bench_glow", "--worker", str(size), device]
    cmd += ["--steps", str(steps)] + (["--checkpointing"] if checkpointing else [])
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _row(size: int, ckpt: bool, device: str, m: dict[str, Any]) -> dict[str, Any]:
    if device == "cuda":
        memory = f"peak CUDA memory {m['cuda_peak_mib']:.0f} MiB"
    else:
        memory = f"peak RSS {m['peak_mib']:.0f} MiB, +{m['peak_mib'] - m['idle_mib']:.0f} in step"
    rate = BATCH / sorted(m["times"])[len(m["times"]) // 2]
    return row(
        f"Glow train step {size} px, {'checkpointing' if ckpt else 'plain'} ({device})",
        m["times"],
        size=f"batch {BATCH}, 1 channel, levels {LEVELS}, depth {DEPTH}, width {WIDTH}",
        note=f"{rate:.1f} img/s; {memory}",
    )


def run(quick: bool = False, steps: int = TIMED_STEPS) -> list[dict[str, Any]]:
    """One row per (device, size, checkpointing); `quick`: 32 px, one timed step."""
    import torch

    sizes, steps = ((32,), 1) if quick else (SIZES, steps)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        for size in sizes:
            for ckpt in (False, True):
                m = _measure(size, ckpt, device, steps, isolated=not quick)
                rows.append(_row(size, ckpt, device, m))
    return rows


def main(argv: list[str] | None = None) -> int:
    """``--worker SIZE DEVICE [--checkpointing]``: measure one configuration, print JSON."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_glow")
    p.add_argument("--worker", nargs=2, metavar=("SIZE", "DEVICE"))
    p.add_argument("--checkpointing", action="store_true")
    p.add_argument("--steps", type=int, default=TIMED_STEPS)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(_worker(int(a.worker[0]), a.checkpointing, a.worker[1], a.steps)))
        return 0
    for figure in run():
        print(json.dumps(figure))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

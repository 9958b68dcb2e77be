"""Run every ``benchmarks/bench_*.py`` and rewrite BENCHMARKS.md with the measured numbers.

Usage: ``python -m benchmarks.run [--out BENCHMARKS.md]``. Pin it to one core
for numbers comparable with the targets: ``taskset -c 0 python -m benchmarks.run``; the number
of usable cores is recorded with the results.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import pkgutil
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("numpy", "pycocotools", "faster-coco-eval", "torch")


def discover() -> list[str]:
    """Module names of the benchmarks, sorted."""
    names = (m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]))
    return sorted(f"benchmarks.{n}" for n in names if n.startswith("bench_"))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """``nproc``, usable cores (CPU affinity, e.g. under taskset) and the CPU model."""
    nproc = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else nproc
    return f"nproc {nproc}, {usable} usable; {_cpu_model()}"


def versions() -> str:
    found = [f"Python {platform.python_version()}"]
    for name in PACKAGES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue  # optional comparisons (faster-coco-eval) are simply absent
    return ", ".join(found)


def _time(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds < 100 else f"{seconds:.0f} s"


def render(rows: list[dict[str, Any]], host: str, date: str, libs: str) -> str:
    head = [
        "# Benchmarks",
        "",
        "Written by `python -m benchmarks.run` (`make bench`); do not edit by hand. Reproduce with",
        "`taskset -c 0 .venv/bin/python -m benchmarks.run` (one core, as the targets assume).",
        "Ratio = time / target; below 1 meets the target.",
        "",
        "| benchmark | size | time | target | ratio to target | machine | date | versions |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines = []
    for r in rows:
        target = r["target_s"]
        ratio = f"{r['seconds'] / target:.2f}" if target else "-"
        lines.append(
            f"| {r['name']} ({r['note']}) | {r['size']} | {_time(r['seconds'])} | "
            f"{_time(target) if target else '-'} | {ratio} | {host} | {date} | {libs} |"
        )
    return "\n".join([*head, *lines, ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for name in discover():
        print(f"running {name} ...", file=sys.stderr, flush=True)
        for row in importlib.import_module(name).run():
            print(f"  {row['name']}: {_time(row['seconds'])}", file=sys.stderr, flush=True)
            rows.append(row)
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    args.out.write_text(render(rows, machine(), date, versions()))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

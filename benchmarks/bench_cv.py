"""One cross-validated trial (4 folds, test split) with its folds in parallel against the same
folds in sequence, on this machine's CPUs (2 here: two fold runs at a time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SWEEPS = True  # quick mode runs whole sweeps: `make bench ARGS="--quick"`, not `make test`
ROOT = Path(__file__).resolve().parent.parent


def _trial(parallel: str, epochs: int) -> float:
    import orchestrator
    from orchestrator.config import load

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MEDSWEEP_CACHE"] = str(Path(tmp) / "cache")
        config = load(
            ROOT / "configs" / "fundus_cv_demo.yaml",
            {
                "store.root": f"{tmp}/store",
                "train.epochs": epochs,
                "pseudo.rounds": 0,
                "cv.parallel": parallel,
                "sweep.num_samples": 1,
                "sweep.max_concurrent": 1,
            },
        )
        t0 = time.time()
        orchestrator.sweep(config, name="cv", quiet=True)
        return time.time() - t0


def _subprocess(parallel: str, epochs: int) -> float:
    code = f"from benchmarks.bench_cv import _trial; print(_trial({parallel!r}, {epochs}))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    return float(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> list[dict[str, Any]]:
    epochs = 1 if quick else 3
    sequence = _subprocess("never", epochs)
    parallel = _subprocess("auto", epochs)  # as many folds as fit at once
    return [
        {
            "name": "one CV trial, folds in parallel",
            "note": f"fundus CV demo, 4 folds x {epochs} epochs, test split, {os.cpu_count()} "
            f"CPUs; ratio to sequence {parallel / sequence:.2f}",
            "size": "480 images, 48 px",
            "seconds": parallel,
            "reference_s": sequence,
            "reference": f"folds in sequence: {sequence:.1f} s",
            "target_s": None,
        }
    ]


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))

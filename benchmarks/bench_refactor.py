"""The cost of the supervised-task template: per-epoch time of the fundus and detection demo
configs with the current code against the code before the template (commit BASE), measured side
by side in one run, without Ray (one process per version and task, alternating).

The old code is checked out into a temporary git worktree; each measurement runs in a fresh
subprocess with that version first on ``sys.path``. Epoch 1 is a warm-up (not counted).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import worktree

ROOT = Path(__file__).resolve().parent.parent
BASE = "95f1c1e"  # the last commit before the task template (issue 6)
EPOCHS = 4  # the first is a warm-up
CASES = {
    "fundus demo epoch": ("configs/fundus_demo.yaml", {"data.cache": True}),
    "detection demo epoch": ("configs/detection_demo.yaml", {}),
}

# Runs in the subprocess: setup, then timed epochs (train + evaluate), as the loop runs them.
_SCRIPT = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import torch
torch.manual_seed(0)
from orchestrator.config import load
from orchestrator.registry import get_task
from tasks.base import RunContext
cfg = load(sys.argv[2], json.loads(sys.argv[3]))
task = get_task(cfg.experiment.task)(cfg.task)
task.check_data()
task.setup(RunContext(run_id="bench", seed=0))
times = []
for epoch in range(1, int(sys.argv[4]) + 1):
    t0 = time.perf_counter()
    task.train_epoch(epoch)
    task.evaluate(epoch)
    times.append(time.perf_counter() - t0)
import orchestrator
assert orchestrator.__file__.startswith(sys.argv[1]), orchestrator.__file__  # the right version
print(json.dumps(times[1:]))
"""


def _epochs(code: Path, config: str, overrides: dict[str, Any]) -> list[float]:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _SCRIPT,
            str(code),
            str(code / config),
            json.dumps(overrides),
            str(EPOCHS),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def run() -> list[dict[str, Any]]:
    rows = []
    with worktree(BASE) as old:
        for name, (config, overrides) in CASES.items():
            before = _epochs(old, config, overrides)
            after = _epochs(ROOT, config, overrides)
            rows.append(
                {
                    "name": name,
                    "note": f"template vs {BASE}, {len(after)} epochs after a warm-up",
                    "size": config,
                    "seconds": statistics.median(after),
                    "range": (min(after), max(after)),
                    "reference_s": statistics.median(before),
                    "reference": f"{BASE}: {statistics.median(before):.2f} s "
                    f"({min(before):.2f}-{max(before):.2f})",
                    "target_s": None,
                }
            )
    return rows

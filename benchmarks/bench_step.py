"""Training-step overhead: an epoch of training inside a medsweep trial (one Ray Train worker,
the supervised template, AMP off on CPU) against a plain PyTorch loop with the same model, data
and batch size in a plain process. Target: ratio <= 1.03. Epoch 1 is a warm-up."""

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

SWEEPS = True  # quick mode runs whole sweeps: `make bench ARGS="--quick"`, not `make test`
ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 1.03
OVERRIDES = {
    "train.scheduler": "none",
    "data.image_size": 64,
    "model.backbone": "resnet10t",
    "train.lr": 1e-3,
    "train.label_smoothing": 0.0,
}


def _medsweep(epochs: int) -> list[float]:
    import orchestrator
    from orchestrator.config import load
    from orchestrator.results import ResultsStore

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MEDSWEEP_CACHE"] = str(Path(tmp) / "cache")
        config = load(
            ROOT / "configs" / "fundus_demo.yaml",
            {**OVERRIDES, "train.epochs": epochs, "store.root": f"{tmp}/store"},
        )
        orchestrator.run(config, name="step", quiet=True)
        m = ResultsStore(f"{tmp}/store").metrics("step")
        times = m[(m["split"] == "train") & (m["name"] == "time_s")].sort_values("epoch")
        return [float(v) for v in times["value"].tolist()[1:]]


def _plain(epochs: int) -> list[float]:
    """The same epoch written as a bare loop: timm model, DataLoader, AdamW, BCE."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from orchestrator.config import load
    from tasks.fundus.task import FundusTask

    torch.manual_seed(0)
    config = load(ROOT / "configs" / "fundus_demo.yaml", OVERRIDES)
    task = FundusTask(config.task)  # only for its dataset: identical tensors and augmentation
    frame = task.default_frames()["train"]
    loader = DataLoader(
        task.dataset(frame, train=True),
        batch_size=config.task.train.batch_size,
        shuffle=True,
        drop_last=True,
    )
    model = task.build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    times = []
    for _ in range(epochs):
        model.train()
        t0 = time.perf_counter()
        for x, y, _ in loader:
            loss = F.binary_cross_entropy_with_logits(model(x).squeeze(1), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return times[1:]


def _subprocess(fn: str, epochs: int) -> list[float]:
    code = f"import json; from benchmarks.bench_step import {fn}; print(json.dumps({fn}({epochs})))"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one core each, as a Ray worker gets
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
        env=env,
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def run(quick: bool = False) -> list[dict[str, Any]]:
    epochs = 2 if quick else 5
    plain, inside = _subprocess("_plain", epochs), _subprocess("_medsweep", epochs)
    ratio = statistics.median(inside) / statistics.median(plain)
    return [
        {
            "name": "training epoch inside a medsweep trial",
            "note": f"fundus demo, 64 px, resnet10t, {len(inside)} epochs after a warm-up; "
            f"ratio {ratio:.3f} (target {TARGET_RATIO})",
            "size": "~250 training images, batch 32",
            "seconds": statistics.median(inside),
            "range": (min(inside), max(inside)),
            "reference_s": statistics.median(plain),
            "reference": f"plain PyTorch loop {statistics.median(plain):.2f} s "
            f"({min(plain):.2f}-{max(plain):.2f})",
            "target_s": None,
        }
    ]


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))

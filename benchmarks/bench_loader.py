"""Loader: images/s of the fundus training loader (as the supervised template builds it) against
a bare loop over the same files with the same transform, and its scaling with loader workers.

Synthetic fundus photographs. Two paths: the preprocessing cache (decoded once, memory-mapped;
the default) and decoding every image per use (``data.cache: false``), where the work per image
is heavy enough for worker processes to pay off. The bare loop does the same work by hand: the
same rows in a shuffled order, the same decode or cache row, the same transform, stacked into
the same batches, with no Dataset, DataLoader or template. Epoch 1 warms up (not counted).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import row, usable_cores

IMAGES, SIZE, INPUT, BATCH, EPOCHS = 512, 128, 96, 32, 5
SCALE_PX = 384  # images of the worker-scaling figures
PASSES = 4  # epochs per timed turn of the loader-vs-bare figures, at least ...
TURN_S = 1.0  # ... and at least this long (a cached epoch takes tens of ms: timer and GC noise)
TARGET_RATIO = 0.95


def _task(csv: Path, cache: bool, workers: int, input_px: int, batch: int) -> Any:
    import torch

    from tasks.base import RunContext
    from tasks.fundus.task import FundusTask

    cfg = FundusTask.tiny_config(csv)
    cfg["data"].update(image_size=input_px, cache=cache, cache_dir=str(csv.parent / ".cache"))
    cfg["train"].update(batch_size=batch, loader_workers=workers)
    task = FundusTask(FundusTask.config_model.model_validate(cfg))
    task.check_data()
    torch.manual_seed(0)
    task.setup(RunContext(run_id="bench", seed=0))
    return task


def _rate(epoch: Callable[[], int], epochs: int) -> list[float]:
    """Images/s of each epoch after the first (warm-up: worker start, page cache)."""
    epoch()
    rates = []
    for _ in range(epochs - 1):
        start = time.perf_counter()
        n = epoch()
        rates.append(n / (time.perf_counter() - start))
    return rates


def _paired(
    a: Callable[[], int],
    b: Callable[[], int],
    epochs: int,
    passes: int = PASSES,
    turn_s: float = TURN_S,
) -> list[tuple[float, float]]:
    """Images/s of `a` and `b` in alternating turns of at least `passes` epochs and `turn_s` each
    (a shared machine's load drifts; a pair sees the same load), after one warm-up epoch of
    each."""
    a(), b()
    pairs = []
    for i in range(epochs - 1):
        first, second = (a, b) if i % 2 == 0 else (b, a)
        got = {}
        for fn in (first, second):
            start, n, turns = time.perf_counter(), 0, 0
            while turns < passes or time.perf_counter() - start < turn_s:
                n, turns = n + fn(), turns + 1
            got[fn] = n / (time.perf_counter() - start)
        pairs.append((got[a], got[b]))
    return pairs


def _loader_epoch(task: Any) -> int:
    return _drain(task.train_loader)


def _drain(loader: Iterable[Any]) -> int:
    n = 0
    for x, _, _ in loader:
        n += len(x)
    return n


def _bare(task: Any, cache: bool) -> Callable[[], int]:
    """One epoch of the hand-written loop over the train split's files."""
    import torch

    from tasks.fundus.data import build_transform, read_fundus

    frame, cfg = task.frames["train"], task.config
    paths = frame["path"].astype(str).tolist()
    labels = torch.tensor(frame["label"].to_numpy(dtype=np.float32))
    transform = build_transform(cfg.augment, train=True)
    images = task.train_loader.dataset.images
    rows = [images._rows[p] for p in paths] if cache else []
    array = images.entry.open() if cache else None
    batch, keep = cfg.train.batch_size, len(paths) - len(paths) % cfg.train.batch_size
    rng = np.random.default_rng(0)

    def load(i: int) -> np.ndarray:
        if array is not None:
            return np.array(array[rows[i]])
        return read_fundus(paths[i], cfg.data)

    def epoch() -> int:
        order = rng.permutation(len(paths))[:keep]  # drop_last, as the template
        n = 0
        for start in range(0, keep, batch):
            idx = order[start : start + batch]
            x = torch.stack([transform(torch.from_numpy(load(int(i)))) for i in idx])
            y = labels[idx]
            n += len(x) if len(y) == len(x) else 0
        return n

    return epoch


def _measure(csv: Path, cache: bool, workers: int, sizes: dict[str, int]) -> list[float]:
    task = _task(csv, cache, workers, sizes["input"], sizes["batch"])
    return _rate(partial(_loader_epoch, task), sizes["epochs"])


def run(
    quick: bool = False,
    images: int = IMAGES,
    size: int = SIZE,
    input_px: int = INPUT,
    epochs: int = EPOCHS,
    scale_px: int = SCALE_PX,
) -> list[dict[str, Any]]:
    """Loader against bare loop (cached and decoding), and scaling with workers on larger
    images (decoding enough work per image for worker processes to pay off)."""
    import torch

    if quick:
        images, size, input_px, epochs, scale_px = 48, 48, 32, 2, 48
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a Ray Train worker with one CPU (OMP_NUM_THREADS=1)
    try:
        return _figures(images, size, input_px, epochs, scale_px, quick)
    finally:
        torch.set_num_threads(threads)


def _figures(
    images: int, size: int, input_px: int, epochs: int, scale_px: int, quick: bool
) -> list[dict[str, Any]]:
    from tasks.fundus.synth import generate

    sizes = {"input": input_px, "batch": BATCH if not quick else 8, "epochs": epochs}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        csv = generate(Path(tmp) / "fundus", n=images, size=size, seed=0)
        what = f"{images} images {size} px -> {input_px} px, batch {sizes['batch']}"
        for cache in (True, False):
            task = _task(csv, cache, 0, input_px, sizes["batch"])
            turn_s = 0.0 if quick else TURN_S
            pairs = _paired(partial(_loader_epoch, task), _bare(task, cache), epochs, turn_s=turn_s)
            ours, bare = [p[0] for p in pairs], [p[1] for p in pairs]
            path = "preprocessing cache (memory-mapped)" if cache else "decoding every image"
            rows.append(
                row(
                    f"train loader vs bare loop, {path}",
                    [o / b for o, b in zip(ours, bare, strict=True)],
                    size=what,
                    unit="×",
                    target=TARGET_RATIO,
                    better="higher",
                    reference=[1.0],
                    reference_name=f"bare loop {np.median(bare):,.0f} img/s",
                    note=f"loader {np.median(ours):,.0f} img/s, 0 workers",
                    why="the DataLoader's per-item calls and default collate cost more than the "
                    "work per image when images come from the cache",
                )
            )
        big = generate(Path(tmp) / "big", n=images // 2, size=scale_px, seed=0)
        scaled = {**sizes, "input": min(224, scale_px)}
        what = f"{images // 2} images {scale_px} px -> {scaled['input']} px, batch {sizes['batch']}"
        rows += _scaling(big, what, scaled)
    return rows


def _scaling(csv: Path, what: str, sizes: dict[str, int]) -> list[dict[str, Any]]:
    """Images/s with 0, 1, ... usable-core loader workers, decoding every image."""
    counts = sorted({0, 1, usable_cores()})
    rates = {w: _measure(csv, False, w, sizes) for w in counts}
    base = float(np.median(rates[0]))
    top = counts[-1]
    out = []
    for w in counts[1:]:
        out.append(
            row(
                f"loader images/s with {w} worker(s) over 0 workers, decoding",
                [r / base for r in rates[w]],
                size=what,
                unit="×",
                target=1.5 if w == top and top >= 2 else None,
                better="higher",
                reference=[1.0],
                reference_name=f"0 workers {base:,.0f} img/s",
                note=f"{np.median(rates[w]):,.0f} img/s; {usable_cores()} usable cores",
                why="the training process itself takes a core (collating, feeding the workers), "
                "and on a shared machine the cores are not free",
            )
        )
    return out

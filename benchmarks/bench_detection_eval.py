"""Lesion-level and COCO evaluation on a validation set the size of seed 000's (8,391 images).

Synthetic, seeded: 1-3 ground-truth boxes per image in 4 classes, 100 predictions per image —
a fifth jittered copies of the ground truth (mostly the right class, higher scores), the rest
random boxes (lower scores) — as lists of dicts, the form `load_detections` returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from tasks.common.detection_metrics import coco_metrics, lesion_metrics

N_IMAGES, PER_IMAGE, SIZE = 8391, 100, 512
CLASSES = ("cyst", "HCC", "hemangioma", "Meta")
LESION_TARGET_S = 2.0  # the budget for one core, all 21 thresholds


def _gt_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    wh = rng.uniform(20, 200, size=(n, 2))
    xy = rng.uniform(0, 1, size=(n, 2)) * (SIZE - wh)
    return np.hstack([xy, wh])


def synthetic_set(seed: int = 0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(gt, dets)`` in COCO / COCO-results form."""
    rng = np.random.default_rng(seed)
    images = [
        {"id": i + 1, "file_name": f"{i + 1}.png", "width": SIZE, "height": SIZE}
        for i in range(N_IMAGES)
    ]
    anns: list[dict[str, Any]] = []
    dets: list[dict[str, Any]] = []
    for img in images:
        boxes = _gt_boxes(rng, int(rng.integers(1, 4)))
        cls = rng.integers(1, len(CLASSES) + 1, size=len(boxes))
        for box, c in zip(boxes.tolist(), cls.tolist(), strict=True):
            anns.append({"id": len(anns) + 1, "image_id": img["id"], "category_id": c, "bbox": box})
        n_hit = PER_IMAGE // 5
        src = rng.integers(0, len(boxes), size=n_hit)
        scale = np.tile(boxes[src, 2:], 2)  # jitter relative to the box size: [w, h, w, h]
        hit = boxes[src] + rng.normal(0, 0.1, size=(n_hit, 4)) * scale
        hit[:, 2:] = np.maximum(hit[:, 2:], 1.0)
        hit_cls = np.where(rng.random(n_hit) < 0.7, cls[src], rng.integers(1, 5, size=n_hit))
        rand = _gt_boxes(rng, PER_IMAGE - n_hit)
        rand_cls = rng.integers(1, len(CLASSES) + 1, size=len(rand))
        score = np.concatenate([rng.beta(5, 2, n_hit), rng.beta(1, 5, len(rand))])
        for box, c, s in zip(
            np.vstack([hit, rand]).tolist(),
            np.concatenate([hit_cls, rand_cls]).tolist(),
            score.tolist(),
            strict=True,
        ):
            dets.append({"image_id": img["id"], "category_id": c, "bbox": box, "score": s})
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]
    return {"images": images, "annotations": anns, "categories": cats}, dets


def _best_of(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run() -> list[dict[str, Any]]:
    """One row per measurement: name, size, seconds, target_s (None = no target), note."""
    gt, dets = synthetic_set()
    size = f"{N_IMAGES:,} images, {len(gt['annotations']):,} GT boxes, {len(dets):,} predictions"
    lesion = _best_of(lambda: lesion_metrics(gt, dets), repeat=3)
    coco = _best_of(lambda: coco_metrics(gt, dets), repeat=1)
    return [
        {
            "name": "lesion_metrics (IoU 0.25, 21 thresholds)",
            "size": size,
            "seconds": lesion,
            "target_s": LESION_TARGET_S,
            "note": "best of 3",
        },
        {
            "name": "coco_metrics (pycocotools COCOeval bbox + per class)",
            "size": size,
            "seconds": coco,
            "target_s": None,
            "note": "1 run",
        },
    ]

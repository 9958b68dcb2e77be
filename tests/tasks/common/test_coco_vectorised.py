"""The vectorised detection checks give exactly what checking entry by entry gives: the same
detections, the same skip notes in the same order, the same first error."""

from __future__ import annotations

import random
from typing import Any

import pytest

from orchestrator.errors import DataError
from tasks.common import coco

GT: dict[str, Any] = {
    "images": [{"id": i, "file_name": f"{i}.png", "width": 64, "height": 64} for i in (1, 2, 5)],
    "annotations": [],
    "categories": [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}],
}

BAD: list[tuple[str, Any]] = [
    ("image_id", 4),
    ("image_id", True),
    ("image_id", 2.0),
    ("image_id", 2**70),
    ("category_id", None),
    ("category_id", "1"),
    ("bbox", [1, 2, 3]),
    ("bbox", (1, 2, 3, 4)),
    ("bbox", [1, 2, True, 4]),
    ("bbox", [1, 2, float("nan"), 4]),
    ("bbox", [1, 2, 0, 4]),
    ("bbox", [1e400, 2, 3, 4]),
    ("bbox", "1234"),
    ("score", 1.0000001),
    ("score", -0.0001),
    ("score", float("inf")),
    ("score", False),
    ("score", None),
]


def reference(raw: list[Any], skip: bool) -> tuple[list[dict[str, Any]], list[str]]:
    """The per-entry path the vectorised one replaces."""
    image_ids = {img["id"] for img in GT["images"]}
    cat_ids = {c["id"] for c in GT["categories"]}
    skipper = coco._Skipper(None, skip)
    dets = coco._valid_entries(
        raw, "detections", skipper, lambda d: coco._check_detection(d, image_ids, cat_ids)
    )
    return dets, skipper.report({"detections": len(raw)})


def detections(seed: int, n: int = 400) -> list[Any]:
    rng = random.Random(seed)
    out: list[Any] = []
    for _ in range(n):
        det: Any = {
            "image_id": rng.choice([1, 2, 5]),
            "category_id": rng.choice([1, 3]),
            "bbox": [rng.uniform(0, 50), rng.randint(0, 50), rng.uniform(1, 9), rng.randint(1, 9)],
            "score": rng.choice([rng.random(), 0, 1]),
        }
        roll = rng.random()
        if roll < 0.15:
            key, value = rng.choice(BAD)
            det[key] = value
        elif roll < 0.18:
            del det[rng.choice(list(det))]
        elif roll < 0.20:
            det = rng.choice([[1, 2], None, "det"])
        elif roll < 0.22:
            det["extra"] = "ignored"
        out.append(det)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_checks_equal_entry_by_entry(seed: int) -> None:
    raw = detections(seed)
    assert coco.load_detections(raw, GT, skip_invalid=True) == reference(raw, skip=True)
    with pytest.raises(DataError) as fast:
        coco.load_detections(raw, GT)
    with pytest.raises(DataError) as slow:
        reference(raw, skip=False)
    assert str(fast.value) == str(slow.value)


def test_all_valid_detections_take_the_fast_path() -> None:
    raw = [d for d in detections(7, 2000) if d in reference([d], skip=True)[0]]
    assert len(raw) > 1000
    dets, notes = coco.load_detections(raw, GT)
    assert notes == [] and dets == reference(raw, skip=False)[0]
    assert all(type(v) is float for d in dets for v in [*d["bbox"], d["score"]])

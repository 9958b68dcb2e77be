"""Detections as columns: they read as the list of dicts they replace, and the metrics of
`eval detection` on them are exactly those of the one-by-one path's dicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.common import coco
from tasks.common import detection_metrics as dm
from tasks.common.coco_columns import Detections

DETS = [
    {"image_id": 3, "category_id": 1, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5},
    {"image_id": 1, "category_id": 2, "bbox": [0.5, 0.0, 8.0, 9.5], "score": 1.0},
    {"image_id": 2, "category_id": 1, "bbox": [4.0, 4.0, 1.0, 1.0], "score": 0.0},
]


def test_reads_as_the_list_of_dicts() -> None:
    dets = Detections.from_dicts(DETS)
    assert len(dets) == 3 and dets == DETS and list(dets) == DETS
    assert DETS == dets  # noqa: SIM300  (a list on the left: the reflected comparison)
    assert dets[1] == DETS[1] and dets[-1] == DETS[-1] and dets[1:] == DETS[1:]
    assert dets != DETS[:2] and dets != [*DETS[:2], {**DETS[2], "score": 0.1}]
    assert dets != tuple(DETS) and repr(dets) == "Detections(3 detections)"
    assert all(type(v) is int for d in dets for v in (d["image_id"], d["category_id"]))
    assert all(type(v) is float for d in dets for v in [*d["bbox"], d["score"]])
    with pytest.raises(IndexError):
        dets[3]
    with pytest.raises(TypeError):
        hash(dets)


def test_columns_are_read_only_and_items_fresh() -> None:
    dets = Detections.from_dicts(DETS)
    with pytest.raises(ValueError, match="read-only"):
        dets.bbox[0, 0] = 9.0
    dets[0]["bbox"][0] = 9.0
    assert dets[0]["bbox"][0] == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        Detections(dets.image_id, dets.category_id, dets.bbox, dets.score[:2])
    empty = Detections.from_dicts([])
    assert len(empty) == 0 and empty == [] and not empty and empty.bbox.shape == (0, 4)


def corrupted(dets: list[dict[str, Any]]) -> list[Any]:
    """`dets` with invalid entries in between (and one NaN, which only the standard library
    reads)."""
    out: list[Any] = list(dets)
    out.insert(3, {**dets[0], "score": 1.5})
    out.insert(10, {**dets[1], "image_id": 999})
    out.insert(20, {**dets[2], "bbox": [1, 2, 0, 4]})
    out.insert(30, {**dets[3], "score": float("nan")})
    out.insert(40, [1, 2])
    return out


@pytest.fixture
def agreement(tmp_path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    gt, dets = dm.agreement_set(seed=4)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return coco.load_coco_gt(path)[0], dets


@pytest.mark.parametrize("invalid", [False, True])
def test_metrics_equal_the_one_by_one_path(
    tmp_path: Path, agreement: tuple[dict[str, Any], list[dict[str, Any]]], invalid: bool
) -> None:
    gt, dets = agreement
    raw = corrupted(dets) if invalid else dets
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(raw))
    columns, notes = coco.load_detections(path, gt, skip_invalid=True)
    assert isinstance(columns, Detections) and len(notes) == (6 if invalid else 0)
    image_ids = {img["id"] for img in gt["images"]}
    cat_ids = {c["id"] for c in gt["categories"]}
    skipper = coco._Skipper(path, True)
    one_by_one = coco._valid_entries(
        json.loads(path.read_text()),
        "detections",
        skipper,
        lambda d: coco._check_detection(d, image_ids, cat_ids),
    )
    assert columns == one_by_one and len(one_by_one) == len(dets)
    for backend in (dm.PYCOCOTOOLS, dm.FASTER):
        assert dm.coco_metrics(gt, columns, backend=backend) == dm.coco_metrics(
            gt, one_by_one, backend=backend
        )
    for kw in ({}, {"iou": 0.5, "threshold": 0.3}):
        assert dm.lesion_metrics(gt, columns, **kw) == dm.lesion_metrics(gt, one_by_one, **kw)


def test_metrics_leave_the_columns_unchanged(
    agreement: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    gt, dets = agreement
    columns = Detections.from_dicts(dets)
    before = [np.array(getattr(columns, k)) for k in ("image_id", "category_id", "bbox", "score")]
    dm.coco_metrics(gt, columns, backend=dm.PYCOCOTOOLS)
    dm.lesion_metrics(gt, columns)
    after = [columns.image_id, columns.category_id, columns.bbox, columns.score]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))

"""`eval_detection` / `render_detection`: the functions behind `medsweep eval detection`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from orchestrator.errors import DataError, UserError
from orchestrator.evaluate import eval_detection, render_detection
from tasks.common.detection_metrics import coco_metrics, lesion_metrics

GT: dict[str, Any] = {
    "images": [
        {"id": 1, "file_name": "1.png", "width": 200, "height": 200},
        {"id": 2, "file_name": "2.png", "width": 200, "height": 200},
    ],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50]},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [100, 100, 60, 60]},
        {"id": 3, "image_id": 2, "category_id": 2, "bbox": [20, 20, 40, 40]},
    ],
    "categories": [{"id": 1, "name": "cyst"}, {"id": 2, "name": "HCC"}],
}
DETS = [
    {"image_id": 1, "category_id": 1, "bbox": [12, 11, 48, 50], "score": 0.9},
    {"image_id": 1, "category_id": 1, "bbox": [102, 98, 60, 60], "score": 0.6},  # HCC as cyst
    {"image_id": 2, "category_id": 2, "bbox": [150, 150, 20, 20], "score": 0.7},  # over
]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    gt, pred = tmp_path / "gt.json", tmp_path / "pred.json"
    gt.write_text(json.dumps(GT))
    pred.write_text(json.dumps(DETS))
    return gt, pred


def test_result_combines_coco_and_lesion_metrics(files: tuple[Path, Path]) -> None:
    result = eval_detection(*files)
    assert json.loads(json.dumps(result)) == result  # what --json prints
    assert result["skipped"] == []
    expected_gt = {**GT, "annotations": [a | {"area": a["bbox"][2] * a["bbox"][3], "iscrowd": 0}
                                         for a in GT["annotations"]]}  # fmt: skip
    assert result["coco"] == coco_metrics(expected_gt, DETS)
    assert result["lesion"] == lesion_metrics(expected_gt, DETS)
    # 0.65 drops the HCC lesion read as cyst (macro F1 0.5 instead of 1/3 at 0.00-0.60)
    assert (result["lesion"]["iou"], result["lesion"]["threshold"]) == (0.25, 0.65)
    assert result["lesion"]["confusion"] == [[1, 0, 0], [0, 0, 2], [0, 1, 0]]
    assert set(result["coco"]) == {"mAP", "AP50", "AP75", "APs", "APm", "APl", "per_class"}


def test_iou_and_threshold_are_passed_on(files: tuple[Path, Path]) -> None:
    result = eval_detection(*files, iou=0.25, threshold=0.0)["lesion"]
    assert result["confusion"] == [[1, 0, 0], [1, 0, 1], [0, 1, 0]]
    result = eval_detection(*files, iou=0.9, threshold=0.5)["lesion"]  # IoU 0.92 and 0.88
    assert (result["iou"], result["threshold"]) == (0.9, 0.5)
    assert result["confusion"] == [[1, 0, 0], [0, 0, 2], [1, 1, 0]]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"iou": 0.0}, "--iou must be within \\(0, 1\\], got 0.0"),
        ({"iou": 1.5}, "--iou"),
        ({"iou": float("nan")}, "--iou"),
        ({"threshold": -0.1}, "--threshold must be within \\[0, 1\\]"),
        ({"threshold": float("inf")}, "--threshold"),
    ],
)
def test_bad_arguments_are_user_errors(
    files: tuple[Path, Path], kw: dict[str, Any], message: str
) -> None:
    with pytest.raises(UserError, match=message):
        eval_detection(*files, **kw)


def test_invalid_detection_fails_or_is_skipped_with_a_note(files: tuple[Path, Path]) -> None:
    gt, pred = files
    pred.write_text(json.dumps([*DETS, {**DETS[0], "image_id": 7}]))
    with pytest.raises(DataError, match=r"pred.json, detections\[3\]: image_id 7"):
        eval_detection(gt, pred)
    result = eval_detection(gt, pred, skip_invalid=True)
    assert result["skipped"][0] == "pred.json: skipped 1 of 4 detections as invalid"
    assert result["lesion"]["confusion"] == [[1, 0, 0], [0, 0, 2], [0, 1, 0]]  # as without it


def test_missing_ground_truth_is_a_data_error(tmp_path: Path, files: tuple[Path, Path]) -> None:
    with pytest.raises(DataError, match="ground-truth file does not exist"):
        eval_detection(tmp_path / "nope.json", files[1])


def test_render_prints_the_three_tables(files: tuple[Path, Path]) -> None:
    gt, pred = files
    pred.write_text(json.dumps([*DETS, {**DETS[0], "score": 2}]))
    console = Console(record=True, width=140)
    render_detection(eval_detection(gt, pred, skip_invalid=True), console)
    text = console.export_text()
    for expected in (
        "detections[3]: score 2 is not", "COCO box AP", "mAP", "n/a",  # no small boxes -> APs n/a
        "Lesion confusion matrix (IoU >= 0.25, score >= 0.65)", "Label \\ Preds",
        "over-detected", "missed", "macro", "micro", "0.5000",
    ):  # fmt: skip
        assert expected in text, expected
    assert re.search(r"│ None +│ +0 │ +1 │ +0 │", text)  # over-detections row

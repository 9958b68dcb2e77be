"""COCO ground truth and detections: every invalid input named by file and entry, or skipped."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import DataError
from tasks.common.coco import MAX_NOTES, load_coco_gt, load_detections


def coco() -> dict[str, Any]:
    return {
        "info": {"description": "test"},
        "images": [
            {"id": 1, "file_name": "a.png", "width": 100, "height": 80, "age": 61, "sex": "F"},
            {"id": 2, "file_name": "b.png", "width": 100, "height": 80, "patient_id": "p7"},
            {"id": 3, "file_name": "c.png", "width": 100, "height": 80},  # a negative
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},
            {"id": 11, "image_id": 2, "category_id": 2, "bbox": [0, 0, 100, 80], "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "cyst"}, {"id": 2, "name": "HCC"}],
    }


def write(tmp_path: Path, data: Any, name: str = "gt.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def gt_error(tmp_path: Path, data: Any, **kw: Any) -> str:
    with pytest.raises(DataError) as info:
        load_coco_gt(write(tmp_path, data), **kw)
    message = str(info.value)
    assert str(tmp_path / "gt.json") in message
    return message


def test_valid_file_passes_through(tmp_path: Path) -> None:
    gt, notes = load_coco_gt(write(tmp_path, coco()))
    assert notes == []
    assert [im["id"] for im in gt["images"]] == [1, 2, 3]  # negatives kept
    assert gt["images"][0]["age"] == 61 and gt["images"][1]["patient_id"] == "p7"
    assert gt["info"] == {"description": "test"}
    assert gt["annotations"][0]["area"] == 400 and gt["annotations"][0]["iscrowd"] == 0


def test_not_json_and_missing_keys(tmp_path: Path) -> None:
    assert "not valid JSON" in gt_error(tmp_path, '{"images": [}')
    assert "line 1" in gt_error(tmp_path, '{"images": [}')
    data = coco()
    del data["categories"]
    assert "'categories'" in gt_error(tmp_path, data)
    assert "expected a COCO object" in gt_error(tmp_path, "[1, 2]")
    with pytest.raises(DataError, match="does not exist"):
        load_coco_gt(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("key", "where"),
    [
        ("images", "images[1] (id 1): duplicate id 1 (first used by images[0])"),
        ("annotations", "annotations[1] (id 10): duplicate id 10"),
        ("categories", "categories[1] (id 1): duplicate id 1"),
    ],
)
def test_duplicate_ids_are_never_skippable(tmp_path: Path, key: str, where: str) -> None:
    data = coco()
    data[key][1]["id"] = data[key][0]["id"]
    assert where in gt_error(tmp_path, data, skip_invalid=True)


def test_duplicate_category_names(tmp_path: Path) -> None:
    data = coco()
    data["categories"][1]["name"] = "cyst"
    assert "duplicate category name 'cyst'" in gt_error(tmp_path, data)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image_id": 9}, "image_id 9 is not a (valid) image"),
        ({"image_id": True}, "image_id True is not"),
        ({"category_id": 4}, "category_id 4 is not a category"),
        ({"bbox": [1, 2, 3]}, "is not 4 finite numbers"),
        ({"bbox": [1, 2, "3", 4]}, "is not 4 finite numbers"),
        ({"bbox": [1, 2, 0, 4]}, "zero or negative width/height"),
        ({"bbox": [1, 2, 5, -4]}, "zero or negative width/height"),
        ({"bbox": [90, 10, 11.5, 10]}, "lies outside the 100x80 image"),
        ({"bbox": [-1.5, 10, 5, 10]}, "lies outside"),
    ],
)
def test_invalid_annotation_named_or_skipped(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    data = coco()
    data["annotations"][1].update(change)
    error = gt_error(tmp_path, data)
    assert "annotations[1] (id 11)" in error and message in error
    gt, notes = load_coco_gt(write(tmp_path, data), skip_invalid=True)
    assert [a["id"] for a in gt["annotations"]] == [10]
    assert notes[0] == "gt.json: skipped 1 of 2 annotations as invalid"
    assert notes[1].startswith("annotations[1] (id 11): ") and message in notes[1]


def test_box_may_reach_one_pixel_beyond_the_image(tmp_path: Path) -> None:
    data = coco()
    data["annotations"][1]["bbox"] = [-1.0, -1.0, 102.0, 82.0]
    gt, _ = load_coco_gt(write(tmp_path, data))
    assert len(gt["annotations"]) == 2


def test_invalid_image_is_skipped_with_its_annotations(tmp_path: Path) -> None:
    data = coco()
    data["images"][0]["width"] = 0
    assert "images[0] (id 1): 'width' 0 is not a positive number" in gt_error(tmp_path, data)
    gt, notes = load_coco_gt(write(tmp_path, data), skip_invalid=True)
    assert [im["id"] for im in gt["images"]] == [2, 3]
    assert [a["id"] for a in gt["annotations"]] == [11]
    assert notes[0] == "gt.json: skipped 1 of 3 images, 1 of 2 annotations as invalid"


def test_notes_are_capped_but_counted(tmp_path: Path) -> None:
    data = coco()
    bad = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 0, 0]}
    data["annotations"] += [{"id": 100 + i, **bad} for i in range(MAX_NOTES + 5)]
    _, notes = load_coco_gt(write(tmp_path, data), skip_invalid=True)
    assert notes[0] == f"gt.json: skipped {MAX_NOTES + 5} of {MAX_NOTES + 7} annotations as invalid"
    assert len(notes) == MAX_NOTES + 2 and notes[-1] == "... and 5 more"


def test_check_files(tmp_path: Path) -> None:
    path = write(tmp_path, coco())
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(b"")
    error = gt_error(tmp_path, coco(), check_files=True)
    assert "images[2] (id 3): image file 'c.png' not found under" in error
    gt, notes = load_coco_gt(path, check_files=True, skip_invalid=True)
    assert [im["id"] for im in gt["images"]] == [1, 2] and len(notes) == 2
    other = tmp_path / "imgs"
    other.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        (other / name).write_bytes(b"")
    assert load_coco_gt(path, image_root=other, check_files=True)[1] == []
    assert load_coco_gt(path)[1] == []  # files are only checked on request


def test_an_empty_split_is_valid(tmp_path: Path) -> None:
    data: dict[str, Any] = {"images": [], "annotations": [], "categories": []}
    assert load_coco_gt(write(tmp_path, data)) == (data, [])


# ---------------------------------------------------------------- detections


@pytest.fixture
def gt(tmp_path: Path) -> dict[str, Any]:
    return load_coco_gt(write(tmp_path, coco()))[0]


def det(**change: Any) -> dict[str, Any]:
    return {"image_id": 3, "category_id": 2, "bbox": [1, 2, 3, 4], "score": 0.5} | change


def test_detections_are_normalised(tmp_path: Path, gt: dict[str, Any]) -> None:
    raw = [det(extra="x"), det(score=1)]
    path = write(tmp_path, raw, "dets.json")
    dets, notes = load_detections(path, gt)
    assert notes == [] and dets == load_detections(raw, gt)[0]
    assert dets[0] == {"image_id": 3, "category_id": 2, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5}
    assert isinstance(dets[1]["score"], float) and load_detections([], gt) == ([], [])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image_id": 4}, "image_id 4 is not an image of the ground truth"),
        ({"category_id": 3}, "category_id 3 is not a category of the ground truth"),
        ({"bbox": [1, 2, 3]}, "is not 4 finite numbers"),
        ({"bbox": [1, 2, float("inf"), 3]}, "is not 4 finite numbers"),
        ({"bbox": [1, 2, -3, 4]}, "zero or negative width/height"),
        ({"score": float("nan")}, "score nan is not a finite number within [0, 1]"),
        ({"score": 1.5}, "score 1.5 is not"),
        ({"score": "0.5"}, "score '0.5' is not"),
        ({"score": None}, "score None is not"),
    ],
)
def test_invalid_detection_named_or_skipped(
    tmp_path: Path, gt: dict[str, Any], change: dict[str, Any], message: str
) -> None:
    path = tmp_path / "dets.json"
    path.write_text(json.dumps([det(), det(**change)]))  # json writes NaN/Infinity, as numpy does
    with pytest.raises(DataError) as info:
        load_detections(path, gt)
    assert str(info.value).startswith(f"{path}, detections[1]: ") and message in str(info.value)
    dets, notes = load_detections(path, gt, skip_invalid=True)
    assert len(dets) == 1
    assert notes[0] == "dets.json: skipped 1 of 2 detections as invalid" and message in notes[1]


def test_detections_file_must_be_a_list(tmp_path: Path, gt: dict[str, Any]) -> None:
    with pytest.raises(DataError, match="expected a JSON list"):
        load_detections(write(tmp_path, {"annotations": []}, "dets.json"), gt)
    with pytest.raises(DataError, match="not valid JSON"):
        load_detections(write(tmp_path, "[{", "dets.json"), gt)
    with pytest.raises(DataError, match="detections\\[0\\]: expected an object"):
        load_detections([[1, 2]], gt)


def test_inputs_are_not_mutated(tmp_path: Path, gt: dict[str, Any]) -> None:
    raw = [det()]
    before = copy.deepcopy((gt, raw))
    load_detections(raw, gt)
    assert (gt, raw) == before

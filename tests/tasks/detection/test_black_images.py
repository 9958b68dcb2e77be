"""Detection's black-image policy: a black frame is named by its COCO entry (error) or left out of
the cases and counted (skip); the synthetic ultrasound frames, black around the fan, are fine."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from orchestrator.errors import DataError
from tasks.common.images import black_rows
from tasks.detection.config import DetectionConfig
from tasks.detection.task import DetectionTask


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return DetectionTask.synthesize(tmp_path_factory.mktemp("liver"), n=24, size=64, seed=0)


@pytest.fixture()
def train(synth: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic set (tests overwrite its images)."""
    shutil.copytree(synth.parent.parent, tmp_path / "set")
    return tmp_path / "set" / "annotations" / "train.json"


def _task(train: Path, **data: Any) -> DetectionTask:
    raw = DetectionTask.tiny_config(train)
    raw["data"].update(data)
    return DetectionTask(DetectionConfig.model_validate(raw))


def _blacken(train: Path, k: int) -> tuple[dict[str, Any], Path]:
    """Overwrite the image of `k`-th annotated entry of train.json with a black one."""
    coco = json.loads(train.read_text())
    annotated = {a["image_id"] for a in coco["annotations"]}
    entry = [img for img in coco["images"] if img["id"] in annotated][k]
    path = (train.parent / entry["file_name"]).resolve()
    Image.new("RGB", (entry["width"], entry["height"])).save(path)
    return entry, path


def test_the_synthetic_frames_are_not_black(train: Path) -> None:
    task = _task(train)
    task.check_data()  # error policy: nothing flagged
    paths = task.cases()["case"].tolist()
    assert len(paths) >= 15 and black_rows(paths) == []


def test_a_black_frame_is_named_by_its_coco_entry(train: Path) -> None:
    entry, _ = _blacken(train, 2)
    images = json.loads(train.read_text())["images"]
    i = images.index(entry)
    with pytest.raises(DataError) as err:
        _task(train).check_data()
    e = err.value
    assert e.source == str(train) and e.where == f"images[{i}] (id {entry['id']})"
    assert e.message.startswith(f"1 of {len(images)} images are black")
    assert f"images[{i}] (id {entry['id']}): {entry['file_name']}" in e.message
    assert "data.black_threshold (10)" in e.message


def test_the_entry_counts_images_dropped_as_invalid(train: Path) -> None:
    entry, _ = _blacken(train, 0)
    coco = json.loads(train.read_text())
    coco["images"].insert(0, {"id": 999_999, "width": 64, "height": 64})  # no file_name
    train.write_text(json.dumps(coco))
    i = coco["images"].index(entry)
    with pytest.raises(DataError, match=rf"images\[{i}\] \(id {entry['id']}\):"):
        _task(train, skip_invalid=True).check_data()


def test_skip_leaves_the_frame_out_and_counts_it_once(
    train: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, path = _blacken(train, 1)
    task = _task(train, black_images="skip")
    task.check_data()
    frames = task.default_frames()
    task.data_summary()
    cases = task.cases()["case"].tolist()
    assert str(path) not in cases
    assert str(path) not in [*frames["train"]["case"], *frames["val"]["case"]]
    assert task.data_summary()["black_images_skipped"] == 1
    assert capsys.readouterr().err.count("detection: left out 1 black image(s)") == 1
    everything = _task(train).index().cases()  # what the error policy would see
    assert len(everything) == len(cases) + 1

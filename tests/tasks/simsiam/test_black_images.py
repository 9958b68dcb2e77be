"""SimSiam's black-image policy over an image folder and a COCO image list."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from orchestrator.errors import DataError
from tasks.simsiam.config import SimSiamConfig
from tasks.simsiam.task import SimSiamTask


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The liver-ultrasound set SimSiam pretrains on (annotations/train.json, images/)."""
    return SimSiamTask.synthesize(tmp_path_factory.mktemp("us"), n=16, size=64, seed=1)


@pytest.fixture()
def folder(synth: Path, tmp_path: Path) -> Path:
    shutil.copytree(synth.parent.parent, tmp_path / "set")
    return tmp_path / "set"


def _task(images: Path, **data: Any) -> SimSiamTask:
    raw = SimSiamTask.tiny_config(images)
    raw["data"].update(data)
    return SimSiamTask(SimSiamConfig.model_validate(raw))


def _speckle(path: Path) -> None:
    """Black with ~5% scattered bright pixels: black once the median filter has run."""
    with Image.open(path) as img:
        w, h = img.size
    pixels = np.zeros((h, w, 3), np.uint8)
    rng = np.random.default_rng(0)
    n = w * h // 20
    pixels[rng.integers(0, h, n), rng.integers(0, w, n)] = 255
    Image.fromarray(pixels).save(path)


def _all_views(task: SimSiamTask) -> list[str]:
    frames = task.default_frames()
    return [*frames["train"]["case"], *frames["val"]["case"]]


def test_the_synthetic_images_are_not_black(folder: Path) -> None:
    for images in (folder / "images", folder / "annotations" / "train.json"):
        task = _task(images)
        task.check_data()
        assert task.skipped_black == 0 and "black_images_skipped" not in task.data_summary()


def test_a_folder_names_the_black_and_the_speckled_image(folder: Path) -> None:
    paths = sorted((folder / "images").glob("*.png"))
    Image.new("RGB", (80, 64)).save(paths[3])
    _speckle(paths[7])
    with pytest.raises(DataError) as err:
        _task(folder / "images").check_data()
    e = err.value
    assert e.source == str(folder / "images")
    assert e.message.startswith(f"2 of {len(paths)} images are black")
    assert f"{paths[3]}; {paths[7]};" in e.message


def test_a_coco_list_names_the_entry(folder: Path) -> None:
    train = folder / "annotations" / "train.json"
    names = [img["file_name"] for img in json.loads(train.read_text())["images"]]
    Image.new("RGB", (64, 64)).save(train.parent / names[4])
    with pytest.raises(DataError) as err:
        _task(train).check_data()
    assert err.value.where == "images[4]"
    assert f"images[4]: {train.parent / names[4]}" in err.value.message


def test_skip_leaves_them_out_of_both_splits(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = sorted((folder / "images").glob("*.png"))
    Image.new("L", (64, 64)).save(paths[0])
    _speckle(paths[5])
    task = _task(folder / "images", black_images="skip")
    task.check_data()
    views = _all_views(task)
    assert len(views) == len(paths) - 2
    assert str(paths[0]) not in views and str(paths[5]) not in views
    assert task.data_summary()["images"] == len(paths) - 2
    assert task.data_summary()["black_images_skipped"] == 2
    assert capsys.readouterr().err.count("simsiam: left out 2 black image(s)") == 1

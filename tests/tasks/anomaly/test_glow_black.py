"""Glow's black-image policy: a black radiograph is named by its manifest line (error) or left out
of the cases, the splits and the flow's training images, and counted (skip)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from orchestrator.errors import DataError
from tasks.anomaly.config import GlowConfig
from tasks.anomaly.glow_task import GlowTask


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return GlowTask.synthesize(tmp_path_factory.mktemp("cxr"), n=24, size=32, seed=0)


@pytest.fixture()
def manifest(synth: Path, tmp_path: Path) -> Path:
    shutil.copytree(synth.parent, tmp_path / "set")
    return tmp_path / "set" / synth.name


def _task(manifest: Path, **data: Any) -> GlowTask:
    raw = GlowTask.tiny_config(manifest)
    raw["data"].update(data)
    return GlowTask(GlowConfig.model_validate(raw))


def _blacken(manifest: Path, label: int) -> tuple[int, Path]:
    """Overwrite the first image of `label` with black; its manifest line and path."""
    rows = pd.read_csv(manifest)
    i = int(np.flatnonzero(rows["label"] == label)[0])
    path = manifest.parent / rows["path"][i]
    Image.new("L", (32, 32)).save(path)
    return i + 2, path  # line 1 is the header


def test_the_synthetic_radiographs_are_not_black(manifest: Path) -> None:
    task = _task(manifest)
    task.check_data()
    assert task.skipped_black == 0 and len(task.cases()) == 24


def test_a_black_radiograph_is_named_by_line(manifest: Path) -> None:
    line, path = _blacken(manifest, 1)
    with pytest.raises(DataError) as err:
        _task(manifest).check_data()
    e = err.value
    assert e.source == str(manifest) and e.where == f"line {line}, column 'path'"
    assert e.message.startswith("1 of 24 images are black")
    assert f"line {line}: {path.resolve()}" in e.message


def test_a_flat_16_bit_radiograph_is_black_as_the_flow_sees_it(manifest: Path) -> None:
    line, path = _blacken(manifest, 0)
    Image.fromarray(np.full((32, 32), 40000, np.uint16)).save(path)  # min-max scaled: all 0
    with pytest.raises(DataError, match=f"line {line}: "):
        _task(manifest).check_data()


def test_skip_leaves_it_out_of_cases_splits_and_training(
    manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, path = _blacken(manifest, 0)
    task = _task(manifest, black_images="skip")
    task.check_data()
    frames = task.default_frames()
    seen = {*task.cases()["path"], *frames["train"]["path"], *frames["val"]["path"]}
    assert str(path.resolve()) not in seen and len(task.cases()) == 23
    assert len(frames["train"]) + len(frames["val"]) == 23
    assert task.data_summary()["black_images_skipped"] == 1
    assert capsys.readouterr().err.count("glow: left out 1 black image(s)") == 1

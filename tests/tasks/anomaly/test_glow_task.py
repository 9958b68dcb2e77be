"""GlowTask: one CPU epoch, prediction, scoring, overlays, normal-only training, bad inputs."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from orchestrator.errors import DataError
from orchestrator.loop import run_epoch
from tasks.anomaly.config import GlowConfig
from tasks.anomaly.glow_task import GlowTask, overlay_rows
from tasks.anomaly.scores import nll_bpd, png_bits_per_dim
from tasks.base import RunContext
from tasks.common.template import Diverged


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cxr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return GlowTask.synthesize(tmp_path_factory.mktemp("cxr"), n=40, size=32, seed=0)


def _task(manifest: Path, **sections: dict[str, Any]) -> GlowTask:
    raw: dict[str, Any] = {
        "data": {"manifest": str(manifest), "image_size": 16},
        "model": {"levels": 2, "depth": 2, "width": 8},
        "score": {"overlays": 4},
        "train": {"epochs": 1, "batch_size": 8},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return GlowTask(GlowConfig.model_validate(raw))


def _ready(manifest: Path, **sections: dict[str, Any]) -> GlowTask:
    torch.manual_seed(0)
    task = _task(manifest, **sections)
    task.check_data()
    task.setup(RunContext(run_id="t", seed=0))
    return task


def test_one_epoch_predicts_and_scores_val(cxr: Path, tmp_path: Path) -> None:
    task = _ready(cxr)
    metrics = run_epoch(task, 1)
    for key in ("train_loss", "val_auc", "val_auc_nll", "val_auc_complexity", "val_bpd"):
        assert math.isfinite(metrics[key]), key
    assert 0 < metrics["val_bpd"] < 9  # bits/dim of 8-bit images under a barely trained flow
    preds = task.predict("val")
    val = task.frames["val"]
    assert preds["case"].tolist() == val["case"].tolist()
    # one scoring path: the reported metrics are the score of these predictions
    assert task.score("val", preds)["auc"] == pytest.approx(metrics["val_auc"])
    # the per-pixel decomposition sums to the model's NLL in bits/dim
    images = np.stack([task._cache[p] for p in val["path"]])
    assert preds["nll_bpd"].to_numpy() == pytest.approx(nll_bpd(task.bare, images), abs=1e-4)
    assert preds["png_bpd"].to_numpy() == pytest.approx(png_bits_per_dim(images))
    assert preds["complexity"].to_numpy() == pytest.approx(preds["nll_bpd"] - preds["png_bpd"])
    assert preds["score"].tolist() == preds["nll_bpd"].tolist()  # score.kind defaults to nll


def test_overlays_are_written_for_a_sample_with_abnormal_cases(cxr: Path, tmp_path: Path) -> None:
    task = _ready(cxr)
    task.evaluate(1)
    preds = task.last_val
    assert preds is not None
    written = task.save_artifacts(tmp_path)
    assert written[0] == tmp_path / "val_predictions.csv"
    table = pd.read_csv(written[0])
    assert not [c for c in table.columns if c.startswith("_")]
    overlays = sorted((tmp_path / "val_predictions_overlays").glob("*.png"))
    assert len(overlays) == 4 == preds["_emphasis"].notna().sum()
    assert sum("abnormal" in p.name for p in overlays) == 2
    with Image.open(overlays[0]) as img:
        assert img.mode == "RGB" and img.size == (16, 16)


def test_a_new_manifest_without_labels_is_predicted(cxr: Path, tmp_path: Path) -> None:
    df = pd.read_csv(cxr)[["path"]].head(6)
    df["path"] = [str(cxr.parent / p) for p in df["path"]]
    df.to_csv(tmp_path / "new.csv", index=False)
    task = _ready(cxr)
    preds = task.predict(tmp_path / "new.csv")
    assert len(preds) == 6 and "label" not in preds and preds["score"].notna().all()
    task.write_predictions(preds, tmp_path / "new_predictions.csv")
    names = sorted(p.name for p in (tmp_path / "new_predictions_overlays").glob("*.png"))
    assert len(names) == 4 and all("_case_" in n for n in names)


def test_overlay_sample_is_half_abnormal() -> None:
    labels = np.array([0, 1, 0, 0, 1, 1, 0])
    assert overlay_rows(labels, 4).tolist() == [0, 1, 2, 4]
    assert overlay_rows(np.array([0, 0, 0]), 2).tolist() == [0, 1]
    assert overlay_rows(None, 3).tolist() == [0, 1, 2]


def test_the_training_split_keeps_only_normal_images(cxr: Path) -> None:
    task = _ready(cxr)
    frame = task.cases()
    ds: Any = task.dataset(frame, train=True)
    assert len(ds) == int((frame["label"] == 0).sum()) < len(frame)
    assert set(frame["label"].iloc[ds.positions]) == {0}
    assert len(task.dataset(frame, train=False)) == len(frame)


@pytest.mark.parametrize("kind", ["complexity", "emphasis_max"])
def test_the_configured_score_decides_val_auc(cxr: Path, kind: str) -> None:
    task = _ready(cxr, score={"kind": kind})
    metrics = run_epoch(task, 1)
    assert metrics["val_auc"] == metrics[f"val_auc_{kind}"]
    preds = task.predict("val")
    assert preds["score"].tolist() == preds[kind].tolist()


def test_auc_is_left_out_when_a_split_has_one_class(cxr: Path) -> None:
    task = _ready(cxr)
    preds = task.predict("val")
    normal = preds[preds["label"] == 0]
    assert set(task.score("val", normal)) == {"bpd"}


def test_a_non_finite_loss_ends_the_epoch_as_diverged(cxr: Path) -> None:
    task = _ready(cxr)
    with torch.no_grad():
        task.bare.top_prior.fill_(float("nan"))
    with pytest.raises(Diverged, match="train_loss"):
        run_epoch(task, 1)


def test_engine_frames_without_normal_training_images_are_refused(cxr: Path) -> None:
    task = _task(cxr)
    cases = task.cases()
    frames = {"train": cases[cases["label"] == 1], "val": cases}
    with pytest.raises(DataError, match="no normal") as err:
        task.setup(RunContext(run_id="t", seed=0, frames=frames))
    assert err.value.source is not None and str(cxr) in str(err.value.source)


def _manifest(tmp_path: Path, cxr: Path, keep: str) -> Path:
    df = pd.read_csv(cxr, dtype={"mask": str}, keep_default_na=False)
    df = df[df["label"] == 1] if keep == "abnormal" else df[df["label"] == 0]
    df = df.assign(path=[str(cxr.parent / p) for p in df["path"]])
    df = df.assign(mask=[str(cxr.parent / m) if m else "" for m in df["mask"]])
    out = tmp_path / "labels.csv"
    df.to_csv(out, index=False)
    return out


@pytest.mark.parametrize(("keep", "missing"), [("abnormal", "normal"), ("normal", "abnormal")])
def test_a_manifest_without_normal_or_abnormal_images_is_refused(
    cxr: Path, tmp_path: Path, keep: str, missing: str
) -> None:
    manifest = _manifest(tmp_path, cxr, keep)
    with pytest.raises(DataError, match=f"no {missing}") as err:
        _task(manifest).check_data()
    assert err.value.source is not None and str(manifest) in str(err.value.source)


def test_an_unreadable_image_is_named_with_its_line(cxr: Path, tmp_path: Path) -> None:
    df = pd.read_csv(cxr, dtype={"mask": str}, keep_default_na=False)
    df["path"] = [str(cxr.parent / p) for p in df["path"]]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    df.loc[3, "path"] = str(broken)
    manifest = tmp_path / "labels.csv"
    df.to_csv(manifest, index=False)
    with pytest.raises(DataError) as err:
        _task(manifest).check_data()
    assert "line 5" in str(err.value.where) and "broken.png" in err.value.message


def test_image_size_must_fit_the_levels(cxr: Path) -> None:
    with pytest.raises(ValidationError, match=r"divisible by 2\*\*model.levels"):
        _task(cxr, data={"image_size": 20}, model={"levels": 3})

"""PetCtTask: one CPU epoch, z-maps, FROC through the shared code, files, ensemble, bad inputs."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from orchestrator.errors import DataError
from orchestrator.loop import run_epoch
from tasks.anomaly.config import PetCtConfig
from tasks.anomaly.petct_data import load_pair, read_pairs
from tasks.anomaly.petct_task import PetCtTask
from tasks.base import RunContext
from tasks.common import froc as froc_module

RATES = ("0.5", "1", "2", "3", "4", "8")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return PetCtTask.synthesize(tmp_path_factory.mktemp("petct"), n=32, size=32, seed=0)


def _task(manifest: Path, data: dict[str, Any] | None = None, **eval_: Any) -> PetCtTask:
    raw = {
        "data": {"manifest": str(manifest), **(data or {})},
        "model": {"levels": 2, "width": 4},
        "eval": {"overlays": 2, **eval_},
        "train": {"epochs": 1, "batch_size": 8},
    }
    return PetCtTask(PetCtConfig.model_validate(raw))


def _ready(manifest: Path, data: dict[str, Any] | None = None, **eval_: Any) -> PetCtTask:
    torch.manual_seed(0)
    task = _task(manifest, data, **eval_)
    task.check_data()
    task.setup(RunContext(run_id="t", seed=0))
    return task


def test_one_epoch_predicts_z_maps_and_scores_froc(pairs: Path) -> None:
    task = _ready(pairs)
    metrics = run_epoch(task, 1)
    assert math.isfinite(metrics["train_loss"])
    for rate in RATES:
        assert 0 <= metrics[f"val_froc_s{rate}"] <= 1
    assert metrics["val_froc_mean"] == pytest.approx(
        np.mean([metrics[f"val_froc_s{r}"] for r in RATES])
    )
    preds = task.predict("val")
    assert task.score("val", preds) == pytest.approx(
        {k[4:]: v for k, v in metrics.items() if k.startswith("val_")}
    )
    for z, body, n in zip(preds["_z"], preds["_body"], preds["n_candidates"], strict=True):
        assert z.shape == (32, 32) and not z[~body].any()  # no candidate outside the body
        assert n == len(froc_module.candidates(z, 3.0))
    assert preds["max_z"].tolist() == [float(z.max()) for z in preds["_z"]]


def test_pairs_read_per_step_or_resized(pairs: Path) -> None:
    cached = _ready(pairs)
    streamed = _ready(pairs, {"cache": False})
    assert not hasattr(streamed, "_cache")
    results = []
    for task in (cached, streamed):
        torch.manual_seed(1)  # the same shuffle
        metrics = run_epoch(task, 1)
        results.append({k: v for k, v in metrics.items() if not k.endswith("_time_s")})
    assert results[1] == pytest.approx(results[0], rel=1e-5, abs=1e-6)
    small = _ready(pairs, {"image_size": 16})
    preds = small.predict("val")
    assert preds["_z"].iloc[0].shape == preds["_mask"].iloc[0].shape == (16, 16)
    assert {int(m.max()) for m in preds["_mask"]} == {0, 1}


def test_the_threshold_is_honoured(pairs: Path) -> None:
    low, high = _ready(pairs, threshold=2.0), _ready(pairs, threshold=6.0)
    n_low = low.score("val", low.predict("val"))["candidates_per_case"]
    n_high = high.score("val", high.predict("val"))["candidates_per_case"]
    assert n_low > n_high


def test_written_files_reproduce_the_score_with_eval_froc(
    pairs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task = _ready(pairs)
    preds = task.predict("val")
    path = task.write_predictions(preds, tmp_path / "val_predictions.csv")
    table = pd.read_csv(path)
    assert {"case", "label", "max_z", "n_candidates", "zmap"} <= set(table.columns)
    assert len(list((tmp_path / "val_predictions_overlays").glob("*.png"))) == 2
    froc = json.loads((tmp_path / "val_predictions_froc.json").read_text())
    assert (tmp_path / "val_predictions_froc.png").stat().st_size > 0
    scores = task.score("val", preds)
    assert froc["sensitivity_at"] == pytest.approx({r: scores[f"froc_s{r}"] for r in RATES})
    assert froc["curve"]["mean_fp_per_case"]  # the curve as points
    gt = tmp_path / "val_predictions_lesions.csv"
    assert froc_module.main(["--gt", str(gt), "--pred", str(path), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["sensitivity_at"] == froc["sensitivity_at"]


def test_the_training_split_keeps_only_normal_pairs(pairs: Path) -> None:
    task = _ready(pairs)
    frame = task.cases()
    ds: Any = task.dataset(frame, train=True)
    assert len(ds) == int((frame["label"] == 0).sum()) < len(frame)
    assert set(frame["label"].iloc[ds.positions]) == {0}


def test_the_fold_ensemble_is_the_gaussian_mixture(pairs: Path) -> None:
    task = _ready(pairs)
    one = task.predict("val").iloc[:1].reset_index(drop=True)
    body = one.loc[0, "_body"]
    pet = np.full(body.shape, 4.0)
    folds = []
    for mean in (1.0, 3.0):  # two folds, std 1 each: mixture mean 2, variance 1 + 1 = 2
        fold = one.copy()
        fold.at[0, "_mean"] = np.full(body.shape, mean, np.float32)
        fold.at[0, "_std"] = np.ones(body.shape, np.float32)
        fold.at[0, "_z"] = np.where(body, pet - mean, 0).astype(np.float32)
        folds.append(fold)
    merged = PetCtTask.ensemble(folds)
    assert len(merged) == 1
    z = merged.loc[0, "_z"]
    assert z[body] == pytest.approx(2.0 / math.sqrt(2.0), rel=1e-6)
    assert not z[~body].any()
    assert merged.loc[0, "max_z"] == pytest.approx(math.sqrt(2.0), rel=1e-6)


def test_the_body_keeps_the_lungs_and_drops_the_outside_air(pairs: Path) -> None:
    task = _task(pairs)
    holes = 0
    for row in task.cases().itertuples(index=False):
        x, pet, _, body = load_pair(row, task.config)
        assert x.min() >= 0 and x.max() <= 1 and pet.shape == x.shape == body.shape
        assert not body[0, 0]  # air outside is not body
        ct = np.asarray(Image.open(row.ct)).astype(np.float64) - 1024
        lung = (ct > -900) & (ct < -500)  # lung-like (and blurred body edges)
        assert body[lung].all()
        holes += int(lung[10:22, 4:28].any())  # lungs of thorax slices
    assert holes > 5


# --- bad inputs ----------------------------------------------------------------------------
def _edited(pairs: Path, tmp_path: Path, edit: Any) -> Path:
    df = pd.read_csv(pairs, dtype=str, keep_default_na=False)
    for col in ("ct", "pet", "mask"):
        df[col] = [str(pairs.parent / p) if p else "" for p in df[col]]
    df = edit(df, tmp_path)
    out = tmp_path / "pairs.csv"
    df.to_csv(out, index=False)
    return out


def _first_abnormal(df: pd.DataFrame) -> int:
    return int(np.flatnonzero(df["label"] == "1")[0])


def _no_pet(df: pd.DataFrame, tmp: Path) -> pd.DataFrame:
    df.loc[2, "pet"] = ""
    return df


def _small_pet(df: pd.DataFrame, tmp: Path) -> pd.DataFrame:
    np.save(tmp / "small.npy", np.zeros((16, 16), np.float32))
    df.loc[2, "pet"] = str(tmp / "small.npy")
    return df


def _pet_twice(df: pd.DataFrame, tmp: Path) -> pd.DataFrame:
    df.loc[2, "pet"] = df.loc[1, "pet"]
    return df


def _no_mask(df: pd.DataFrame, tmp: Path) -> pd.DataFrame:
    df.loc[_first_abnormal(df), "mask"] = ""
    return df


def _grey_mask(df: pd.DataFrame, tmp: Path) -> pd.DataFrame:
    i = _first_abnormal(df)
    mask = np.asarray(Image.open(df.loc[i, "mask"])).copy()
    mask[0, :4] = 128
    Image.fromarray(mask).save(tmp / "grey.png")
    df.loc[i, "mask"] = str(tmp / "grey.png")
    return df


def _only_abnormal(df: pd.DataFrame, tmp: Path) -> pd.DataFrame:
    return df[df["label"] == "1"]


@pytest.mark.parametrize(
    ("edit", "match", "where"),
    [
        (_no_pet, "unpaired", "line 4, column 'pet'"),
        (_small_pet, "size mismatch", "line 4"),
        (_pet_twice, "unpaired.*line 3", "line 4, column 'pet'"),
        (_no_mask, "without a lesion mask", "column 'mask'"),
        (_grey_mask, "not a binary lesion mask", "line"),
        (_only_abnormal, "no normal", "column label"),
    ],
)
def test_bad_input_names_the_file_and_line(
    pairs: Path, tmp_path: Path, edit: Any, match: str, where: str
) -> None:
    manifest = _edited(pairs, tmp_path, edit)
    with pytest.raises(DataError, match=match) as err:
        _task(manifest).check_data()
    assert where in str(err.value.where)
    named = f"{err.value.source} {err.value.where} {err.value.message}"
    assert "pairs.csv" in named


def test_engine_frames_without_normal_training_pairs_are_refused(pairs: Path) -> None:
    task = _task(pairs)
    cases = task.cases()
    frames = {"train": cases[cases["label"] == 1], "val": cases}
    with pytest.raises(DataError, match="no normal"):
        task.setup(RunContext(run_id="t", seed=0, frames=frames))


def test_a_new_manifest_without_labels_or_masks_is_read(pairs: Path, tmp_path: Path) -> None:
    df = pd.read_csv(pairs, dtype=str, keep_default_na=False)[["ct", "pet"]]
    df = df.assign(ct=[str(pairs.parent / p) for p in df["ct"]])
    df = df.assign(pet=[str(pairs.parent / p) for p in df["pet"]])
    df.to_csv(tmp_path / "new.csv", index=False)
    frame = read_pairs(tmp_path / "new.csv", require_labels=False)
    assert "label" not in frame and (frame["mask"] == "").all() and len(frame) == 32
    task = _ready(pairs)
    preds = task.predict(tmp_path / "new.csv")
    out = task.write_predictions(preds, tmp_path / "new_predictions.csv")
    assert len(list((tmp_path / "new_predictions_zmaps").glob("*.npy"))) == 32
    assert len(list((tmp_path / "new_predictions_overlays").glob("*.png"))) == 2
    assert not (tmp_path / "new_predictions_lesions.csv").exists()  # no truth to score against
    assert "label" not in pd.read_csv(out).columns

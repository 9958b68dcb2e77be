"""tasks.anomaly.synth: layout, determinism, speed, and a learnable but not trivial signal."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score

from tasks.anomaly.synth import CT_OFFSET, generate_cxr, generate_petct, render_petct
from tasks.common.froc import candidates, froc


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(folder).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def cxr(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, Path, float]:
    out = tmp_path_factory.mktemp("cxr")
    start = time.perf_counter()
    csv = generate_cxr(out, n=240, size=64, seed=0)
    elapsed = time.perf_counter() - start
    return pd.read_csv(csv, dtype={"mask": str}, keep_default_na=False), out, elapsed


@pytest.fixture(scope="module")
def petct(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, Path, float]:
    out = tmp_path_factory.mktemp("petct")
    start = time.perf_counter()
    csv = generate_petct(out, n=120, size=64, seed=0)
    elapsed = time.perf_counter() - start
    return pd.read_csv(csv, dtype={"mask": str}, keep_default_na=False), out, elapsed


def test_cxr_layout(cxr: tuple[pd.DataFrame, Path, float]) -> None:
    df, out, elapsed = cxr
    assert list(df.columns) == ["path", "label", "mask", "patient_id"]
    assert len(df) == 240 and df["label"].sum() == 72  # round(0.3 * 240)
    assert df["patient_id"].is_unique
    assert ((df["mask"] == "") == (df["label"] == 0)).all()
    with Image.open(out / df["path"].iloc[0]) as img:
        assert img.mode == "L" and img.size == (64, 64)
    for rel in df.loc[df["label"] == 1, "mask"]:
        mask = np.asarray(Image.open(out / rel))
        assert set(np.unique(mask)) == {0, 255}
    assert elapsed < 10.0, f"240 images at 64 px took {elapsed:.1f} s"


def test_cxr_nodules_are_found_by_a_simple_model_but_not_all(
    cxr: tuple[pd.DataFrame, Path, float],
) -> None:
    # A quick model of normal anatomy: PCA on 100 normals; score = peak of the smoothed squared
    # residual. Clearly above chance, far from perfect (faint and small nodules hide in texture).
    df, out, _ = cxr
    images = np.stack([np.asarray(Image.open(out / p), np.float32) / 255 for p in df["path"]])
    normal = np.flatnonzero(df["label"] == 0)
    fit, test = normal[:100], np.setdiff1d(np.arange(len(df)), normal[:100])
    pca = PCA(20, random_state=0).fit(images[fit].reshape(len(fit), -1))
    flat = images[test].reshape(len(test), -1)
    residual = (flat - pca.inverse_transform(pca.transform(flat))).reshape(-1, 64, 64)
    score = [cv2.GaussianBlur(r**2, (0, 0), 1.5).max() for r in residual]
    auc = roc_auc_score(df["label"].to_numpy()[test], score)
    assert 0.65 < auc < 0.95, auc


def test_petct_layout_and_formats(petct: tuple[pd.DataFrame, Path, float]) -> None:
    df, out, elapsed = petct
    assert list(df.columns) == ["ct", "pet", "mask", "label", "patient_id"]
    assert len(df) == 120 and df["label"].sum() == 60
    with Image.open(out / df["ct"].iloc[0]) as img:
        ct = np.asarray(img).astype(np.int32) - CT_OFFSET
    assert ct.shape == (64, 64) and ct.min() < -900 and ct.max() > 400  # air ... bone in HU
    pet = np.load(out / df["pet"].iloc[0])
    assert pet.dtype == np.float32 and pet.shape == (64, 64) and pet.min() >= 0
    assert 0.5 < np.percentile(pet[ct > -200], 50) < 3.0  # SUV-like values in the body
    masks = [np.asarray(Image.open(out / m)) for m in df.loc[df["label"] == 1, "mask"]]
    assert all(set(np.unique(m)) == {0, 255} for m in masks)
    assert elapsed < 10.0


def test_petct_lesions_are_invisible_in_ct_and_hot_in_pet() -> None:
    normal = render_petct(np.random.default_rng(5), 64, abnormal=False)
    lesion = render_petct(np.random.default_rng(5), 64, abnormal=True)
    assert np.array_equal(normal[0], lesion[0])  # same patient, same CT
    mask = lesion[2]
    assert mask.any() and not normal[2].any()
    assert lesion[1][mask].mean() > normal[1][mask].mean() + 0.5


def test_petct_lesions_are_found_by_a_simple_model_but_not_all(
    petct: tuple[pd.DataFrame, Path, float],
) -> None:
    # A quick model: mean and std of the PET per (smoothed) CT value bin, from 30 normal cases;
    # z-score, threshold 3.0, FROC as in seed 001. Organs with the same HU but different or
    # patient-dependent uptake keep it from being perfect.
    df, out, _ = petct
    cts = [
        cv2.GaussianBlur(np.asarray(Image.open(out / p), np.float32), (0, 0), 1.0) for p in df["ct"]
    ]
    pets = [np.load(out / p) for p in df["pet"]]
    edges = np.linspace(-1100, 700, 60) + CT_OFFSET
    bins = [np.digitize(c, edges) for c in cts]
    fit = np.flatnonzero(df["label"] == 0)[:30]
    b = np.concatenate([bins[i].ravel() for i in fit])
    v = np.concatenate([pets[i].ravel() for i in fit])
    count = np.maximum(np.bincount(b, minlength=61), 1)
    mean = np.bincount(b, v, 61) / count
    std = np.sqrt(np.maximum(np.bincount(b, v**2, 61) / count - mean**2, 0)) + 0.05
    cases = []
    for i in np.setdiff1d(np.arange(len(df)), fit):
        mask = np.asarray(Image.open(out / df["mask"].iloc[i])) if df["label"].iloc[i] else None
        z = (pets[i] - mean[bins[i]]) / std[bins[i]]
        cases.append((candidates(z, 3.0), mask if mask is not None else np.zeros((64, 64))))
    result = froc(cases, fps_per_case=(3,))
    assert result.n_lesions > 80
    assert 0.4 < result.sensitivity_at[0] < 0.95, result.sensitivity_at


def test_same_seed_same_bytes_other_seed_other_images(tmp_path: Path) -> None:
    a = _digest(generate_cxr(tmp_path / "a", n=6, size=32, seed=3).parent)
    b = _digest(generate_cxr(tmp_path / "b", n=6, size=32, seed=3).parent)
    c = _digest(generate_cxr(tmp_path / "c", n=6, size=32, seed=4).parent)
    assert a == b != c
    p = _digest(generate_petct(tmp_path / "p", n=4, size=32, seed=3).parent)
    q = _digest(generate_petct(tmp_path / "q", n=4, size=32, seed=3).parent)
    assert p == q


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"n": 0}, "n must"), ({"size": 16}, "size must"), ({"abnormal_fraction": 1.5}, "fraction")],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        generate_cxr(tmp_path, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=match):
        generate_petct(tmp_path, **kwargs)  # type: ignore[arg-type]

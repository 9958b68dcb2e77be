"""Synthetic CT slices: determinism, manifest, patients, HU content, DICOM copy, learnability."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tasks.abn.synth import generate, hu_to_pixel, pixel_to_hu
from tasks.common.dicom import read_hu, read_slice


def _rows(csv_path: Path) -> list[dict[str, str]]:
    with csv_path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("ct"), n=18, size=48, seed=4, dicom=3)


def test_deterministic_for_a_seed(small: Path, tmp_path: Path) -> None:
    again = generate(tmp_path / "a", n=18, size=48, seed=4, dicom=3)
    assert _files(again.parent) == _files(small.parent)
    other = generate(tmp_path / "b", n=18, size=48, seed=5)
    assert (
        _files(other.parent)["slices/ct_00000.png"] != _files(small.parent)["slices/ct_00000.png"]
    )


def test_manifest_patients_and_labels(small: Path) -> None:
    rows = _rows(small)
    assert list(rows[0]) == ["path", "mask", "patient_id", "label"]
    assert len(rows) == 18
    by_patient: dict[str, set[str]] = {}
    for r in rows:
        by_patient.setdefault(r["patient_id"], set()).add(r["label"])
    # 18 // 4 = 4 patients (two get a fifth slice), balanced, one label per patient.
    assert sorted(sum(r["patient_id"] == p for r in rows) for p in by_patient) == [4, 4, 5, 5]
    assert all(len(labels) == 1 for labels in by_patient.values())
    assert sorted(next(iter(v)) for v in by_patient.values()) == ["0", "0", "1", "1"]


def test_slices_and_masks_are_aligned_8bit_images(small: Path) -> None:
    for r in _rows(small):
        with Image.open(small.parent / r["path"]) as img, Image.open(small.parent / r["mask"]) as m:
            assert img.mode == "L" and m.mode == "L" and img.size == m.size == (48, 48)
            mask = np.asarray(m)
        assert set(np.unique(mask)) <= {0, 255} and 0.05 < (mask > 0).mean() < 0.6


def test_hu_content_is_anatomical(tmp_path: Path) -> None:
    csv_path = generate(tmp_path, n=8, size=96, seed=0, dicom=8, difficulty=0.0)
    for r in _rows(tmp_path / "labels_dicom.csv"):
        hu = read_hu(tmp_path / r["path"])
        lung = np.asarray(Image.open(tmp_path / r["mask"])) > 0
        assert np.percentile(hu[lung], 5) == pytest.approx(-850, abs=100)  # aerated lung
        assert np.median(hu[:6, :6]) == pytest.approx(-1000, abs=40)  # air outside the body
        tissue = hu[(hu > -500) & ~lung]
        assert np.median(tissue) == pytest.approx(0, abs=120)  # fat (-100) and soft tissue (40)
        assert hu.max() > 300  # bone (spine, ribs)
        # The PNG is the same slice windowed with the lung window.
        png = read_slice(tmp_path / r["path"].replace("dicom/", "slices/").replace(".dcm", ".png"))
        np.testing.assert_allclose(read_slice(tmp_path / r["path"]), png, atol=1 / 255)
    assert len(_rows(csv_path)) == 8


def test_window_helpers() -> None:
    hu = np.array([-2000.0, -1350.0, -600.0, 150.0, 1000.0])
    np.testing.assert_array_equal(hu_to_pixel(hu), [0, 0, 128, 255, 255])
    back = pixel_to_hu(hu_to_pixel(np.array([-1000.0, -850.0, -300.0])))
    np.testing.assert_allclose(back, [-1000.0, -850.0, -300.0], atol=1500 / 255 / 2)
    np.testing.assert_allclose(pixel_to_hu([0, 255], level=40, width=400), [-160, 240])
    with pytest.raises(ValueError, match="width"):
        hu_to_pixel(hu, width=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 7}, "at least 2 patients"),
        ({"size": 16}, "size"),
        ({"n": 20, "dicom": 21}, "dicom"),
        ({"difficulty": 1.5}, "difficulty"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        generate(tmp_path, **kwargs)  # type: ignore[arg-type]


def _lung_features(csv_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Five intensity statistics of the lung region per slice (no spatial information)."""
    feats, labels, groups = [], [], []
    for r in _rows(csv_path):
        hu = pixel_to_hu(np.asarray(Image.open(csv_path.parent / r["path"])))
        v = hu[np.asarray(Image.open(csv_path.parent / r["mask"])) > 0]
        feats.append(
            [v.mean(), v.std(), (v > -700).mean(), (v > -250).mean(), np.percentile(v, 90)]
        )
        labels.append(int(r["label"]))
        groups.append(r["patient_id"])
    return np.array(feats), np.array(labels), np.array(groups)


def _grouped_cv_auc(csv_path: Path) -> float:
    x, y, g = _lung_features(csv_path)
    model = make_pipeline(StandardScaler(), LogisticRegression())
    p = cross_val_predict(model, x, y, groups=g, cv=GroupKFold(4), method="predict_proba")
    return float(roc_auc_score(y, p[:, 1]))


def test_learnable_but_not_trivial(tmp_path: Path) -> None:
    # Measured with these arguments: AUC 0.98 at difficulty 0, 0.79 at 0.5 (seeds 2, 3: 0.86, 0.85).
    easy = _grouped_cv_auc(generate(tmp_path / "easy", n=160, size=64, seed=1, difficulty=0.0))
    default = _grouped_cv_auc(generate(tmp_path / "default", n=160, size=64, seed=1))
    assert 0.6 < default < 0.95, default
    assert easy > default

"""tasks.fundus.synth: realistic-enough, learnable-but-not-trivial, deterministic, fast."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from tasks.fundus.synth import generate, render_fundus


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, Path, float]:
    """The demo dataset: 400 images at 96 px, with its generation time."""
    out = tmp_path_factory.mktemp("fundus")
    start = time.perf_counter()
    csv = generate(out, n=400, size=96, seed=0)
    return pd.read_csv(csv, dtype={"patient_id": str}), out, time.perf_counter() - start


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(folder).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_layout_and_labels(demo: tuple[pd.DataFrame, Path, float]) -> None:
    df, out, _ = demo
    assert list(df.columns) == ["path", "label", "patient_id", "cdr"]
    assert df["path"].iloc[0] == "images/fundus_00000.png" and len(df) == 400
    assert all((out / p).is_file() for p in df["path"])
    assert set(df["label"]) == {0, 1}
    assert 0.3 <= df["label"].mean() <= 0.5  # roughly 40 % glaucoma
    per_patient = df.groupby("patient_id")
    assert per_patient.size().max() == 2 and 1.7 <= len(df) / per_patient.ngroups <= 2.0
    assert (per_patient["label"].nunique() == 1).all()  # both eyes share the label
    with Image.open(out / df["path"].iloc[0]) as img:
        assert img.mode == "RGB" and img.size == (96, 96)


def test_fast(demo: tuple[pd.DataFrame, Path, float]) -> None:
    assert demo[2] < 10.0, f"400 images at 96 px took {demo[2]:.1f} s"


def test_oracle_auc_is_high_but_not_perfect(demo: tuple[pd.DataFrame, Path, float]) -> None:
    df = demo[0]
    auc = roc_auc_score(df["label"], df["cdr"])
    assert 0.85 <= auc <= 0.995
    # The classes really differ in CDR (label noise aside).
    means = df.groupby("label")["cdr"].mean()
    assert means[1] - means[0] > 0.15


def test_same_seed_is_byte_identical(tmp_path: Path) -> None:
    a = _digest(generate(tmp_path / "a", n=12, size=48, seed=5).parent)
    b = _digest(generate(tmp_path / "b", n=12, size=48, seed=5).parent)
    c = _digest(generate(tmp_path / "c", n=12, size=48, seed=6).parent)
    assert a == b != c


def test_without_patients_every_image_is_its_own_patient(tmp_path: Path) -> None:
    df = pd.read_csv(generate(tmp_path, n=9, size=32, seed=1, patients=False))
    assert df["patient_id"].is_unique and len(df) == 9


@pytest.mark.parametrize("size", [32, 1024])
def test_extreme_sizes_render(size: int) -> None:
    img = render_fundus(np.random.default_rng(0), size, 0.5)
    assert img.shape == (size, size, 3) and img.dtype == np.uint8
    assert img[0, 0].max() < 12 and img[size // 2, size // 2].mean() > 40  # black border, retina


@pytest.mark.parametrize("seed", range(4))
def test_cup_grows_with_cdr(seed: int) -> None:
    """Same random stream, only the CDR differs: the pale cup area must grow with it."""

    def pale(cdr: float) -> int:  # bright and yellow-white: the cup, not the orange-red retina
        img = render_fundus(np.random.default_rng(seed), 128, cdr).astype(int)
        return int(((img[..., 1] > 0.7 * img[..., 0]) & (img[..., 0] > 90)).sum())

    small, mid, large = pale(0.25), pale(0.5), pale(0.8)
    assert small < mid < large and large > 1.5 * small + 20


def test_left_eye_is_mirrored() -> None:
    right = render_fundus(np.random.default_rng(1), 64, 0.4, right_eye=True)
    left = render_fundus(np.random.default_rng(1), 64, 0.4, right_eye=False)
    assert np.array_equal(left, right[:, ::-1])


@pytest.mark.parametrize(("n", "size"), [(0, 96), (5, 16), (5, 2048)])
def test_invalid_arguments(tmp_path: Path, n: int, size: int) -> None:
    with pytest.raises(ValueError):
        generate(tmp_path, n=n, size=size)

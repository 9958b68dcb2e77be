"""tasks.fundus.synth: default output unchanged; several coded sources; a difficulty knob."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from tasks.fundus.preprocess import crop_fundus
from tasks.fundus.sources import load_sources, merge_sources, near_duplicates
from tasks.fundus.synth import Camera, generate, render_fundus

# sha256 of labels.csv + the decoded pixels of generate(n=12, size=48, seed=5) and of
# generate(n=6, size=64, seed=2, patients=False), recorded before `sources`/`difficulty` existed.
# Pixels, not PNG bytes, so a different zlib cannot break it; the PNG bytes were checked too.
DEFAULT_DIGESTS = {
    (12, 48, 5, True): "82f3cb3c81df1c5277ac4451acdbce5876c416c9e1466341f5dc03c9322c36a7",
    (6, 64, 2, False): "653ab38694f8f5f730519459c6e2e664ee8f82a5c82baea004cacb363ececf02",
}


def _pixel_digest(csv_path: Path) -> str:
    h = hashlib.sha256(csv_path.read_bytes())
    for png in sorted((csv_path.parent / "images").glob("*.png")):
        h.update(png.name.encode())
        with Image.open(png) as img:
            h.update(np.asarray(img).tobytes())
    return h.hexdigest()


@pytest.mark.parametrize(("args", "digest"), DEFAULT_DIGESTS.items(), ids=["patients", "single"])
def test_default_output_is_unchanged(
    tmp_path: Path, args: tuple[int, int, int, bool], digest: str
) -> None:
    n, size, seed, patients = args
    assert _pixel_digest(generate(tmp_path / "a", n, size, seed, patients=patients)) == digest
    explicit = generate(tmp_path / "b", n, size, seed, patients=patients, sources=1, difficulty=0.0)
    assert _pixel_digest(explicit) == digest


def test_default_camera_is_the_old_camera() -> None:
    plain = render_fundus(np.random.default_rng(4), 64, 0.5)
    assert np.array_equal(plain, render_fundus(np.random.default_rng(4), 64, 0.5, camera=Camera()))
    harder = render_fundus(np.random.default_rng(4), 64, 0.5, difficulty=1.0)
    assert not np.array_equal(plain, harder)


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(
        tmp_path_factory.mktemp("multi"), n=80, size=96, seed=1, sources=4, cross_duplicates=0.2
    )


def test_sources_have_their_own_codings(multi: Path) -> None:
    spec = json.loads(multi.read_text())
    assert [s["name"] for s in spec["sources"]] == ["a", "b", "c", "d"]
    headers = {}
    for s in spec["sources"]:
        with (multi.parent / s["manifest"]).open() as fh:
            reader = csv.reader(fh)
            headers[s["name"]] = next(reader)
            codes = {row[1] for row in reader}
        assert codes == set(s["label_map"] or {"0": 0, "1": 1}), s["name"]
    assert headers == {
        "a": ["path", "label", "patient_id", "cdr"],
        "b": ["path", "diagnosis", "patient", "cdr"],
        "c": ["path", "glaucoma", "subject", "cdr"],
        "d": ["image", "class", "cdr"],
    }
    df = merge_sources(load_sources(multi), seed=0)
    assert len(df) == 80 and df.groupby("source").size().eq(20).all()
    assert set(df["label"]) == {0, 1}
    assert df.loc[df["source"] == "d", "patient_id"].str.contains(":line").all()


def test_sources_differ_in_camera(multi: Path) -> None:
    df = merge_sources(load_sources(multi), seed=0)
    stats = {}
    for name, part in df.groupby("source"):
        with Image.open(part["path"].iloc[0]) as img:
            size = img.size
        arrays = [np.asarray(Image.open(p).convert("RGB"), dtype=float) for p in part["path"]]
        fundus = np.concatenate(
            [crop_fundus(a.astype(np.uint8), 10).reshape(-1, 3) for a in arrays]
        )
        stats[name] = (size, fundus.mean(axis=0))
    assert stats["a"][0] == (96, 96) and stats["b"][0] == (160, 120) and stats["c"][0] == (72, 72)
    mean_a, mean_b, mean_c = stats["a"][1], stats["b"][1], stats["c"][1]
    assert mean_b.sum() < mean_a.sum() < mean_c.sum()  # darker, default, brighter camera
    assert mean_c[2] / mean_c[0] > 1.1 * mean_a[2] / mean_a[0]  # cool colour cast


def test_cross_source_duplicates_are_listed_and_found(multi: Path) -> None:
    listed = pd.read_csv(multi.parent / "duplicates.csv")
    assert len(listed) == 4 and set(listed["source"]) == {"c"}
    df = merge_sources(load_sources(multi), seed=0)
    row = {p: i for i, p in enumerate(df["path"])}
    for copy, original in zip(listed["path"], listed["duplicate_of_path"], strict=True):
        i, j = row[str(multi.parent / copy)], row[str(multi.parent / original)]
        assert df["label"][i] == df["label"][j]
        assert near_duplicates([df["path"][i], df["path"][j]], threshold=40) == [[0, 1]]


def _pale_ratio(path: str) -> float:
    """Share of cup-coloured (yellow-white) pixels among disc-coloured ones: a CDR proxy."""
    with Image.open(path) as img:
        rgb = crop_fundus(np.asarray(img.convert("RGB")), 10).astype(np.float32)
    ratio = rgb[..., 1] / np.maximum(rgb[..., 0], 1.0)
    inside = rgb.max(axis=2) > 10
    return float(((ratio > 0.75) & inside).sum() / max(1, ((ratio > 0.55) & inside).sum()))


def test_difficulty_lowers_auc_but_stays_learnable(tmp_path: Path) -> None:
    oracle, feature = [], []
    for d in (0.0, 0.5, 1.0):
        df = pd.read_csv(generate(tmp_path / str(d), n=160, size=64, seed=3, difficulty=d))
        oracle.append(roc_auc_score(df["label"], df["cdr"]))
        scores = [_pale_ratio(str(tmp_path / str(d) / p)) for p in df["path"]]
        feature.append(roc_auc_score(df["label"], scores))
    assert oracle[0] > oracle[1] > oracle[2] > 0.7, oracle
    assert feature[0] > feature[1] > feature[2] > 0.6, feature
    assert feature[0] - feature[2] > 0.1, feature


def test_multi_source_output_is_deterministic(tmp_path: Path) -> None:
    def digest(folder: Path) -> str:
        h = hashlib.sha256()
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                h.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
        return h.hexdigest()

    kw: dict[str, Any] = {"n": 9, "size": 40, "sources": 3, "difficulty": 0.5}
    a = digest(generate(tmp_path / "a", seed=1, **kw).parent)
    b = digest(generate(tmp_path / "b", seed=1, **kw).parent)
    c = digest(generate(tmp_path / "c", seed=2, **kw).parent)
    assert a == b != c


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sources": 5},
        {"sources": 0},
        {"difficulty": 1.5},
        {"cross_duplicates": 0.9},
        {"n": 2, "sources": 3},
    ],
)
def test_invalid_new_arguments(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        generate(tmp_path, **{"n": 8, "size": 32, **kwargs})

"""tasks.detection.synth: COCO layout, class-specific lesions, patients, flaws, determinism."""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tasks.detection.synth import CATEGORIES, generate, render_liver

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], float]:
    """The demo dataset (600 images at 128 px), its three COCO files and generation time."""
    out = tmp_path_factory.mktemp("liver")
    start = time.perf_counter()
    train = generate(out, n=600, size=128, seed=0)
    seconds = time.perf_counter() - start
    cocos = {s: json.loads((train.parent / f"{s}.json").read_text()) for s in SPLITS}
    return out, cocos, seconds


def _images(cocos: dict[str, Any]) -> list[dict[str, Any]]:
    return [img for s in SPLITS for img in cocos[s]["images"]]


def _gray(out: Path, img: dict[str, Any]) -> np.ndarray:
    with Image.open(out / "annotations" / img["file_name"]) as im:
        return np.asarray(im.convert("L"), dtype=np.float64)


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(folder).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_fast(demo: tuple[Path, dict[str, Any], float]) -> None:
    assert demo[2] < 10.0, f"600 images at 128 px took {demo[2]:.1f} s"


def test_coco_layout(demo: tuple[Path, dict[str, Any], float]) -> None:
    out, cocos, _ = demo
    images = _images(cocos)
    assert len(images) == 600 and len({img["id"] for img in images}) == 600
    for s in SPLITS:
        assert [c["name"] for c in cocos[s]["categories"]] == list(CATEGORIES)
        assert [c["id"] for c in cocos[s]["categories"]] == [1, 2, 3, 4]
    first = min(images, key=lambda i: i["id"])
    assert first["file_name"] == "../images/liver_00001.png"  # relative to the JSON folder
    for img in images[::25]:
        with Image.open(out / "annotations" / img["file_name"]) as im:
            assert im.size == (img["width"], img["height"]) and im.mode == "RGB"
        assert img["sex"] in ("M", "F") and 20 <= img["age"] <= 95
    by_id = {img["id"]: img for img in images}
    anns = [a for s in SPLITS for a in cocos[s]["annotations"]]
    assert len({a["id"] for a in anns}) == len(anns)
    for a in anns:
        img = by_id[a["image_id"]]
        x, y, w, h = a["bbox"]
        assert x >= 0 and y >= 0 and x + w <= img["width"] and y + h <= img["height"]
        side = min(img["width"], img["height"]) if img["dirty"] != "small" else 64
        assert 0.05 * side <= max(w, h) <= 0.33 * side  # lesions ~8-25 % of the image
    per_image: dict[int, int] = defaultdict(int)
    for a in anns:
        per_image[a["image_id"]] += 1
    negatives = sum(1 for img in images if img["id"] not in per_image)
    assert 10 <= negatives <= 50  # ~5 %
    assert max(per_image.values()) == 3


def test_split_by_patient(demo: tuple[Path, dict[str, Any], float]) -> None:
    cocos = demo[1]
    owner: dict[str, str] = {}
    for s in SPLITS:
        for img in cocos[s]["images"]:
            assert owner.setdefault(img["patient_id"], s) == s, img["patient_id"]
    counts = [len(cocos[s]["images"]) for s in SPLITS]
    assert abs(counts[0] - 480) <= 6 and abs(counts[1] - 60) <= 6, counts
    per_patient = defaultdict(list)
    for img in _images(cocos):
        per_patient[img["patient_id"]].append(img)
    assert 2.0 <= 600 / len(per_patient) <= 3.2
    for imgs in per_patient.values():  # a patient has one age and one sex
        assert len({(i["age"], i["sex"]) for i in imgs}) == 1


def test_demographics_follow_the_seed(demo: tuple[Path, dict[str, Any], float]) -> None:
    cocos = demo[1]
    diag: dict[str, str] = {}
    for s in SPLITS:
        by_id = {img["id"]: img for img in cocos[s]["images"]}
        for a in cocos[s]["annotations"]:
            diag.setdefault(by_id[a["image_id"]]["patient_id"], CATEGORIES[a["category_id"] - 1])
    people = {img["patient_id"]: img for img in _images(cocos)}
    stats = {}
    for cat in CATEGORIES:
        pats = [people[p] for p, d in diag.items() if d == cat]
        stats[cat] = (np.mean([p["age"] for p in pats]), np.mean([p["sex"] == "M" for p in pats]))
    assert stats["HCC"][0] > stats["hemangioma"][0] + 8  # HCC older
    assert stats["HCC"][1] > 0.6 > 0.45 > stats["hemangioma"][1]  # HCC men, hemangioma women


def test_lesion_classes_are_distinguishable(demo: tuple[Path, dict[str, Any], float]) -> None:
    out, cocos, _ = demo
    box_mean: dict[str, list[float]] = defaultdict(list)
    core_minus_box: dict[str, list[float]] = defaultdict(list)
    for s in SPLITS:
        by_id = {img["id"]: img for img in cocos[s]["images"]}
        for a in cocos[s]["annotations"][::2]:
            img = by_id[a["image_id"]]
            if img["dirty"]:
                continue
            x, y, w, h = (round(v) for v in a["bbox"])
            box = _gray(out, img)[y : y + h, x : x + w]
            cat = CATEGORIES[a["category_id"] - 1]
            box_mean[cat].append(box.mean())
            core_minus_box[cat].append(
                box[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].mean() - box.mean()
            )
    mean = {c: float(np.mean(v)) for c, v in box_mean.items()}
    assert mean["cyst"] < 0.5 * min(mean["HCC"], mean["hemangioma"], mean["Meta"])  # anechoic
    assert mean["hemangioma"] > 1.3 * max(mean["HCC"], mean["Meta"])  # hyperechoic
    # Meta: target pattern, bright centre inside a dark rim.
    assert np.mean(core_minus_box["Meta"]) > 2 * np.mean(core_minus_box["hemangioma"]) + 10


def test_dirty_images(demo: tuple[Path, dict[str, Any], float]) -> None:
    out, cocos, _ = demo
    images = _images(cocos)
    kinds = defaultdict(list)
    for img in images:
        kinds[img["dirty"]].append(img)
    assert len(kinds["small"]) == 30 and len(kinds["duplicate"]) == 30
    assert len(kinds["overlay"]) == 60
    assert all(i["width"] <= 64 and i["height"] <= 64 for i in kinds["small"])
    assert all(min(i["width"], i["height"]) > 64 for i in kinds[None])
    by_id = {img["id"]: img for img in images}
    for dup in kinds["duplicate"]:
        src = by_id[dup["duplicate_of"]]
        assert src["patient_id"] == dup["patient_id"] and src["dirty"] is None
    for img in kinds["overlay"][:10] + kinds[None][:10]:
        with Image.open(out / "annotations" / img["file_name"]) as im:
            rgb = np.asarray(im).astype(int)
        colour = int((np.ptp(rgb, axis=2) > 60).sum())
        assert (colour > 10) == (img["dirty"] == "overlay")


def test_deterministic(tmp_path: Path) -> None:
    a, b, c = (tmp_path / k for k in "abc")
    generate(a, n=24, size=64, seed=7)
    generate(b, n=24, size=64, seed=7)
    generate(c, n=24, size=64, seed=8)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_render_liver_draws_requested_lesions() -> None:
    gray, boxes = render_liver(np.random.default_rng(0), 96, 120, ["Meta", "Meta", "cyst"])
    assert gray.shape == (96, 120) and gray.dtype == np.uint8
    assert [c for c, _ in boxes] == ["Meta", "Meta", "cyst"]
    assert gray[0, 0] == 0 and gray[-1, 0] == 0  # black outside the fan
    for _, (x, y, w, h) in boxes:
        assert x >= 0 and x + w <= 120 and y >= 0 and y + h <= 96


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="size"):
        generate(tmp_path, n=4, size=16)
    with pytest.raises(ValueError, match="shares"):
        generate(tmp_path, n=10, small_share=0.6, overlay_share=0.5)

"""tasks.fundus.preprocess: crops, vessel removal, the composed pipeline and its on-disk cache."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from orchestrator.errors import DataError
from tasks.fundus.preprocess import (
    PreprocessCache,
    central_crop,
    crop_fundus,
    preprocess,
    settings_key,
    suppress_vessels,
    vessel_response,
)
from tasks.fundus.synth import render_fundus

SETTINGS: dict[str, Any] = {
    "crop_border": True,
    "border_threshold": 10,
    "central_fraction": 1.0,
    "vessels": False,
    "size": 32,
}


def _retina_with_vessels(size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """A smooth orange disc on black with dark 2-3 px lines drawn on it; and the line mask."""
    yy, xx = np.mgrid[0:size, 0:size]
    inside = (xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (0.45 * size) ** 2
    img = np.zeros((size, size, 3), np.uint8)
    img[inside] = (200, 90, 40)
    lines = np.zeros((size, size), np.uint8)
    s = size / 128
    cv2.line(lines, (round(30 * s), round(40 * s)), (round(100 * s), round(90 * s)), 255, 3)
    cv2.line(lines, (round(40 * s), round(100 * s)), (round(95 * s), round(30 * s)), 255, 2)
    img[lines > 0] = (90, 20, 10)
    return img, lines > 0


def test_central_crop_keeps_the_middle() -> None:
    img = np.arange(10 * 20 * 3, dtype=np.uint8).reshape(10, 20, 3)
    assert central_crop(img, 1.0) is img
    out = central_crop(img, 0.5)
    assert out.shape == (5, 10, 3)
    assert np.array_equal(out, img[2:7, 5:15])
    with pytest.raises(ValueError):
        central_crop(img, 0.0)


def test_border_crop_ignores_isolated_bright_pixels() -> None:
    img = np.zeros((60, 80, 3), np.uint8)
    img[10:50, 20:60] = 120
    img[0, 0] = img[59, 79] = 40  # JPEG-like specks in the black border
    out = crop_fundus(img, 10)
    assert out.shape == (40, 40, 3) and out.min() == 120


def test_vessel_suppression_removes_drawn_vessels() -> None:
    img, lines = _retina_with_vessels()
    before = vessel_response(img)[lines].mean()
    out = suppress_vessels(img)
    after = vessel_response(out)[lines].mean()
    assert out.shape == img.shape and out.dtype == np.uint8
    assert before > 40 and after < 0.25 * before
    # The vessels are filled with retina colour; pixels far from them stay as they were.
    assert np.abs(out[lines].astype(int).mean(axis=0) - (200, 90, 40)).max() < 30
    far = cv2.dilate(lines.astype(np.uint8), np.ones((9, 9), np.uint8)) == 0
    assert np.array_equal(out[far], img[far])


def test_vessel_suppression_on_a_synthetic_fundus() -> None:
    img = render_fundus(np.random.default_rng(3), 128, 0.5)
    out = suppress_vessels(img)
    r0, r1 = vessel_response(img), vessel_response(out)
    strong = r0 > np.percentile(r0, 97)
    assert r1[strong].mean() < 0.5 * r0[strong].mean()
    assert np.array_equal(suppress_vessels(img, threshold=255.0), img)  # nothing above: no-op


def test_preprocess_composes_crop_and_resize() -> None:
    img, lines = _retina_with_vessels()
    padded = np.pad(img, ((0, 0), (60, 60), (0, 0)))  # wide black sides
    out = preprocess(padded, **SETTINGS)
    assert out.shape == (3, 32, 32) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert np.array_equal(out, preprocess(img, **SETTINGS))  # the border is gone
    uncropped = preprocess(padded, **{**SETTINGS, "crop_border": False})
    assert uncropped[:, :, 0].max() < 10  # still black at the sides
    # Vessel removal brightens the dark lines (image side kept: the crop is the whole image).
    full = {**SETTINGS, "size": 256, "crop_border": False}
    clean = preprocess(img, **{**full, "vessels": True}).astype(int)
    plain = preprocess(img, **full).astype(int)
    assert np.array_equal(plain.transpose(1, 2, 0), img)
    assert clean[0][lines].mean() > plain[0][lines].mean() + 60


def test_settings_key_is_stable_and_sensitive() -> None:
    key = settings_key(**SETTINGS)
    assert key == settings_key(**dict(reversed(SETTINGS.items()))) and len(key) == 16
    assert key != settings_key(**{**SETTINGS, "vessels": True})
    assert key != settings_key(**{**SETTINGS, "size": 64})


def _write_images(folder: Path, n: int) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


class _Counting:
    """fn for the cache: decodes and resizes, counting calls."""

    def __init__(self, size: int = 8) -> None:
        self.calls, self.size = 0, size

    def __call__(self, path: str) -> np.ndarray:
        self.calls += 1
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB").resize((self.size, self.size)))
        return np.ascontiguousarray(arr.transpose(2, 0, 1))


def test_cache_builds_once_and_memory_maps(tmp_path: Path) -> None:
    paths = _write_images(tmp_path, 5)
    fn, cache = _Counting(), PreprocessCache("s1")
    first = cache.get_or_build(paths, fn, tmp_path / "cache")
    assert fn.calls == 5 and first.shape == (5, 3, 8, 8) and first.dtype == np.uint8
    second = cache.get_or_build(paths, fn, tmp_path / "cache")
    assert fn.calls == 5, "the second call decoded again"
    assert isinstance(second, np.memmap) and np.array_equal(first, second)
    assert np.array_equal(second[3], _Counting()(paths[3]))
    reordered = cache.get_or_build(paths[::-1], fn, tmp_path / "cache")
    assert fn.calls == 5 and np.array_equal(reordered, second[::-1])
    leftovers = [p.name for p in (tmp_path / "cache").iterdir() if "tmp" in p.name]
    assert leftovers == []


def test_cache_rebuilds_on_changed_file_or_settings(tmp_path: Path) -> None:
    paths = _write_images(tmp_path, 3)
    fn = _Counting()
    PreprocessCache("s1").get_or_build(paths, fn, tmp_path / "c")
    st = os.stat(paths[1])
    os.utime(paths[1], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    PreprocessCache("s1").get_or_build(paths, fn, tmp_path / "c")
    assert fn.calls == 6  # new mtime -> new key
    PreprocessCache("s2").get_or_build(paths, fn, tmp_path / "c")
    assert fn.calls == 9  # new settings -> new key
    PreprocessCache("s2").get_or_build(paths, fn, tmp_path / "c")
    assert fn.calls == 9


def test_cache_errors(tmp_path: Path) -> None:
    paths = _write_images(tmp_path, 2)
    with pytest.raises(DataError, match="cannot read"):
        PreprocessCache("s").get_or_build(
            [*paths, str(tmp_path / "gone.png")], _Counting(), tmp_path
        )
    with pytest.raises(ValueError, match="uint8"):
        PreprocessCache("s").get_or_build(paths, lambda p: np.zeros((3, 4, 4)), tmp_path / "c")


def _build_in_child(args: tuple[list[str], str, str]) -> str:
    paths, cache_dir, log = args

    def fn(path: str) -> np.ndarray:
        with open(log, "a") as fh:  # O_APPEND: one line per decode, from either process
            fh.write(path + "\n")
        return _Counting()(path)

    out = PreprocessCache("race").get_or_build(paths, fn, cache_dir)
    return str(int(np.asarray(out, dtype=np.int64).sum()))


def test_cache_two_processes_build_once(tmp_path: Path) -> None:
    paths = _write_images(tmp_path, 30)
    log = tmp_path / "decodes.log"
    args = (paths, str(tmp_path / "cache"), str(log))
    with mp.get_context("fork").Pool(2) as pool:
        sums = pool.map(_build_in_child, [args, args], chunksize=1)
    assert sums[0] == sums[1]
    assert len(log.read_text().splitlines()) == 30, "both processes decoded the images"

"""Images with no content: all black, or black once the black border is removed.

A fundus photograph is a bright disc on a black border; a file that is black everywhere (a
failed export, a dark frame) or holds only scattered bright pixels (noise, a few burned-in
characters) passes every format check, yet teaches the model nothing and skews its metrics. An
image is *black* when, after a 5x5 median filter (the one the border crop uses, which removes
isolated bright pixels), less than `min_content` of its area is brighter than the border
threshold. Each image is decoded at a reduced size (JPEG draft mode), and the answers are cached
per file (path, size, mtime), so a sweep's pre-flight check costs little after the first.

Every task that reads 2-D image files applies one policy (`without_black`, its config's
``data.black_images``): ``error`` names the black images (exit 2), ``skip`` leaves them out of the
case list and counts them (`report_skipped`, once, on stderr).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from orchestrator.errors import DataError

PROBE_SIDE = 128  # decode at about this size: enough to tell a disc from noise
_SHOW = 5
_VERSION = 1  # bump when the rule changes (invalidates cached answers)
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I", "F")  # more than 8 bits per pixel
BORDER = "the border threshold"

BlackPolicy = Literal["error", "skip"]
# Each row's (text naming it in the message, DataError `where`), from the whole case frame.
Labeller = Callable[[pd.DataFrame], list[tuple[str, str | None]]]


def is_black(path: str | Path, threshold: int, min_content: float, stretch: bool = False) -> bool:
    """True when less than `min_content` of the image is brighter than `threshold` (0..255)
    after a median filter; unreadable files are not judged here (`verify_images` names them).
    `stretch`: judge 16-bit and float images min-max scaled to 8 bits, as a loader that scales
    them so sees them (otherwise they are clipped to 0..255, as ``convert("RGB")`` does)."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (PROBE_SIDE, PROBE_SIDE))  # JPEG: decode at 1/2..1/8 scale
            img.thumbnail((PROBE_SIDE, PROBE_SIDE))
            level = _level(img, stretch)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        return False
    if min(level.shape) >= 5:
        level = cv2.medianBlur(level, 5)
    return float((level > threshold).mean()) < min_content


def _level(img: Image.Image, stretch: bool) -> np.ndarray:
    """Each pixel's brightest channel, uint8."""
    if stretch and img.mode in _WIDE_MODES:
        arr = np.asarray(img, dtype=np.float64)
        span = float(arr.max() - arr.min()) or 1.0
        return np.ascontiguousarray(((arr - arr.min()) / span * 255 + 0.5).astype(np.uint8))
    rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(rgb.max(axis=2))


def black_rows(
    paths: Sequence[str],
    *,
    threshold: int = 10,
    min_content: float = 0.01,
    cache_dir: Path | None = None,
    stretch: bool = False,
) -> list[int]:
    """Positions of the black images among `paths` (see the module docstring)."""
    rule: dict[str, Any] = {"version": _VERSION, "threshold": threshold, "min_content": min_content}
    if stretch:  # only then: earlier cached answers keep their keys
        rule["stretch"] = True
    cached = _read_cache(cache_dir, rule, paths)
    if cached is not None:
        return cached

    def judge(path: str) -> bool:
        return is_black(path, threshold, min_content, stretch)

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        flags = list(pool.map(judge, paths))
    rows = [i for i, black in enumerate(flags) if black]
    _write_cache(cache_dir, rule, paths, rows)
    return rows


def line_labels(frame: pd.DataFrame) -> list[tuple[str, str | None]]:
    """Rows named by manifest line and path (a frame without lines: the path alone)."""
    lines = frame["line"].tolist() if "line" in frame else [None] * len(frame)
    paths = frame["path"].astype(str).tolist()
    return [
        (
            (f"line {line}: " if line is not None else "") + path,
            f"line {line}, column 'path'" if line is not None else None,
        )
        for line, path in zip(lines, paths, strict=True)
    ]


def black_image_error(
    frame: pd.DataFrame,
    rows: list[int],
    source: str | Path,
    *,
    what: str = BORDER,
    labels: Labeller = line_labels,
) -> DataError:
    """The exit-2 message naming the black images (by default by manifest line, or path)."""
    named = labels(frame)
    shown = "; ".join(named[i][0] for i in rows[:_SHOW])
    more = f" (and {len(rows) - _SHOW} more)" if len(rows) > _SHOW else ""
    return DataError(
        f"{len(rows)} of {len(frame)} images are black (no content brighter than {what}): "
        f"{shown}{more}; remove them, or set data.black_images: skip to leave them out and count "
        "them",
        source=source,
        where=named[rows[0]][1],
    )


def without_black(
    frame: pd.DataFrame,
    policy: BlackPolicy,
    *,
    threshold: int,
    cache_dir: Path | None,
    source: str | Path,
    column: str = "path",
    what: str = BORDER,
    labels: Labeller = line_labels,
    min_content: float = 0.01,
    stretch: bool = False,
) -> tuple[pd.DataFrame, int]:
    """`frame` without its black images (`column` holds the files) and how many were left out.

    Raises:
        DataError: policy ``error`` and some image is black, naming them (`labels` of the rows).
    """
    paths = frame[column].astype(str).tolist()
    rows = black_rows(
        paths, threshold=threshold, min_content=min_content, cache_dir=cache_dir, stretch=stretch
    )
    if not rows:
        return frame.reset_index(drop=True), 0
    if policy == "error":
        raise black_image_error(frame, rows, source, what=what, labels=labels)
    return frame.drop(index=frame.index[rows]).reset_index(drop=True), len(rows)


def report_skipped(task: str, count: int) -> None:
    """The one stderr line of the driver's check (policy skip)."""
    if count:
        print(f"{task}: left out {count} black image(s)", file=sys.stderr)


def _key(rule: dict[str, Any], paths: Sequence[str]) -> str:
    digest = hashlib.sha256(json.dumps(rule, sort_keys=True).encode())
    for path in paths:
        try:
            st = os.stat(path)
            digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        except OSError:
            digest.update(f"{path}\0missing\0".encode())
    return digest.hexdigest()[:24]


def _read_cache(
    folder: Path | None, rule: dict[str, Any], paths: Sequence[str]
) -> list[int] | None:
    if folder is None:
        return None
    try:
        data = json.loads((folder / f"{_key(rule, paths)}.json").read_text())
        return [int(i) for i in data["black"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cache(
    folder: Path | None, rule: dict[str, Any], paths: Sequence[str], rows: list[int]
) -> None:
    if folder is None:
        return
    from tasks.common.io import atomic_write_json

    with contextlib.suppress(OSError):  # a read-only cache only costs the next check its time
        atomic_write_json(folder / f"{_key(rule, paths)}.json", {"black": rows})

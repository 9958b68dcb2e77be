"""Images with no content: all black, or black once the black border is removed.

A fundus photograph is a bright disc on a black border; a file that is black everywhere (a
failed export, a dark frame) or holds only scattered bright pixels (noise, a few burned-in
characters) passes every format check, yet teaches the model nothing and skews its metrics. An
image is *black* when, after a 5x5 median filter (the one the border crop uses, which removes
isolated bright pixels), less than `min_content` of its area is brighter than the border
threshold. Each image is decoded at a reduced size (JPEG draft mode), and the answers are cached
per file (path, size, mtime), so a sweep's pre-flight check costs little after the first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from orchestrator.errors import DataError

PROBE_SIDE = 128  # decode at about this size: enough to tell a disc from noise
_SHOW = 5
_VERSION = 1  # bump when the rule changes (invalidates cached answers)


def is_black(path: str | Path, threshold: int, min_content: float) -> bool:
    """True when less than `min_content` of the image is brighter than `threshold` (0..255)
    after a median filter; unreadable files are not judged here (`verify_images` names them)."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (PROBE_SIDE, PROBE_SIDE))  # JPEG: decode at 1/2..1/8 scale
            img.thumbnail((PROBE_SIDE, PROBE_SIDE))
            rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        return False
    level = np.ascontiguousarray(rgb.max(axis=2))
    if min(level.shape) >= 5:
        level = cv2.medianBlur(level, 5)
    return float((level > threshold).mean()) < min_content


def black_rows(
    paths: Sequence[str],
    *,
    threshold: int = 10,
    min_content: float = 0.01,
    cache_dir: Path | None = None,
) -> list[int]:
    """Positions of the black images among `paths` (see the module docstring)."""
    rule = {"version": _VERSION, "threshold": threshold, "min_content": min_content}
    cached = _read_cache(cache_dir, rule, paths)
    if cached is not None:
        return cached

    def judge(path: str) -> bool:
        return is_black(path, threshold, min_content)

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        flags = list(pool.map(judge, paths))
    rows = [i for i, black in enumerate(flags) if black]
    _write_cache(cache_dir, rule, paths, rows)
    return rows


def black_image_error(frame: pd.DataFrame, rows: list[int], source: str | Path) -> DataError:
    """The exit-2 message naming the black images by manifest line (or path)."""
    lines = frame["line"].tolist() if "line" in frame else [None] * len(frame)
    paths = frame["path"].astype(str).tolist()
    shown = "; ".join(
        (f"line {lines[i]}: " if lines[i] is not None else "") + paths[i] for i in rows[:_SHOW]
    )
    more = f" (and {len(rows) - _SHOW} more)" if len(rows) > _SHOW else ""
    first = lines[rows[0]]
    return DataError(
        f"{len(rows)} of {len(frame)} images are black (no content brighter than the border "
        f"threshold): {shown}{more}; remove them, or set data.black_images: skip to leave them "
        "out and count them",
        source=source,
        where=f"line {first}, column 'path'" if first is not None else None,
    )


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

"""Attention-map overlays: which validation slices are drawn, and the three-panel picture.

Each overlay is one PNG: the slice | the slice with its lung mask (green) | the slice with the
attention map M (upsampled bilinearly, jet colour map, half transparent). Drawn with OpenCV, not
matplotlib, because overlays are rewritten at every new best epoch of every fold.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from numpy.typing import NDArray
from PIL import Image

from tasks.common.io import atomic_write

MIN_PANEL = 128  # small slices are enlarged (nearest neighbour) to at least this many pixels


def attention_sample(frame: pd.DataFrame, k: int) -> list[int]:
    """Row positions of `k` fixed cases of a split: evenly spaced over each label's cases in
    ``case`` order, labels taking turns, so every epoch and every run draws the same slices."""
    if k <= 0 or frame.empty:
        return []
    order = frame.reset_index(drop=True).sort_values("case", kind="stable")
    by_label = order.groupby("label", sort=True) if "label" in order.columns else [(0, order)]
    per = -(-k // len(by_label))  # ceil(k / labels)
    picks = []
    for _, group in by_label:
        rows = group.index.to_list()
        spaced = np.unique(np.linspace(0, len(rows) - 1, min(per, len(rows))).round())
        picks.append([rows[int(i)] for i in spaced])
    turns = [r for tier in itertools.zip_longest(*picks) for r in tier if r is not None]
    return sorted(turns[:k])


def overlay(
    pixels: NDArray[np.uint8], mask: NDArray[np.uint8], attention: NDArray[np.floating]
) -> NDArray[np.uint8]:
    """RGB ``[S, 3S, 3]``: slice | lung mask | attention map M over the slice.

    Args:
        pixels: the windowed slice, ``[S, S]`` 0..255.
        mask: its lung mask, ``[S, S]`` 0/1.
        attention: M, ``[h, w]`` in [0, 1] (any size; upsampled to ``S x S``).
    """
    size = pixels.shape[::-1]
    grey = cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
    green = grey.copy()
    green[mask > 0] = (0.5 * green[mask > 0] + [0, 127, 0]).astype(np.uint8)
    att = cv2.resize(attention.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    heat = cv2.applyColorMap(np.rint(np.clip(att, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
    blend = cv2.addWeighted(grey, 0.5, heat, 0.5, 0.0)
    panel = np.concatenate([grey, green, blend], axis=1)
    factor = -(-MIN_PANEL // pixels.shape[0])
    if factor > 1:
        panel = np.repeat(np.repeat(panel, factor, axis=0), factor, axis=1)
    return panel


def save_png(rgb: NDArray[np.uint8], path: Path) -> Path:
    """Write an RGB array as PNG atomically."""
    return atomic_write(path, lambda tmp: Image.fromarray(rgb).save(tmp, format="PNG"))

"""Seed 002 preprocessing: black-border crop, central crop, vessel removal, resize; and its cache.

Order (as in the seed): crop the black border by a threshold (median-filtered, so noisy border
pixels do not defeat it), keep the central part to drop what the threshold left, optionally erase
the retinal vessels (the seed cites Nakagawa et al. 2006, vessel-erased images for optic-disc
detection), then resize to the model's input.

Vessel removal: vessels are thin dark lines in the green channel (the channel with the best
vessel contrast), so a morphological black-hat (closing minus image) with a disc wider than the
widest vessel responds to them and hardly to the broad disc, cup and macula; the response is
thresholded (Otsu by default) and the masked pixels are filled from their surroundings with
OpenCV's TELEA inpainting.

:class:`PreprocessCache` stores the preprocessed images of a file list once per settings in one
``.npy`` file that later trials memory-map instead of decoding again.
"""

from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image
from skimage.filters import threshold_otsu

from tasks.common.image_cache import CacheEntry
from tasks.common.image_cache import ImageCache as PreprocessCache

__all__ = [
    "CacheEntry",
    "PreprocessCache",
    "central_crop",
    "crop_fundus",
    "preprocess",
    "settings_key",
    "suppress_vessels",
    "vessel_response",
]

# Bump when the output of `preprocess` changes for the same settings: it invalidates caches.
PREPROCESS_VERSION = 1
KERNEL_REFERENCE_PX = 512  # `kernel` is in pixels of a 512-px image (the seed's input size)
_FOV_LEVEL = 10  # green/max below this is the black background around the fundus

UInt8Image = NDArray[np.uint8]


def crop_fundus(rgb: np.ndarray, threshold: int) -> np.ndarray:
    """Crop to the fundus: the bounding box of pixels brighter than ``threshold``.

    The brightness (max over channels) is median-filtered (5 x 5) first, so isolated noisy or
    JPEG-ringing pixels in the black border do not stretch the box to the image edge (which would
    also make one image crop differently after re-encoding). Images without such pixels (or too
    small to filter) are cropped by the unfiltered rule.
    """
    level = np.ascontiguousarray(rgb.max(axis=2), dtype=np.uint8)
    mask = cv2.medianBlur(level, 5) > threshold
    if not mask.any():
        mask = level > threshold
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return rgb
    return rgb[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def central_crop(rgb: np.ndarray, fraction: float) -> np.ndarray:
    """Keep the central ``fraction`` of the height and of the width (1.0 returns ``rgb``).

    Raises:
        ValueError: ``fraction`` is not in (0, 1].
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"central_fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return rgb
    h, w = rgb.shape[:2]
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    top, left = (h - ch) // 2, (w - cw) // 2
    return rgb[top : top + ch, left : left + cw]


def _scaled_kernel(kernel: int, shape: tuple[int, ...]) -> int:
    """``kernel`` (pixels at 512 px) scaled to this image, odd and at least 3."""
    side = round(kernel * min(shape[:2]) / KERNEL_REFERENCE_PX)
    return max(3, side | 1)


def vessel_response(rgb: np.ndarray, kernel: int = 15) -> NDArray[np.float32]:
    """Black-hat of the green channel: high on thin dark lines narrower than the kernel.

    Args:
        rgb: RGB uint8 ``(H, W, 3)``.
        kernel: elliptical structuring element diameter in pixels of a 512-px image.
    """
    k = _scaled_kernel(kernel, rgb.shape)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    green = np.ascontiguousarray(rgb[..., 1])
    # The background is black: closing would "fill" the rim of the fundus as a dark gap. Give
    # the background the median retina level first so only vessels respond.
    fov = rgb.max(axis=2) > _FOV_LEVEL
    if fov.any() and not fov.all():
        green = green.copy()
        green[~fov] = np.uint8(np.median(green[fov]))
    tophat = cv2.morphologyEx(green, cv2.MORPH_BLACKHAT, disc)
    out = tophat.astype(np.float32)
    out[~fov] = 0.0
    return out


def suppress_vessels(
    rgb: np.ndarray,
    kernel: int = 15,
    threshold: float | None = None,
    inpaint_radius: int = 3,
) -> np.ndarray:
    """Erase retinal vessels: black-hat vessel map, threshold, TELEA inpainting.

    Args:
        rgb: RGB uint8 ``(H, W, 3)``.
        kernel: black-hat disc diameter in pixels of a 512-px image (scaled to this image);
            it must exceed the widest vessel (~8 px at 512 px).
        threshold: black-hat level (green-channel units, 0..255) above which a pixel is a
            vessel; None picks it by Otsu's method over the fundus pixels.
        inpaint_radius: neighbourhood radius of the inpainting, in pixels.

    Returns:
        RGB uint8 of the same shape (a copy; unchanged when no vessel pixel is found).
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {rgb.shape}")
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    response = vessel_response(rgb, kernel)
    inside = response[rgb.max(axis=2) > _FOV_LEVEL]
    if inside.size == 0 or inside.max() <= 0:
        return rgb.copy()
    level = float(threshold_otsu(inside)) if threshold is None else float(threshold)
    # One pixel of dilation also takes the blurred vessel fringe, which Otsu leaves behind.
    ellipse = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    mask = np.asarray(cv2.dilate((response > level).astype(np.uint8), ellipse), dtype=np.uint8)
    if not mask.any():
        return rgb.copy()
    return np.asarray(cv2.inpaint(rgb, mask, inpaint_radius, cv2.INPAINT_TELEA), dtype=np.uint8)


def preprocess(
    rgb: np.ndarray,
    *,
    crop_border: bool,
    border_threshold: int,
    central_fraction: float,
    vessels: bool,
    size: int,
) -> UInt8Image:
    """Border crop -> central crop -> vessel suppression -> bilinear resize; CHW uint8.

    Args:
        rgb: RGB uint8 ``(H, W, 3)`` as decoded from the file.
        crop_border: crop to the pixels brighter than ``border_threshold``.
        border_threshold: 0..255 level of the black border.
        central_fraction: keep this central share of height and width (1.0 keeps all).
        vessels: erase vessels (:func:`suppress_vessels` with its defaults).
        size: output side in pixels.

    Returns:
        ``(3, size, size)`` uint8, C-contiguous.
    """
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    if crop_border:
        rgb = crop_fundus(rgb, border_threshold)
    rgb = central_crop(rgb, central_fraction)
    if vessels:
        rgb = suppress_vessels(rgb)
    resized = Image.fromarray(np.ascontiguousarray(rgb)).resize(
        (size, size), Image.Resampling.BILINEAR
    )
    return np.ascontiguousarray(np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1))


def settings_key(
    *,
    crop_border: bool,
    border_threshold: int,
    central_fraction: float,
    vessels: bool,
    size: int,
) -> str:
    """A stable 16-hex-digit hash of the :func:`preprocess` settings (and its version)."""
    settings = {
        "version": PREPROCESS_VERSION,
        "crop_border": bool(crop_border),
        "border_threshold": int(border_threshold) if crop_border else None,
        "central_fraction": float(central_fraction),
        "vessels": bool(vessels),
        "size": int(size),
    }
    blob = json.dumps(settings, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]

"""Anomaly scores and emphasis maps for likelihood models (seed 001: Glow on chest X-rays).

* ``nll_bpd``: negative log-likelihood in bits per dimension under a :class:`~.glow.Glow`.
* ``png_bits_per_dim``: lossless PNG size in bits per dimension, the input-complexity estimate of
  Serrà et al. (ICLR 2020): likelihood models give simple images high likelihood whatever their
  content, so ``S(x) = nll_bpd(x) - L(x)`` (``kind="complexity"``) corrects for complexity.
* ``emphasis_map`` / ``overlay_png``: the per-pixel NLL smoothed and normalised, blended over the
  image, as seed 001's "anomaly emphasis" images for radiologists.

Larger scores always mean "more anomalous".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from tasks.anomaly.glow import Glow, bits_per_dim, preprocess

__all__ = ["anomaly_score", "emphasis_map", "nll_bpd", "overlay_png", "png_bits_per_dim"]


def _as_batch(x: NDArray[Any] | torch.Tensor, channels: int) -> torch.Tensor:
    """[N, C, H, W] tensor from [N, H, W] (grayscale) or [N, C, H, W]."""
    t = torch.as_tensor(np.asarray(x)) if isinstance(x, np.ndarray) else x
    if t.ndim == 3 and channels == 1:
        t = t[:, None]
    if t.ndim != 4 or t.shape[1] != channels:
        raise ValueError(f"expected [N, {channels}, H, W] images, got {tuple(t.shape)}")
    return t


@torch.no_grad()
def nll_bpd(
    model: Glow, x: NDArray[Any] | torch.Tensor, n_bits: int = 8, batch_size: int = 32
) -> NDArray[np.float64]:
    """Per-image NLL in bits per dimension, deterministic (bin-centre dequantisation).

    Args:
        model: a trained Glow (put in eval mode here).
        x: uint8 images (or floats in [0, 1]), [N, C, H, W] or [N, H, W] for one channel.
        n_bits: as in training.
        batch_size: images per forward pass.
    """
    batch = _as_batch(x, model.in_channels)
    model.eval()
    device = next(model.parameters()).device
    dims = int(batch[0].numel())
    out = []
    for start in range(0, batch.shape[0], batch_size):
        y, const = preprocess(batch[start : start + batch_size].to(device), n_bits, noise=False)
        out.append(bits_per_dim(model.log_prob(y) + const, dims).double().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def png_bits_per_dim(images_uint8: ArrayLike) -> NDArray[np.float64]:
    """Lossless PNG size (OpenCV, compression level 9) in bits per dimension, per image.

    Args:
        images_uint8: [N, H, W] grayscale or [N, H, W, C] (C = 1, 3 or 4) uint8 images.
    """
    arr = np.asarray(images_uint8)
    if arr.dtype != np.uint8 or arr.ndim not in (3, 4):
        raise ValueError(f"expected uint8 [N, H, W(, C)] images, got {arr.dtype} {arr.shape}")
    if arr.ndim == 4 and arr.shape[3] not in (1, 3, 4):
        raise ValueError(f"channels must be last (1, 3 or 4), got shape {arr.shape}")
    out = np.empty(arr.shape[0], dtype=np.float64)
    for i, img in enumerate(arr):
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        if not ok:
            raise ValueError(f"PNG encoding failed for image {i}")
        out[i] = 8.0 * buf.size / img.size
    return out


def anomaly_score(
    nll_bpd: ArrayLike,
    complexity_bpd: ArrayLike | None = None,
    kind: Literal["nll", "complexity"] = "nll",
) -> NDArray[np.float64]:
    """Anomaly score per image: ``nll_bpd`` itself, or ``nll_bpd - complexity_bpd`` (Serrà S).

    Raises:
        ValueError: unknown ``kind``, missing or mismatched ``complexity_bpd``.
    """
    nll = np.asarray(nll_bpd, dtype=np.float64)
    if kind == "nll":
        return nll
    if kind != "complexity":
        raise ValueError(f"kind must be 'nll' or 'complexity', got {kind!r}")
    if complexity_bpd is None:
        raise ValueError("kind='complexity' needs complexity_bpd (see png_bits_per_dim)")
    comp = np.asarray(complexity_bpd, dtype=np.float64)
    if comp.shape != nll.shape:
        raise ValueError(f"nll_bpd and complexity_bpd differ in shape: {nll.shape}, {comp.shape}")
    return nll - comp


def emphasis_map(pixel_nll: ArrayLike, sigma: float) -> NDArray[np.float64]:
    """Gaussian-smoothed per-pixel NLL, min-max normalised to [0, 1] per image.

    Args:
        pixel_nll: [H, W] or [N, H, W] (e.g. ``Glow.pixel_nll_map``), torch or numpy.
        sigma: Gaussian sigma in pixels (0 = no smoothing); only the image axes are smoothed.

    Returns:
        The same shape; a constant image maps to zeros.
    """
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if isinstance(pixel_nll, torch.Tensor):
        pixel_nll = pixel_nll.detach().cpu().numpy()
    arr = np.asarray(pixel_nll, dtype=np.float64)
    if arr.ndim not in (2, 3):
        raise ValueError(f"expected [H, W] or [N, H, W], got shape {arr.shape}")
    batch = arr[None] if arr.ndim == 2 else arr
    smooth = ndimage.gaussian_filter(batch, sigma=(0, sigma, sigma), mode="nearest")
    lo = smooth.min(axis=(1, 2), keepdims=True)
    span = smooth.max(axis=(1, 2), keepdims=True) - lo
    out = np.where(span > 0, (smooth - lo) / np.where(span > 0, span, 1.0), 0.0)
    return out[0] if arr.ndim == 2 else out


def overlay_png(
    image: ArrayLike,
    emphasis: ArrayLike,
    path: str | Path,
    *,
    alpha: float = 0.6,
    cmap: str = "jet",
) -> Path:
    """Write an RGB PNG: ``image`` with ``emphasis`` (in [0, 1]) blended in as a colour map.

    The blend weight is ``alpha * emphasis`` per pixel, so unremarkable regions keep the original
    image and only the emphasised ones are coloured.

    Args:
        image: [H, W] grayscale or [H, W, 3] RGB, uint8 or float in [0, 1].
        emphasis: [H, W] in [0, 1] (see :func:`emphasis_map`).
        path: output PNG file (folders are created).
        alpha: maximal opacity of the colour map.
        cmap: a matplotlib colour map name.
    """
    from matplotlib import colormaps
    from PIL import Image

    img = np.asarray(image)
    img = img.astype(np.float64) / 255.0 if img.dtype == np.uint8 else img.astype(np.float64)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    emph = np.clip(np.asarray(emphasis, dtype=np.float64), 0.0, 1.0)
    if img.ndim != 3 or img.shape[2] != 3 or emph.shape != img.shape[:2]:
        raise ValueError(f"image {img.shape} and emphasis {emph.shape} do not match as [H, W]")
    colour = colormaps[cmap](emph)[..., :3]
    weight = (alpha * emph)[..., None]
    rgb = np.clip((1.0 - weight) * np.clip(img, 0, 1) + weight * colour, 0.0, 1.0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((rgb * 255.0 + 0.5).astype(np.uint8)).save(path)
    return path

"""Synthetic chest X-rays and paired PET/CT slices for the anomaly family (seed 001).

``generate_cxr``: frontal chest radiographs (grayscale): dark air outside a bright body, two
darker lung fields with vascular texture and hila, curved rib bands, clavicles, the spine and
mediastinum, a heart shadow and diaphragm domes; anatomy varies per patient, exposure and gamma
by +-5 %, and the sensor noise not at all (a per-image noise level would dominate any likelihood:
its entropy is most of the bits/dim). Abnormal images carry 1-3 nodules or masses inside the
lungs (radius 3.5-10 % of the image, added density 0.1-0.3 of the display range, mottled by a
+-20 % pixel-scale texture that normal lungs never show). A simple model of the normal images
(PCA residual) finds them clearly above chance but not perfectly (AUC ~0.85 at 64 px); the
demo's small Glow (configs/glow_demo.yaml: 32 px, ~20 s of training) reaches an AUC of ~0.7 by
NLL and ~0.8 by the peak of its smoothed pixel-NLL map. (An earlier version with faint, smooth
lesions of 2.5-11 % and a per-image noise level left a one-minute Glow at chance.)

``generate_petct``: axial slices at a random level between mid-thorax and upper abdomen. The CT
holds the body, subcutaneous fat, lungs, heart, aorta, liver, spleen, kidneys, vertebra and
sometimes bowel gas, each with its own HU-like value and noise. The PET (SUV-like) is predictable
from the CT organ by organ (liver ~2.3, spleen ~1.9, marrow ~1.6, blood pool ~1.8, muscle ~0.7,
fat ~0.35, lung ~0.4) with a per-patient gain, and two organs whose uptake varies strongly between
patients (myocardium, kidneys): the uncertainty a model must learn. Abnormal slices add 1-3 hot
spots (lesions) that are *not* visible in the CT; their contrast to the local background varies,
so lesions in the lung are easy and those next to the heart or in the liver are hard (a per-HU
lookup model of normal uptake reaches ~0.7 sensitivity at 3 FP/case at z >= 3).

Layout (``out`` is created):

* CXR: ``images/cxr_00000.png`` (8-bit grayscale), ``masks/cxr_00000.png`` (0/255, abnormal
  only), ``labels.csv`` with ``path,label,mask,patient_id`` (label 1 = abnormal, ``mask`` empty
  for normals; paths relative to ``out``).
* PET/CT: ``ct/petct_00000.png`` (16-bit grayscale PNG, value = HU + 1024, see
  :data:`CT_OFFSET`), ``pet/petct_00000.npy`` (float32 SUV), ``masks/petct_00000.png`` (0/255,
  abnormal only), ``pairs.csv`` with ``ct,pet,mask,label,patient_id``.

One image per patient. Every case depends only on ``(seed, index)`` through its own random stream
and PNGs carry no timestamps: the same arguments give byte-identical files.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image

__all__ = ["CT_OFFSET", "generate_cxr", "generate_petct", "render_cxr", "render_petct"]

CT_OFFSET = 1024  # stored CT value = HU + CT_OFFSET (16-bit PNG)
MIN_SIZE, MAX_SIZE = 32, 1024
_SENSOR_NOISE = 0.006  # std of the chest X-ray sensor noise, fraction of the display range
_MOTTLE = 0.2  # relative pixel-scale density variation inside a chest X-ray lesion
Float = NDArray[np.float32]


def _grid(size: int) -> tuple[Float, Float]:
    """Normalised pixel-centre coordinates (u = x / size, v = y / size)."""
    v, u = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size
    return u, v


def _ellipse(
    u: Float, v: Float, c: tuple[float, float], r: tuple[float, float], edge: float
) -> Float:
    """Anti-aliased filled ellipse in [0, 1]; ``edge`` is the edge width in image fractions."""
    d = np.sqrt(((u - c[0]) / r[0]) ** 2 + ((v - c[1]) / r[1]) ** 2)
    return np.clip(0.5 + (1.0 - d) * min(r) / edge, 0.0, 1.0).astype(np.float32)


def _noise(rng: np.random.Generator, size: int, cells: int) -> Float:
    """Smooth noise in about [-1, 1]: a random ``cells`` grid upsampled bicubically."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    up = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.asarray(up, dtype=np.float32) / np.float32(1.5)


def _blur(img: Float, sigma_px: float) -> Float:
    out = cv2.GaussianBlur(img, (0, 0), sigmaX=max(sigma_px, 1e-3), borderType=cv2.BORDER_REFLECT)
    return np.asarray(out, dtype=np.float32)


def _check(n: int, size: int, fraction: float) -> None:
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be in {MIN_SIZE}..{MAX_SIZE} pixels, got {size}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"abnormal_fraction must be in [0, 1], got {fraction}")


def _plan(n: int, fraction: float, seed: int) -> tuple[NDArray[np.int64], list[Any]]:
    """Exactly ``round(fraction * n)`` abnormal cases (shuffled) and one stream per case."""
    root = np.random.SeedSequence(seed)
    plan_seq, case_seq = root.spawn(2)
    labels = np.zeros(n, dtype=np.int64)
    labels[: round(fraction * n)] = 1
    np.random.default_rng(plan_seq).shuffle(labels)
    return labels, case_seq.spawn(n)


def _sample_in(rng: np.random.Generator, region: NDArray[np.bool_]) -> tuple[int, int]:
    ys, xs = np.nonzero(region)
    k = int(rng.integers(ys.size))
    return int(ys[k]), int(xs[k])


def _write_png(path: Path, arr: NDArray[Any]) -> None:
    # compress_level fixed so the bytes do not depend on Pillow's default.
    Image.fromarray(arr).save(path, format="PNG", compress_level=6)


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


# --- chest X-ray -------------------------------------------------------------------------------
def _cxr_anatomy(rng: np.random.Generator, size: int) -> tuple[Float, Float]:
    """(image in about [0, 1], lung mask in [0, 1]) of a normal frontal chest radiograph."""
    u, v = _grid(size)
    edge = 1.5 / size
    sx, sy = rng.uniform(0.92, 1.08), rng.uniform(0.92, 1.08)  # body habitus
    cx, cy = 0.5 + rng.normal(0, 0.015), 0.5 + rng.normal(0, 0.015)
    body = _ellipse(u, v, (cx, cy + 0.1), (0.46 * sx, 0.62 * sy), edge)
    img = 0.06 + 0.5 * body * (1.0 + 0.08 * _noise(rng, size, 4))
    # Lungs: tall ellipses, the patient's left (image right) narrowed by the heart; each ends
    # above its diaphragm dome (a parabola; the right dome sits higher), below which the
    # abdomen is bright across the whole body.
    lungs = np.zeros_like(u)
    dome_line = np.zeros_like(u)
    for side, width in ((-1, 0.16), (1, 0.145)):
        lx = cx + side * 0.19 * sx
        ly = cy - 0.02 + rng.normal(0, 0.01)
        lung = _ellipse(u, v, (lx, ly), (width * sx * rng.uniform(0.9, 1.1), 0.31 * sy), edge)
        d0 = ly + 0.22 * sy + (0.025 if side > 0 else 0.0) + rng.normal(0, 0.015)
        half = (u - cx) * side > 0
        dome_line = np.where(half, d0 + 1.5 * (u - lx) ** 2, dome_line)
        lungs = np.maximum(lungs, lung * half)
    dome = np.clip(0.5 + (v - dome_line) / edge, 0, 1).astype(np.float32)
    lungs *= 1.0 - dome
    texture = 0.05 * _noise(rng, size, 12) + 0.03 * _noise(rng, size, 24)
    img -= lungs * (rng.uniform(0.26, 0.34) + texture)
    img += 0.12 * dome * body
    for side in (-1, 1):  # hila: vessels fanning out from the mediastinum
        hx, hy = cx + side * 0.1, cy - 0.02
        hila = np.exp(-(((u - hx) / 0.05) ** 2 + ((v - hy) / 0.09) ** 2))
        img += 0.1 * hila * lungs
    # Ribs: periodic bands bending down laterally, brighter over the lungs.
    w = np.abs(u - cx)
    bend = v + rng.uniform(0.3, 0.5) * w - rng.uniform(1.0, 1.4) * w**2  # arcs, concave down
    t = bend / rng.uniform(0.075, 0.09) + rng.uniform(0, 1)
    ribs = np.clip((np.cos(2 * np.pi * t) - 0.45) / 0.55, 0, 1) * (w < 0.4 * sx) * (v < 0.8)
    img += ribs * (0.05 + 0.08 * lungs) * body
    # Clavicles: bright bars from the manubrium outwards and up.
    for side in (-1, 1):
        x0, x1 = cx + side * 0.05, cx + side * 0.3
        on = (u - x0) * side >= 0
        on &= (u - x1) * side <= 0
        yc = 0.2 + (u - x0) * side * -0.25
        img += 0.12 * np.exp(-(((v - yc) / 0.018) ** 2)) * on
    # Mediastinum, spine and heart shadow (to the patient's left, i.e. image right).
    img += 0.18 * np.exp(-(((u - cx) / 0.06) ** 2)) * body * (v > 0.12)
    heart_c = (cx + 0.06, cy + 0.12 + rng.normal(0, 0.01))
    heart_r = (0.15 * rng.uniform(0.85, 1.15), 0.12 * rng.uniform(0.9, 1.1))
    heart = _ellipse(u, v, heart_c, heart_r, 3 * edge)
    img += heart * np.clip(0.6 - img, 0, None) * 0.8
    return img.astype(np.float32), (lungs * (1.0 - heart)).astype(np.float32)


def _cxr_lesions(
    rng: np.random.Generator, size: int, lungs: Float
) -> tuple[Float, NDArray[np.bool_]]:
    """Added density and the lesion mask of 1-3 nodules or masses inside the lungs."""
    u, v = _grid(size)
    add = np.zeros((size, size), np.float32)
    mask = np.zeros((size, size), bool)
    inner = cv2.erode((lungs > 0.9).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    if not inner.any():
        inner = lungs > 0.5
    for _ in range(int(rng.choice([1, 1, 1, 2, 2, 3]))):
        y, x = _sample_in(rng, inner)
        r = float(np.exp(rng.uniform(np.log(0.035), np.log(0.1))))  # nodules to masses
        contrast = rng.uniform(0.1, 0.3)
        d = np.sqrt((u - (x + 0.5) / size) ** 2 + (v - (y + 0.5) / size) ** 2)
        lobulated = 1.0 + 0.15 * _noise(rng, size, 6)  # irregular outline
        x_edge = np.clip((d - r * lobulated) / (0.2 * r + 0.4 / size), -30, 30)
        profile = 1.0 / (1.0 + np.exp(x_edge))
        # Heterogeneous density (mottling): pixel-scale texture that normal lungs never show.
        mottle = 1.0 + _MOTTLE * rng.standard_normal((size, size)).astype(np.float32)
        add += contrast * profile * mottle
        mask |= profile >= 0.5
    return add, mask


def render_cxr(
    rng: np.random.Generator, size: int, abnormal: bool = False
) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
    """One synthetic chest X-ray (uint8 [size, size]) and its lesion mask (empty if normal)."""
    img, lungs = _cxr_anatomy(rng, size)
    mask = np.zeros((size, size), bool)
    if abnormal:
        add, mask = _cxr_lesions(rng, size, lungs)
        img = img + add
    # Exposure and gamma vary a little, sensor noise not at all: a per-image noise level would
    # dominate every likelihood (its entropy is most of the bits/dim) and hide the lesions.
    img = np.clip(img * rng.uniform(0.95, 1.05), 0, 1) ** rng.uniform(0.95, 1.05)
    img = img + rng.normal(0, _SENSOR_NOISE, img.shape)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8), mask


def generate_cxr(
    out: Path, n: int = 240, size: int = 64, seed: int = 0, abnormal_fraction: float = 0.3
) -> Path:
    """Write ``n`` synthetic chest X-rays (and lesion masks) under ``out``; return labels.csv.

    Args:
        out: output folder (layout in the module docstring).
        n: number of images (one per patient).
        size: image height and width in pixels (32..1024).
        seed: random seed; the same arguments give byte-identical files.
        abnormal_fraction: fraction of abnormal images (exactly ``round(fraction * n)``).
    """
    _check(n, size, abnormal_fraction)
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    labels, seqs = _plan(n, abnormal_fraction, seed)
    rows: list[list[str]] = []
    for i, (label, seq) in enumerate(zip(labels, seqs, strict=True)):
        img, mask = render_cxr(np.random.default_rng(seq), size, bool(label))
        rel, mrel = f"images/cxr_{i:05d}.png", f"masks/cxr_{i:05d}.png" if label else ""
        _write_png(out / rel, img)
        if label:
            _write_png(out / mrel, (mask * 255).astype(np.uint8))
        rows.append([rel, str(int(label)), mrel, f"P{i:05d}"])
    return _write_csv(out / "labels.csv", ["path", "label", "mask", "patient_id"], rows)


# --- PET/CT ------------------------------------------------------------------------------------
# Organ: (HU, normal SUV). Myocardium and kidneys get per-patient SUVs in _pet_uptake.
_HU_SUV = {
    "air": (-1000.0, 0.0),
    "fat": (-100.0, 0.35),
    "soft": (40.0, 0.7),
    "lung": (-850.0, 0.4),
    "blood": (40.0, 1.8),
    "myocardium": (55.0, 3.0),
    "liver": (65.0, 2.3),
    "spleen": (50.0, 1.9),
    "kidney": (130.0, 4.0),
    "bone": (600.0, 1.6),
    "gas": (-1000.0, 0.05),
}


def _petct_organs(rng: np.random.Generator, size: int) -> dict[str, Float]:
    """Soft organ masks of one axial slice, ``kind[:instance]`` -> mask; later masks paint over
    earlier ones. ``body`` is the outline (filled with fat), ``soft`` the muscle/organ core."""
    u, v = _grid(size)
    e = 1.2 / size
    t = rng.uniform(0.0, 1.0)  # slice level: 0 mid-thorax .. 1 kidneys
    cx, cy = 0.5 + rng.normal(0, 0.015), 0.52 + rng.normal(0, 0.015)
    bx, by = 0.42 * rng.uniform(0.9, 1.08), 0.3 * rng.uniform(0.9, 1.1)
    organs: dict[str, Float] = {"body": _ellipse(u, v, (cx, cy), (bx, by), e)}
    organs["soft"] = _ellipse(u, v, (cx, cy), (bx - 0.035, by - 0.03), e)
    lung_s = max(0.0, 1.0 - 1.3 * t)
    heart_s = max(0.0, 1.0 - 1.6 * t)
    liver_s = float(np.clip((t - 0.15) * 1.6, 0, 1))
    if lung_s > 0.05:
        for side in (-1, 1):
            c = (cx + side * 0.19, cy - 0.03)
            organs[f"lung:{side}"] = _ellipse(u, v, c, (0.13 * lung_s**0.5, 0.2 * lung_s), e)
    if heart_s > 0.1:
        c = (cx + 0.05 + rng.normal(0, 0.01), cy + 0.01)
        r = 0.13 * heart_s**0.5 * rng.uniform(0.9, 1.1)
        organs["fat:heart"] = _ellipse(u, v, c, (r + 0.02, 0.85 * r + 0.02), e)  # pericardial
        organs["myocardium"] = _ellipse(u, v, c, (r, 0.85 * r), e)
        organs["blood"] = _ellipse(u, v, c, (0.6 * r, 0.5 * r), e)  # ventricle inside
    organs["blood:aorta"] = _ellipse(u, v, (cx + 0.04, cy + 0.17), (0.028, 0.028), e)
    if liver_s > 0.05:
        c = (cx - 0.16, cy + 0.02)
        organs["liver"] = _ellipse(u, v, c, (0.22 * liver_s**0.5, 0.22 * liver_s**0.5), e)
        if t > 0.45:
            organs["spleen"] = _ellipse(u, v, (cx + 0.25, cy + 0.1), (0.07, 0.09), e)
        if t > 0.55 and rng.random() < 0.5:
            organs["gas"] = _ellipse(u, v, (cx + 0.12, cy - 0.08), (0.05, 0.035), e)
    if t > 0.7:
        for side in (-1, 1):
            c = (cx + side * 0.15, cy + 0.14)
            organs[f"kidney:{side}"] = _ellipse(u, v, c, (0.05, 0.07), e)
    organs["bone"] = _ellipse(u, v, (cx, cy + 0.22), (0.05, 0.045), e)
    return organs


def _kind(name: str) -> str:
    """Organ kind of a mask name: ``"lung:-1"`` -> ``"lung"``."""
    return name.split(":", 1)[0]


def _compose(organs: dict[str, Float], values: dict[str, float], outside: float) -> Float:
    """Paint the organs in order: later masks replace earlier values where they are 1."""
    body = organs["body"]
    img = np.full(body.shape, outside, np.float32) * (1 - body) + values["fat"] * body
    for name, mask in organs.items():
        if name != "body":
            img += (values[_kind(name)] - img) * mask
    return img


def _pet_uptake(rng: np.random.Generator) -> dict[str, float]:
    """Normal SUV per organ kind for one patient: global gain, per-organ jitter, and strongly
    patient-dependent myocardium (fasting state) and kidneys (urine)."""
    gain = float(np.exp(rng.normal(0, 0.15)))
    suv = {k: s * gain * float(np.exp(rng.normal(0, 0.08))) for k, (_, s) in _HU_SUV.items()}
    suv["myocardium"] = gain * float(np.exp(rng.normal(np.log(3.0), 0.6)))
    suv["kidney"] = gain * float(np.exp(rng.normal(np.log(4.0), 0.4)))
    return suv


def _pet_lesions(
    rng: np.random.Generator, organs: dict[str, Float], size: int
) -> tuple[Float, list[Float]]:
    """Unblurred hot-spot activity and each lesion's blob, 1-3 lesions inside the body."""
    u, v = _grid(size)
    inside = cv2.erode((organs["soft"] > 0.9).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    add = np.zeros((size, size), np.float32)
    blobs = []
    for _ in range(int(rng.choice([1, 1, 2, 2, 3]))):
        y, x = _sample_in(rng, inside)
        r = float(np.exp(rng.uniform(np.log(0.012), np.log(0.045)))) + 0.5 / size
        d2 = (u - (x + 0.5) / size) ** 2 + (v - (y + 0.5) / size) ** 2
        blob = np.exp(-0.5 * d2 / r**2).astype(np.float32)
        add += float(np.exp(rng.uniform(np.log(1.2), np.log(6.0)))) * blob
        blobs.append(blob)
    return add, blobs


def render_petct(
    rng: np.random.Generator, size: int, abnormal: bool = False
) -> tuple[NDArray[np.uint16], Float, NDArray[np.bool_]]:
    """One slice: CT (uint16, HU + CT_OFFSET), PET (float32 SUV) and lesion mask (bool)."""
    organs = _petct_organs(rng, size)
    hu = _compose(organs, {k: h for k, (h, _) in _HU_SUV.items()}, -1000.0)
    hu = _blur(hu, 0.4 * size / 64) + rng.normal(0, 12.0, hu.shape).astype(np.float32)
    ct = np.clip(np.round(hu + CT_OFFSET), 0, 65535).astype(np.uint16)
    pet = _compose(organs, _pet_uptake(rng), 0.0)
    mask = np.zeros((size, size), bool)
    fwhm_sigma = 1.0 * size / 64  # scanner resolution
    if abnormal:
        add, blobs = _pet_lesions(rng, organs, size)
        pet = pet + add
        for blob in blobs:
            seen = _blur(blob, fwhm_sigma)
            mask |= seen >= 0.5 * seen.max()
    pet = _blur(pet, fwhm_sigma)
    # Poisson-like noise: std grows with sqrt(activity), spatially correlated like PET noise.
    noise = _blur(rng.standard_normal(pet.shape).astype(np.float32), 0.7 * size / 64)
    noisy = pet + rng.uniform(0.25, 0.45) * np.sqrt(np.clip(pet, 0, None)) * noise
    return ct, np.clip(noisy, 0, None).astype(np.float32), mask


def generate_petct(
    out: Path, n: int = 120, size: int = 64, seed: int = 0, abnormal_fraction: float = 0.5
) -> Path:
    """Write ``n`` paired CT/PET slices (and lesion masks) under ``out``; return pairs.csv.

    Args:
        out: output folder (layout and formats in the module docstring).
        n: number of slices (one per patient).
        size: height and width in pixels (32..1024).
        seed: random seed; the same arguments give byte-identical files.
        abnormal_fraction: fraction of slices with lesions (exactly ``round(fraction * n)``).
    """
    _check(n, size, abnormal_fraction)
    out = Path(out)
    for sub in ("ct", "pet", "masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    labels, seqs = _plan(n, abnormal_fraction, seed)
    rows: list[list[str]] = []
    for i, (label, seq) in enumerate(zip(labels, seqs, strict=True)):
        ct, pet, mask = render_petct(np.random.default_rng(seq), size, bool(label))
        name = f"petct_{i:05d}"
        _write_png(out / "ct" / f"{name}.png", ct)
        np.save(out / "pet" / f"{name}.npy", pet)
        mrel = f"masks/{name}.png" if label else ""
        if label:
            _write_png(out / mrel, (mask * 255).astype(np.uint8))
        rows.append([f"ct/{name}.png", f"pet/{name}.npy", mrel, str(int(label)), f"P{i:05d}"])
    return _write_csv(out / "pairs.csv", ["ct", "pet", "mask", "label", "patient_id"], rows)

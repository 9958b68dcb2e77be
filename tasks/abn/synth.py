"""Synthetic chest-CT slices, COVID-19 pneumonia (1) vs typical pneumonia (0), with lung masks.

Each axial slice is built in Hounsfield units (HU), then windowed with the lung window (level
-600, width 1500) to an 8-bit PNG. Anatomy: air outside the body (-1000), a subcutaneous fat rim
(~-100) around soft tissue (~40), two lungs (~-850) with vessels branching from the hila (~-100..
+50) and vessel cross-sections, the mediastinum and heart between them (the heart grows towards
the lung bases), a vertebra (cortex ~700, marrow ~250) with the spinal canal, ribs along the chest
wall, the trachea in upper slices, correlated reconstruction noise. Image top = anterior, image
left = the patient's right.

Disease, in both classes only inside the lungs:

- label 1 (COVID-19-like): several soft, patchy ground-glass opacities (~-600..-300 HU) in the
  subpleural periphery of both lungs;
- label 0 (typical pneumonia): a lobar/segmental consolidation (~-100..+40 HU) nearer the hilum,
  mostly in one lung, with air bronchograms (dark branching lines inside it).

Patients differ in body and lung size, position, noise and severity; their slices differ in level
(apex to base) and disease extent. ``difficulty`` (0..1) controls how much the classes overlap:
it raises the share of slices with hardly any visible disease (10 % + 50 % x d; they keep the
patient's label, as in real data), lowers lesion contrast (down to 1 - 0.6 x d of full), raises
the noise (x (1 + d)), and with probability 0.8 x d per slice adds a weaker version of the other
class's look (a small consolidation in COVID-19, scattered ground glass in typical pneumonia);
gravity-dependent posterior density, which mimics subpleural ground glass, appears in both
classes (25 % + 30 % x d of slices). Measured (n=240, 64 px, seed 1): logistic regression on
five lung-intensity features reaches a patient-grouped CV AUC of 0.97 / 0.81 / 0.71 at d = 0 /
0.5 / 1; a 4-layer CNN trained 10-25 epochs on CPU (15-60 s) tests at 0.82-0.86 at d = 0.5.

Every slice depends only on ``(seed, patient, slice index)``; PNGs and DICOMs carry no timestamp,
so the same arguments give byte-identical files.
"""

from __future__ import annotations

import csv
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray
from PIL import Image

from tasks.common.dicom import write_ct_slice

__all__ = [
    "LEVEL",
    "WIDTH",
    "Patient",
    "generate",
    "hu_to_pixel",
    "pixel_to_hu",
    "render_slice",
    "sample_patient",
]

LEVEL, WIDTH = -600.0, 1500.0  # the lung window
MIN_SIZE, MAX_SIZE = 32, 1024
HU_AIR, HU_FAT, HU_SOFT, HU_LUNG = -1000.0, -100.0, 40.0, -850.0

FloatImage = NDArray[np.float32]


def hu_to_pixel(hu: ArrayLike, level: float = LEVEL, width: float = WIDTH) -> NDArray[np.uint8]:
    """Window HU to 8-bit: ``round(clip((hu - (level - width / 2)) / width, 0, 1) * 255)``."""
    if width <= 0:
        raise ValueError(f"window width must be > 0, got {width}")
    v = (np.asarray(hu, dtype=np.float64) - (level - width / 2.0)) / width
    return np.rint(np.clip(v, 0.0, 1.0) * 255.0).astype(np.uint8)


def pixel_to_hu(pixel: ArrayLike, level: float = LEVEL, width: float = WIDTH) -> FloatImage:
    """Inverse of `hu_to_pixel` for 0..255 values (values clipped by the window stay clipped)."""
    if width <= 0:
        raise ValueError(f"window width must be > 0, got {width}")
    p = np.asarray(pixel, dtype=np.float64) / 255.0
    return (p * width + (level - width / 2.0)).astype(np.float32)


@dataclass(frozen=True)
class Patient:
    """Per-patient anatomy and disease parameters (coordinates are fractions of the image)."""

    label: int
    cx: float  # body centre
    cy: float
    rx: float  # body half-axes
    ry: float
    fat: float  # subcutaneous fat thickness
    lung: float  # lung scale
    sep: float  # lung centre distance from the midline
    noise: float  # HU standard deviation of the reconstruction noise
    severity: float  # 0..1
    side: int  # typical pneumonia: 0 image-left lung, 1 image-right lung, 2 both


def sample_patient(rng: np.random.Generator, label: int, difficulty: float = 0.5) -> Patient:
    """Draw one patient's anatomy, noise level and disease severity (for `render_slice`)."""
    return Patient(
        label=label,
        cx=0.5 + rng.normal(0, 0.015),
        cy=0.53 + rng.normal(0, 0.015),
        rx=rng.uniform(0.40, 0.46),
        ry=rng.uniform(0.30, 0.35),
        fat=rng.uniform(0.015, 0.045),
        lung=rng.uniform(0.9, 1.06),
        sep=rng.uniform(0.165, 0.2),
        noise=rng.uniform(8.0, 25.0) * (1.0 + difficulty),
        severity=rng.uniform(0.35, 1.0),
        side=int(rng.choice(3, p=[0.4, 0.4, 0.2])),
    )


def _smoothstep(x: NDArray[Any]) -> FloatImage:
    x = np.clip(x, 0.0, 1.0)
    return (x * x * (3.0 - 2.0 * x)).astype(np.float32)


def _noise(rng: np.random.Generator, size: int, cells: int) -> FloatImage:
    """Smooth noise in about [-1, 1]: a random grid upsampled bicubically."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    img = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.asarray(img, np.float32) / 1.5


class _Canvas:
    """Normalised coordinates of one slice and soft shape helpers."""

    def __init__(self, size: int) -> None:
        self.size = size
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        self.x, self.y = (xx + 0.5) / size, (yy + 0.5) / size

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, soft: float = 0.1) -> FloatImage:
        """1 inside, 0 outside, with an edge about ``soft`` (relative radius) wide."""
        d = np.sqrt(((self.x - cx) / rx) ** 2 + ((self.y - cy) / ry) ** 2)
        return _smoothstep((1.0 + soft / 2 - d) / soft)

    def blob(self, cx: float, cy: float, sigma: float) -> FloatImage:
        r2 = (self.x - cx) ** 2 + (self.y - cy) ** 2
        return np.exp(-r2 / (2 * sigma**2)).astype(np.float32)


Roots = list[tuple[float, float, float]]  # (x, y, angle) of branching trees


def _tree(rng: np.random.Generator, img: FloatImage, x: float, y: float, angle: float,
          length: float, width: float, depth: int) -> None:  # fmt: skip
    """Draw a tapering branching tube (pixel units) into `img`.

    Tubes thinner than a pixel are drawn 1 px wide with proportionally lower value, as partial
    volume makes them look in CT. Coordinates go to OpenCV in quarter pixels (shift=2).
    """
    value, thickness = min(1.0, width), max(1, round(width))
    for _ in range(2):
        angle += rng.normal(0.0, 0.2)
        nx, ny = x + length / 2 * math.cos(angle), y + length / 2 * math.sin(angle)
        p0, p1 = (round(x * 4), round(y * 4)), (round(nx * 4), round(ny * 4))
        cv2.line(img, p0, p1, value, thickness, cv2.LINE_AA, 2)
        x, y = nx, ny
    if depth < 2:
        for side in (-1.0, 1.0):
            turn, shrink = side * rng.uniform(0.25, 0.6), rng.uniform(0.55, 0.75)
            _tree(rng, img, x, y, angle + turn, length * shrink, width * 0.7, depth + 1)


def _lines(rng: np.random.Generator, size: int, roots: Roots, length: float,
           width: float) -> FloatImage:  # fmt: skip
    """Branching trees from normalised roots (width in pixels), values in [0, 1]."""
    img = np.zeros((size, size), np.float32)
    for x, y, a in roots:
        _tree(rng, img, x * size, y * size, a, length * size, width, 0)
    return np.asarray(cv2.GaussianBlur(img, (0, 0), 0.5), np.float32)


def _lungs(c: _Canvas, p: Patient, z: float, rng: np.random.Generator) -> list[FloatImage]:
    """Soft masks of the two lungs (image left, image right) at slice level z (0 apex, 1 base)."""
    g = p.lung * (0.68 + 0.32 * math.sin(math.pi * (0.15 + 0.7 * z)))
    med = c.ellipse(p.cx, p.cy, 0.055 + 0.02 * z, 0.5, 0.3)
    heart_r = 0.04 + 0.11 * z
    heart = c.ellipse(p.cx + 0.035, p.cy - 0.06 + 0.03 * z, heart_r * 1.2, heart_r, 0.25)
    spine = c.ellipse(p.cx, p.cy + p.ry * 0.62, 0.085, 0.08, 0.3)
    inner = c.ellipse(p.cx, p.cy, p.rx - p.fat - 0.045, p.ry - p.fat - 0.04, 0.08)
    keep = (1 - med) * (1 - heart) * (1 - spine) * inner
    out = []
    for side in (-1.0, 1.0):
        lx, ly = p.cx + side * p.sep * (0.97 if side > 0 else 1.0), p.cy + 0.01
        rx, ry = 0.135 * g, 0.215 * g
        d = np.sqrt(((c.x - lx) / rx) ** 2 + ((c.y - ly) / ry) ** 2)
        d = d + 0.1 * _noise(rng, c.size, 4)
        out.append(_smoothstep((1.05 - d) / 0.1) * keep)
    return out


def _anatomy(
    c: _Canvas, p: Patient, z: float, lungs: list[FloatImage], rng: np.random.Generator
) -> FloatImage:
    """HU image of everything but disease and noise."""
    body = c.ellipse(p.cx, p.cy, p.rx, p.ry, 0.03)
    inner = c.ellipse(p.cx, p.cy, p.rx - p.fat, p.ry - p.fat, 0.05)
    hu = HU_AIR + (HU_FAT - HU_AIR) * body + (HU_SOFT - HU_FAT) * inner
    hu += 8.0 * _noise(rng, c.size, 8) * inner
    for deg in (-60, -35, -10, 15, 40, 140, 165, 190, 215, 240):  # ribs; not at spine/sternum
        a = math.radians(deg) + rng.normal(0, 0.05)
        bx = p.cx + (p.rx - p.fat - 0.03) * math.cos(a)
        by = p.cy + (p.ry - p.fat - 0.03) * math.sin(a)
        hu += 450.0 * c.ellipse(bx, by, 0.018, 0.012, 0.5) * inner
    vy = p.cy + p.ry * 0.62
    hu += 250.0 * c.ellipse(p.cx, vy, 0.06, 0.055, 0.2) + 400.0 * (
        c.ellipse(p.cx, vy, 0.06, 0.055, 0.1) - c.ellipse(p.cx, vy, 0.045, 0.042, 0.1)
    ).clip(0, 1)
    hu -= 250.0 * c.ellipse(p.cx, vy + 0.075, 0.02, 0.02, 0.3)  # spinal canal
    field = lungs[0] + lungs[1]
    hu += (HU_LUNG + 15.0 * _noise(rng, c.size, 12) - hu) * field
    roots = []
    for side in (-1.0, 1.0):  # vessels from each hilum
        hx = p.cx + side * (p.sep - 0.06)
        for a in (-0.8, 0.0, 0.8):
            a += (math.pi if side < 0 else 0.0) + rng.normal(0, 0.15)
            roots.append((hx, p.cy + rng.normal(0, 0.02), a))
    vessels = _lines(rng, c.size, roots, 0.08, c.size / 100)
    dots = np.zeros_like(field)
    for _ in range(int(6 + c.size / 12)):
        x, y = rng.uniform(0.15, 0.85, 2) * c.size
        radius = round(4 * max(0.6, c.size / 110) * rng.uniform(0.7, 1.3))
        cv2.circle(dots, (round(x * 4), round(y * 4)), radius, 1.0, -1, cv2.LINE_AA, 2)
    vessels = np.maximum(vessels, cv2.GaussianBlur(dots, (0, 0), 0.6)) * field
    hu += (rng.uniform(-100, 50) - hu) * vessels * 0.8
    if z < 0.45:  # trachea (upper slices): air, not lung
        hu += (HU_AIR - hu) * c.ellipse(p.cx, p.cy - 0.03, 0.028, 0.025, 0.3)
    return hu.astype(np.float32)


def _ggo(
    c: _Canvas,
    lung: FloatImage,
    side: float,
    p: Patient,
    rng: np.random.Generator,
    count: int,
    contrast: float,
) -> FloatImage:
    """HU increment of patchy, subpleural ground glass in one lung."""
    ys, xs = np.nonzero(lung > 0.5)
    out = np.zeros_like(lung)
    if len(xs) == 0:
        return out
    lateral = (xs / c.size - p.cx) * side  # > 0 towards the chest wall
    rim = np.abs(cv2.Laplacian((lung > 0.5).astype(np.float32), cv2.CV_32F))[ys, xs] > 0
    weights = (rim * 4.0 + 0.2) * (lateral > p.sep * 0.7)
    if weights.sum() == 0:
        weights = np.ones_like(lateral)
    texture = (0.75 + 0.35 * _noise(rng, c.size, max(6, c.size // 8))).clip(0.2, 1.2)
    for i in rng.choice(len(xs), size=count, p=weights / weights.sum()):
        sigma = rng.uniform(0.03, 0.06)
        out += rng.uniform(350, 650) * c.blob(xs[i] / c.size, ys[i] / c.size, sigma)
    return np.minimum(out * texture * contrast, 650.0) * lung


def _consolidation(
    c: _Canvas, lung: FloatImage, side: float, p: Patient, rng: np.random.Generator, extent: float
) -> tuple[FloatImage, float]:
    """Blend weight of a segmental consolidation in one lung, and its HU.

    A wedge from near the hilum towards the chest wall (a segment), mostly posterior, its edges
    roughened by noise, with air bronchograms running along it. `extent` (0..1) scales it.
    """
    hx, hy = p.cx + side * (p.sep - 0.07), p.cy + rng.uniform(-0.02, 0.04)
    theta = (math.pi if side < 0 else 0.0) + side * rng.uniform(-0.5, 1.2)  # + = posterior
    half = rng.uniform(0.35, 0.8) * (0.5 + 0.5 * extent)
    reach = rng.uniform(0.15, 0.3) * (0.3 + 0.7 * extent)
    dx, dy = c.x - hx, c.y - hy
    r = np.sqrt(dx**2 + dy**2)
    ang = np.abs(np.angle(np.exp(1j * (np.arctan2(dy, dx) - theta))))
    wedge = _smoothstep((half - ang) / 0.25) * _smoothstep((r - 0.03) / 0.03)
    wedge *= _smoothstep((reach - r) / 0.04 + 0.5 * _noise(rng, c.size, 6))
    bronchus = _lines(rng, c.size, [(hx, hy, theta + rng.normal(0, 0.1))], reach, c.size / 160)
    weight = wedge * lung * (1.0 - 0.8 * bronchus)
    return weight.astype(np.float32), float(rng.uniform(-100, 40))


def _disease(
    c: _Canvas,
    p: Patient,
    lungs: list[FloatImage],
    hu: FloatImage,
    rng: np.random.Generator,
    d: float,
) -> FloatImage:
    """Add the class's opacities (and, sometimes, the other class's look) to `hu`."""
    clear = rng.random() < 0.1 + 0.5 * d  # a slice of a sick patient with hardly any disease
    extent = p.severity * (rng.uniform(0.05, 0.2) if clear else rng.uniform(0.6, 1.0))
    contrast = rng.uniform(1.0 - 0.6 * d, 1.0)
    mimic = rng.random() < 0.8 * d
    sides = (-1.0, 1.0)
    bump = np.zeros_like(hu)
    if rng.random() < 0.25 + 0.3 * d:  # dependent (posterior) density, both classes
        for lung in lungs:
            bump += rng.uniform(60, 200) * _smoothstep((c.y - p.cy - 0.06) / 0.12) * lung
    if p.label == 1 or mimic:
        own = p.label == 1
        n = max(1, round((1 + 4 * extent) * (1.0 if own else 0.7)))
        strength = contrast * (0.5 + 0.5 * extent) * (1.0 if own else 0.8)
        for side, lung in zip(sides, lungs, strict=True):
            bump += _ggo(c, lung, side, p, rng, n, strength)
    hu = hu + bump
    if p.label == 0 or mimic:
        own = p.label == 0
        chosen = ([p.side] if p.side < 2 else [0, 1]) if own else [int(rng.integers(2))]
        for k in chosen:
            size = extent if own else 0.6 * extent
            w, target = _consolidation(c, lungs[k], sides[k], p, rng, size)
            hu += (target - hu) * w * (0.7 + 0.3 * contrast)
    return hu


def render_slice(
    rng: np.random.Generator, size: int, patient: Patient, z: float, difficulty: float = 0.5
) -> tuple[FloatImage, NDArray[np.bool_]]:
    """One slice: HU image ``[size, size]`` (float32) and the ground-truth lung mask (bool)."""
    c = _Canvas(size)
    lungs = _lungs(c, patient, z, rng)
    hu = _disease(c, patient, lungs, _anatomy(c, patient, z, lungs, rng), rng, difficulty)
    hu += patient.noise * 1.6 * rng.standard_normal(hu.shape).astype(np.float32)
    blurred = cv2.GaussianBlur(hu, (0, 0), max(0.5, size / 160))  # correlated noise, soft kernel
    hu = np.clip(np.asarray(blurred, np.float32), -1024.0, 3071.0)  # a CT scanner's range
    return hu, (lungs[0] + lungs[1]) > 0.5


def _levels(rng: np.random.Generator, k: int) -> list[float]:
    """Slice levels of one patient: spread over 0.1..0.9 (apex to base), jittered."""
    edges = np.linspace(0.1, 0.9, k + 1)
    return [float(rng.uniform(a, b)) for a, b in itertools.pairwise(edges)]


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["path", "mask", "patient_id", "label"])
        writer.writerows(rows)


def generate(
    out: Path,
    n: int = 240,
    size: int = 96,
    seed: int = 0,
    slices_per_patient: int = 4,
    dicom: int = 0,
    difficulty: float = 0.5,
) -> Path:
    """Write ``n`` synthetic CT slices, their lung masks and ``labels.csv``; return the CSV path.

    Args:
        out: output folder (created): ``slices/ct_00000.png`` (8-bit, lung window),
            ``masks/ct_00000.png`` (0/255 ground-truth lungs), ``labels.csv``.
        n: number of slices, spread over ``n // slices_per_patient`` patients (some get one
            more slice); half of the patients (rounded down) have label 1.
        size: image height and width in pixels (32..1024).
        seed: random seed; the same arguments give byte-identical files.
        slices_per_patient: slices per patient (all share the patient's label).
        dicom: also write the first ``dicom`` slices as DICOM (``dicom/ct_00000.dcm``, real HU
            via RescaleIntercept -1024, MONOCHROME2), listed in ``labels_dicom.csv``.
        difficulty: 0..1, class overlap (see the module docstring); 0.5 is the default.

    Returns:
        ``out/labels.csv`` with columns ``path``, ``mask`` (both relative to ``out``),
        ``patient_id`` and ``label`` (1 = COVID-19 pneumonia, 0 = typical pneumonia).

    Raises:
        ValueError: arguments out of range (fewer than 2 patients, bad size, ...).
    """
    if slices_per_patient < 1 or n // slices_per_patient < 2:
        raise ValueError(
            f"need at least 2 patients: n={n} // slices_per_patient={slices_per_patient} < 2"
        )
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be in {MIN_SIZE}..{MAX_SIZE} pixels, got {size}")
    if not 0 <= dicom <= n:
        raise ValueError(f"dicom must be in 0..n={n}, got {dicom}")
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1], got {difficulty}")
    out = Path(out)
    for sub in ("slices", "masks") + (("dicom",) if dicom else ()):
        (out / sub).mkdir(parents=True, exist_ok=True)
    n_pat = n // slices_per_patient
    plan_seq, patient_seq = np.random.SeedSequence(seed).spawn(2)
    plan = np.random.default_rng(plan_seq)
    labels = np.zeros(n_pat, dtype=np.int64)
    labels[: n_pat // 2] = 1
    plan.shuffle(labels)
    counts = [n // n_pat + (1 if i < n % n_pat else 0) for i in range(n_pat)]

    rows: list[list[str]] = []
    dicom_rows: list[list[str]] = []
    for p, (child, label, k) in enumerate(
        zip(patient_seq.spawn(n_pat), labels, counts, strict=True)
    ):
        prng = np.random.default_rng(child)
        patient, pid = sample_patient(prng, int(label), difficulty), f"P{p:05d}"
        for z in _levels(prng, k):
            i = len(rows)
            hu, mask = render_slice(prng, size, patient, z, difficulty)
            name = f"ct_{i:05d}"
            for sub, arr in (("slices", hu_to_pixel(hu)), ("masks", mask.astype(np.uint8) * 255)):
                Image.fromarray(arr).save(out / sub / f"{name}.png", compress_level=6)
            row = [f"slices/{name}.png", f"masks/{name}.png", pid, str(int(label))]
            rows.append(row)
            if i < dicom:
                key = f"medsweep-abn-{seed}-{pid}"  # deterministic UIDs
                write_ct_slice(out / "dicom" / f"{name}.dcm", hu, pid, i, uid_key=key)
                dicom_rows.append([f"dicom/{name}.dcm", *row[1:]])
    _write_csv(out / "labels.csv", rows)
    if dicom:
        _write_csv(out / "labels_dicom.csv", dicom_rows)
    return out / "labels.csv"

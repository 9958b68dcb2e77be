"""Synthetic fundus photographs for the glaucoma task (seed 002), so it runs without patient data.

Each image shows a circular retina (orange-red, vignetted, with choroidal texture) on a black
background whose border and centring vary (so black-border removal and cropping matter), a darker
macula, branching arcade vessels leaving the optic disc (veins and arteries, for the vessel-removal
step), a bright yellowish optic disc and a paler cup inside it. Glaucoma (label 1) means a larger
cup-to-disc ratio (CDR). The CDRs of the two classes overlap and ~4 % of patients carry a flipped
label, so the best possible AUC (the true CDR as the score, written to ``labels.csv`` as ``cdr``) is
about 0.95 (0.92-0.98 for 400 images), not 1.0: a model can be good but not perfect, as with real
data. The background outside the retina is near-black (values below ~10 of 255).

``difficulty`` (0..1, default 0 = the images above, unchanged) makes the task harder the way real
data is hard: the glaucoma CDRs move towards the normal ones (mean 0.63 -> 0.53, wider spreads),
label noise grows (4 % -> 10 %, so label smoothing matters), the cup fades (paleness -15 %), disc
sizes vary more (so absolute cup size is confounded: only the ratio is informative), and label-free
nuisances appear: a pale peripapillary-atrophy crescent beside the disc (mimics a large cup, in up
to half the images), uneven illumination and cataract-like haze (blur and a contrast veil). A
logistic regression on two colour-area features reaches AUC ~0.87 / 0.79 / 0.66 at difficulty
0 / 0.5 / 1 (400 images, 96 px), the true CDR ~0.94 / 0.87 / 0.79.

``sources > 1`` writes several datasets with their own label codings and cameras, and
near-duplicates across them (`tasks.fundus.synth_sources`).

Patients have two eyes (left/right, mirrored anatomy) that share the label; a few have only one
image. Every image depends only on ``(seed, index)`` through its own random stream, and PNGs are
written without timestamps, so the same arguments give byte-identical files.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["Camera", "generate", "render_fundus"]

GLAUCOMA_FRACTION = 0.4
LABEL_NOISE = 0.04
SINGLE_EYE_FRACTION = 0.1  # patients with only one usable image
CDR_NORMAL = (0.35, 0.08)  # mean, sd
CDR_GLAUCOMA = (0.63, 0.09)
CDR_RANGE = (0.12, 0.9)
MIN_SIZE, MAX_SIZE = 32, 1024
# At difficulty 1 (linear in between): glaucoma CDR mean lower by CDR_SHIFT, both sds wider by
# CDR_SPREAD, label noise higher by NOISE_GAIN, cup paleness lower by CUP_FADE (a fraction).
CDR_SHIFT, CDR_SPREAD, NOISE_GAIN, CUP_FADE = 0.10, 0.03, 0.06, 0.15


@dataclass(frozen=True)
class Camera:
    """How one source's camera renders a fundus; the defaults are the single-source images."""

    fov: tuple[float, float] = (0.40, 0.53)  # retina radius / image side: black-border size
    gain: float = 1.0  # exposure
    cast: tuple[float, float, float] = (1.0, 1.0, 1.0)  # RGB white balance
    noise: float = 1.0  # sensor noise, relative


@dataclass(frozen=True)
class SourceStyle:
    """One synthetic dataset: its coding, columns and camera."""

    name: str
    label_column: str
    codes: tuple[str, str]  # how labels 0 and 1 are written
    group_column: str | None
    path_column: str
    bare_names: bool  # paths are file names under images/ (image_root)
    prefix: str
    camera: Camera
    size_factor: float
    aspect: float  # width / height; > 1 pads black sides
    glaucoma_fraction: float


MAX_SOURCES = 4  # the datasets of tasks.fundus.synth_sources.SOURCES
# The one dataset of `sources=1` (source a of a multi-source set, with other file names).
SINGLE = SourceStyle(
    "a", "label", ("0", "1"), "patient_id", "path", False, "fundus_", Camera(), 1, 1,
    GLAUCOMA_FRACTION,
)  # fmt: skip


FloatImage = NDArray[np.float32]


@dataclass(frozen=True)
class _Case:
    index: int
    patient: int
    label: int  # the label written to the CSV (after label noise)
    cdr: float  # the cup-to-disc ratio actually drawn
    right_eye: bool


def _smoothstep(x: NDArray[np.floating[Any]]) -> FloatImage:
    x = np.clip(x, 0.0, 1.0)
    return (x * x * (3.0 - 2.0 * x)).astype(np.float32)


def _ellipse_mask(
    xx: FloatImage, yy: FloatImage, cx: float, cy: float, rx: float, ry: float, soft: float
) -> FloatImage:
    """1 inside the ellipse, 0 outside, with a smooth edge of relative width ``soft``."""
    d = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
    return _smoothstep((1.0 + soft / 2 - d) / soft)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> FloatImage:
    """Low-frequency noise in about [-1, 1]: a small random grid upsampled bicubically."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    img = Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32) / 1.5


def _vessel_tree(
    rng: np.random.Generator,
    start: tuple[float, float],
    angle: float,
    turn: float,
    length: float,
    width: float,
    depth: int,
    out: list[tuple[list[tuple[float, float]], float]],
) -> None:
    """Append tapered polyline chunks ``(points, width)`` of one vessel and its branches.

    A curved random walk: ``turn`` is the total bend in radians, so arcades curve around the macula.
    """
    steps = 16
    step = length / steps
    x, y = start
    pts = [(x, y)]
    for _ in range(steps):
        angle += turn / steps + rng.normal(0.0, 0.07)
        x, y = x + step * math.cos(angle), y + step * math.sin(angle)
        pts.append((x, y))
    # Four chunks of decreasing width give the taper without one draw call per segment.
    for c in range(4):
        chunk = pts[c * 4 : c * 4 + 5]
        out.append((chunk, width * (1.0 - 0.15 * c)))
    if depth >= 2:
        return
    for _ in range(3 if depth == 0 else int(rng.integers(1, 3))):
        k = int(rng.integers(4, 13))
        a0 = math.atan2(pts[k + 1][1] - pts[k][1], pts[k + 1][0] - pts[k][0])
        side = 1.0 if rng.random() < 0.5 else -1.0
        _vessel_tree(
            rng,
            pts[k],
            a0 + side * rng.uniform(0.4, 0.9),
            rng.normal(0.0, 0.5),
            length * (1 - k / steps) * rng.uniform(0.5, 0.8),
            width * rng.uniform(0.55, 0.7),
            depth + 1,
            out,
        )


def _vessel_masks(
    rng: np.random.Generator, size: int, disc: tuple[float, float], rd: float, reach: float
) -> tuple[FloatImage, FloatImage]:
    """Anti-aliased masks (veins, arteries) in [0, 1] for a right eye (disc on the right)."""
    ss = 2 if size <= 512 else 1  # supersampling for smooth thin lines at small sizes
    masks = []
    for kind in ("vein", "artery"):
        chunks: list[tuple[list[tuple[float, float]], float]] = []
        w0 = size * (0.014 if kind == "vein" else 0.010) * rng.uniform(0.85, 1.15)
        da = 0.12 if kind == "vein" else -0.12  # artery and vein of a trunk run side by side
        # (start angle, total turn, relative length, relative width): two temporal arcades that
        # bend around the macula, two shorter nasal trunks.
        for a, turn, rel_len, rel_w in (
            (-1.75, -1.4, 1.25, 1.0),
            (1.75, 1.4, 1.25, 1.0),
            (-0.9, 0.3, 0.75, 0.75),
            (0.9, -0.3, 0.75, 0.75),
        ):
            _vessel_tree(
                rng,
                (disc[0] + rng.normal(0, 0.15 * rd), disc[1] + rng.normal(0, 0.15 * rd)),
                a + da + rng.normal(0.0, 0.12),
                turn * rng.uniform(0.8, 1.2),
                reach * rel_len * rng.uniform(0.85, 1.1),
                w0 * rel_w,
                0,
                chunks,
            )
        canvas = Image.new("L", (size * ss, size * ss), 0)
        draw = ImageDraw.Draw(canvas)
        for pts, w in chunks:
            draw.line(
                [(px * ss, py * ss) for px, py in pts],
                fill=255,
                width=max(1, round(w * ss)),
                joint="curve",
            )
        if ss > 1:
            canvas = canvas.resize((size, size), Image.Resampling.BOX)
        canvas = canvas.filter(ImageFilter.GaussianBlur(radius=max(0.4, size / 400)))
        masks.append(np.asarray(canvas, dtype=np.float32) / 255.0)
    return masks[0], masks[1]


def _check_difficulty(difficulty: float) -> float:
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must be in 0..1, got {difficulty}")
    return float(difficulty)


def _nuisances(
    img: FloatImage,
    rng: np.random.Generator,
    d: float,
    xx: FloatImage,
    yy: FloatImage,
    fov: tuple[float, float, float],
    disc: tuple[float, float, float],
) -> FloatImage:
    """Label-free confounders of strength ``d``: atrophy crescent, uneven light, haze."""
    (cx, cy, radius), (dx, dy, rd) = fov, disc
    if rng.random() < 0.5 * d:
        # Peripapillary atrophy: a pale crescent hugging the disc on the temporal side (towards
        # the macula, -x in a right eye); as pale as a cup's rim, whatever the label.
        r = np.sqrt((xx - dx) ** 2 + (yy - dy) ** 2) / rd
        ring = _smoothstep((r - 0.9) / 0.15) * _smoothstep(
            (1.0 + rng.uniform(0.25, 0.7) - r) / 0.15
        )
        ang = np.angle(np.exp(1j * (np.arctan2(yy - dy, xx - dx) - np.pi - rng.normal(0, 0.4))))
        crescent = ring * _smoothstep((rng.uniform(0.7, 1.7) - np.abs(ang)) / 0.3)
        pale = np.array([0.93, 0.74, 0.55], np.float32)
        img += (pale - img) * (crescent * rng.uniform(0.4, 0.8) * d)[..., None]
    # Uneven illumination: a gradient across the field in a random direction.
    theta = rng.uniform(0.0, 2 * np.pi)
    grad = ((xx - cx) * math.cos(theta) + (yy - cy) * math.sin(theta)) / radius
    img *= np.clip(1.0 + 0.35 * d * rng.uniform(0.3, 1.0) * grad, 0.3, 1.7)[..., None]
    if rng.random() < 0.4 * d:
        # Cataract-like haze: optical blur and a veil that lowers contrast.
        sigma = rng.uniform(0.3, 0.9) * d * img.shape[0] / 96
        img = np.asarray(cv2.GaussianBlur(img, (0, 0), max(sigma, 0.1)), dtype=np.float32)
        veil = rng.uniform(0.05, 0.25) * d
        img = img * (1 - veil) + veil * img.mean(axis=(0, 1), keepdims=True)
    return img.astype(np.float32)


def render_fundus(
    rng: np.random.Generator,
    size: int,
    cdr: float,
    *,
    right_eye: bool = True,
    difficulty: float = 0.0,
    camera: Camera | None = None,
    extra: np.random.Generator | None = None,
) -> NDArray[np.uint8]:
    """Render one synthetic fundus photograph as RGB uint8 ``(size, size, 3)``.

    Args:
        rng: the image's random stream.
        size: side in pixels.
        cdr: cup-to-disc radius ratio.
        right_eye: False mirrors the image (left eye).
        difficulty: 0..1; above 0 the cup is fainter, disc sizes vary more and nuisances
            (peripapillary atrophy, uneven light, haze) are added (see module docstring).
        camera: source-specific look; None is the default camera.
        extra: random stream of the difficulty effects (default: derived from ``rng``); the
            default image (difficulty 0, no camera) draws nothing from it.
    """
    d = _check_difficulty(difficulty)
    cam = camera or Camera()
    s = float(size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    # Field of view: variable radius (sometimes clipped by the frame) and occasional decentring.
    radius = s * rng.uniform(*cam.fov)
    off = rng.uniform(-0.06, 0.06, 2) * s if rng.random() < 0.35 else np.zeros(2)
    cx, cy = s / 2 + off[0], s / 2 + off[1]
    fov = _ellipse_mask(xx, yy, cx, cy, radius, radius, 0.02)
    r = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / radius

    # Retina: orange-red, darker towards the rim, with blotchy choroidal texture.
    base = np.array([0.80, 0.34, 0.13], np.float32) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    texture = 0.06 * _smooth_noise(rng, size, 6) + 0.03 * _smooth_noise(rng, size, 14)
    vignette = 1.0 - rng.uniform(0.3, 0.5) * np.clip(r, 0, 1.2) ** 2.5
    img = base[None, None, :] * (vignette * (1.0 + texture))[..., None]

    rd = radius * rng.uniform(0.16 - 0.03 * d, 0.21 + 0.05 * d)  # disc radius
    dx = cx + radius * rng.uniform(0.35, 0.5)
    dy = cy + radius * rng.normal(0.0, 0.06)
    # Macula: about 2.5 disc diameters temporal to the disc, slightly lower.
    mx, my = dx - rd * rng.uniform(4.5, 5.5), dy + rd * rng.uniform(0.0, 0.5)
    mac = np.exp(-((xx - mx) ** 2 + (yy - my) ** 2) / (2 * (1.6 * rd) ** 2))
    img *= (1.0 - rng.uniform(0.2, 0.4) * mac)[..., None]

    # Optic disc (slightly taller than wide) and the paler cup inside it; cdr is the radius ratio.
    disc_rgb = np.array([0.95, 0.58, 0.34], np.float32) * rng.uniform(0.92, 1.05)
    disc = _ellipse_mask(xx, yy, dx, dy, rd, rd * rng.uniform(1.0, 1.12), 0.25)
    img += (disc_rgb - img) * disc[..., None]
    rc = rd * cdr
    cup_x = dx - rd * rng.uniform(0.0, 0.12)  # cups sit slightly temporal in the disc
    cup = _ellipse_mask(xx, yy, cup_x, dy, rc, rc * rng.uniform(1.0, 1.12), 0.35)
    cup_rgb = np.array([1.0, 0.95, 0.80], np.float32)
    img += (cup_rgb - img) * (cup * (rng.uniform(0.6, 0.95) * (1.0 - CUP_FADE * d)))[..., None]

    veins, arteries = _vessel_masks(rng, size, (dx, dy), rd, radius)
    for mask, rgb, alpha in (
        (veins, (0.42, 0.07, 0.05), 0.85),
        (arteries, (0.66, 0.16, 0.08), 0.7),
    ):
        # Vessels dip into the cup and fade there, which keeps the cup margin readable.
        img += (np.array(rgb, np.float32) - img) * (alpha * mask * (1.0 - 0.4 * cup))[..., None]

    if d > 0:
        if extra is None:
            extra = np.random.default_rng(int(rng.integers(2**63)))
        img = _nuisances(img, extra, d, xx, yy, (cx, cy, radius), (dx, dy, rd))

    # Camera: exposure, white balance, gamma and sensor noise vary between images.
    img *= rng.uniform(0.75, 1.15) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    if cam.gain != 1.0 or cam.cast != (1.0, 1.0, 1.0):
        img *= cam.gain * np.array(cam.cast, np.float32)
    img = np.clip(img, 0.0, 1.0) ** rng.uniform(0.85, 1.2)
    img += rng.normal(0.0, rng.uniform(0.005, 0.025) * cam.noise, img.shape).astype(np.float32)
    img = img * fov[..., None] + np.abs(rng.normal(0.0, 0.006, img.shape)).astype(np.float32)
    out = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out if right_eye else np.ascontiguousarray(out[:, ::-1])


def _plan(
    n: int,
    rng: np.random.Generator,
    patients: bool,
    difficulty: float = 0.0,
    glaucoma_fraction: float = GLAUCOMA_FRACTION,
) -> list[_Case]:
    """Assign patients, eyes, true classes, CDRs and (noisy) labels to ``n`` images."""
    eyes: list[int] = []  # images per patient
    while sum(eyes) < n:
        two = patients and rng.random() >= SINGLE_EYE_FRACTION
        eyes.append(min(2 if two else 1, n - sum(eyes)))
    n_pat = len(eyes)
    # A fixed count (then shuffled) keeps the class balance stable even for small n.
    truth = np.zeros(n_pat, dtype=np.int64)
    truth[: round(glaucoma_fraction * n_pat)] = 1
    rng.shuffle(truth)
    flip = rng.random(n_pat) < LABEL_NOISE + NOISE_GAIN * difficulty
    cases: list[_Case] = []
    for p, (k, t, f) in enumerate(zip(eyes, truth, flip, strict=True)):
        mean, sd = CDR_GLAUCOMA if t else CDR_NORMAL
        mean, sd = mean - CDR_SHIFT * difficulty * t, sd + CDR_SPREAD * difficulty
        first_right = bool(rng.random() < 0.5)
        for e in range(k):
            cdr = float(np.clip(rng.normal(mean, sd), *CDR_RANGE))
            label = int(t) ^ int(f)
            cases.append(_Case(len(cases), p, label, cdr, first_right != (e == 1)))
    return cases


def pad_aspect(arr: NDArray[np.uint8], aspect: float) -> NDArray[np.uint8]:
    """Black bars left and right up to ``width = aspect * height`` (wide-sensor cameras)."""
    extra = round(arr.shape[0] * aspect) - arr.shape[1]
    if extra <= 0:
        return arr
    return np.pad(arr, ((0, 0), (extra // 2, extra - extra // 2), (0, 0)))


def render_source(
    out: Path,
    src: SourceStyle,
    n: int,
    size: int,
    seq: np.random.SeedSequence,
    patients: bool,
    difficulty: float,
) -> list[list[Any]]:
    """Write one source's images under ``out/images``; rows ``[rel, label, patient, cdr]``."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    plan_seq, image_seq = seq.spawn(2)
    plan_rng = np.random.default_rng(plan_seq)
    cases = _plan(n, plan_rng, patients, difficulty, src.glaucoma_fraction)
    # A third child only when needed: spawning it later leaves the first two streams unchanged.
    extras = seq.spawn(1)[0].spawn(n) if difficulty > 0 else [None] * n
    camera = None if src.camera == Camera() else src.camera
    rows: list[list[Any]] = []
    for case, child, ex in zip(cases, image_seq.spawn(n), extras, strict=True):
        arr = render_fundus(
            np.random.default_rng(child), size, case.cdr, right_eye=case.right_eye,
            difficulty=difficulty, camera=camera,
            extra=None if ex is None else np.random.default_rng(ex),
        )  # fmt: skip
        rel = f"images/{src.prefix}{case.index:05d}.png"
        # compress_level fixed so output does not depend on Pillow's default.
        Image.fromarray(pad_aspect(arr, src.aspect)).save(out / rel, format="PNG", compress_level=6)
        rows.append([rel, case.label, f"P{case.patient:05d}", case.cdr])
    return rows


def write_csv(path: Path, src: SourceStyle, rows: list[list[Any]]) -> None:
    header = [src.path_column, src.label_column, *([src.group_column] if src.group_column else [])]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow([*header, "cdr"])
        for rel, label, patient, cdr in rows:
            shown = Path(rel).name if src.bare_names else rel
            group = [patient] if src.group_column else []
            writer.writerow([shown, src.codes[label], *group, f"{cdr:.4f}"])


def generate(
    out: Path,
    n: int = 400,
    size: int = 96,
    seed: int = 0,
    *,
    patients: bool = True,
    sources: int = 1,
    difficulty: float = 0.0,
    cross_duplicates: float = 0.05,
) -> Path:
    """Write ``n`` synthetic fundus PNGs and their manifest(s) under ``out``.

    Args:
        out: output folder (created); images go to ``out/images/fundus_00000.png`` ...
        n: number of images (split evenly over the sources).
        size: image height and width in pixels (32..1024); other sources scale it.
        seed: random seed; the same arguments give byte-identical output.
        patients: when True about two images (eyes) per patient share a ``patient_id`` and the
            label; when False every image is its own patient.
        sources: 1 (default) writes one dataset; 2..4 write the layout of the module docstring.
        difficulty: 0..1, how hard the glaucoma signal is to see (module docstring); 0 gives
            the same files as before the option existed.
        cross_duplicates: with several sources, the share of source c (b with two sources)
            replaced by re-encoded copies of source a images.

    Returns:
        One source: ``out/labels.csv`` with columns ``path`` (relative to ``out``), ``label``
        (0/1, 1 = glaucoma, after label noise), ``patient_id`` and ``cdr`` (true cup-to-disc
        ratio). Several: ``out/sources.json`` describing them.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be in {MIN_SIZE}..{MAX_SIZE} pixels, got {size}")
    if not 1 <= sources <= MAX_SOURCES or n < sources:
        raise ValueError(f"sources must be in 1..{MAX_SOURCES} and at most n, got {sources}")
    if not 0.0 <= cross_duplicates <= 0.5:
        raise ValueError(f"cross_duplicates must be in 0..0.5, got {cross_duplicates}")
    difficulty = _check_difficulty(difficulty)
    out = Path(out)
    if sources > 1:
        from tasks.fundus.synth_sources import generate_sources

        return generate_sources(out, sources, n, size, seed, patients, difficulty, cross_duplicates)
    rows = render_source(out, SINGLE, n, size, np.random.SeedSequence(seed), patients, difficulty)
    csv_path = out / "labels.csv"
    write_csv(csv_path, SINGLE, rows)
    return csv_path

"""Synthetic abdominal ultrasound with liver lesions (seed 000), so detection runs without patients.

Each image is a B-mode-like frame from a convex probe: a fan (sector) that is black outside,
abdominal-wall layers and a bright liver capsule near the probe, liver parenchyma (smooth echo
texture times fully developed speckle, i.e. the magnitude of a blurred complex Gaussian field =
Rayleigh), anechoic vessels, sometimes the bright diaphragm, imperfectly compensated depth
attenuation and log compression. The echo is built along the beams (depth x angle) and
scan-converted, so shadows and enhancement fall along the beams as in real images.

Lesions follow their class (seed figure 3):

- ``cyst``: anechoic (black), round, sharp border, posterior acoustic enhancement (a brighter
  band behind it, from low attenuation in fluid) and thin lateral edge shadows; small.
- ``HCC``: mosaic (patches of different echo level) inside a hypoechoic halo ring; large.
- ``hemangioma``: hyperechoic (bright), well defined, round-ish to slightly lobulated.
- ``Meta``: target / bull's-eye (bright centre, dark rim, or concentric rings); often 2-3 per
  image with a similar look.

Lesion diameters are 8-25 % of the image height; each image has 1-3 lesions (Meta more), a few
get an incidental extra cyst, and ~5 % are negatives. Patients (``patient_id``, 1-4 images, mean
~2.5) have one diagnosis, an age drawn per class (HCC ~ N(68, 9), cyst N(60, 12), hemangioma
N(50, 12), Meta N(64, 10), clipped to 20-95) and a sex (HCC mostly M, hemangioma mostly F).
Image height is ``size``; the width is ``size`` x 1, 1.25 or 1.33 depending on the patient's
scanner (hemangioma patients mostly one scanner, so their sizes are the most uniform).

"Dirty" images for the cleansing step, disjoint sets, marked in the image entry as ``dirty``:

- ``"small"``: rendered normally, then shrunk so both sides are <= ``size // 2`` (clean them with
  ``min_size = size // 2``; the seed's 400 px rule is for the real data).
- ``"duplicate"``: a near-duplicate of the preceding image (same patient, same lesions):
  re-saved with a brightness change and often a slight resize; ``duplicate_of`` names the source.
- ``"overlay"``: a burned-in blue-to-yellow colour scale bar at one edge (most of them) and
  yellow '+' caliper markers on a lesion border.

Layout: ``out/images/liver_00001.png`` (RGB PNG) and ``out/annotations/{train,val,test}.json``,
split by patient (80/10/10 % of images by default). ``file_name`` is relative to the COCO file's
folder (``"../images/liver_00001.png"``), the detection family's convention, so no image root
needs configuring. Image and annotation ids are unique across the three files. Every image
depends only on ``(seed, index)``, and PNGs carry no timestamp: the same arguments give
byte-identical files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tasks.detection.convert import SPLITS, check_fractions, split_groups, write_coco

__all__ = ["CATEGORIES", "generate", "render_liver"]

CATEGORIES = ("cyst", "HCC", "hemangioma", "Meta")
CLASS_SHARE = (0.33, 0.22, 0.30, 0.15)  # patients per diagnosis; Meta is the rarest in the seed
AGE = {"cyst": (60.0, 12.0), "HCC": (68.0, 9.0), "hemangioma": (50.0, 12.0), "Meta": (64.0, 10.0)}
P_MALE = {"cyst": 0.5, "HCC": 0.75, "hemangioma": 0.3, "Meta": 0.55}
DIAMETER = {  # lesion diameter as a fraction of the image height (cysts smallest, HCC largest)
    "cyst": (0.08, 0.16),
    "HCC": (0.13, 0.25),
    "hemangioma": (0.10, 0.20),
    "Meta": (0.08, 0.15),
}
N_LESIONS = {"cyst": (0.8, 0.2, 0.0), "HCC": (0.85, 0.15, 0.0), "hemangioma": (0.8, 0.2, 0.0)}
N_LESIONS["Meta"] = (0.2, 0.45, 0.35)
ASPECTS = (1.0, 1.25, 4.0 / 3.0)  # width / height of the scanners
ASPECT_SHARE = {"hemangioma": (0.1, 0.1, 0.8)}  # others: uniform
NEGATIVE_SHARE = 0.05
RIB_SHADOW_SHARE = 0.3
EXTRA_CYST_SHARE = 0.08  # incidental cyst next to another diagnosis
IMAGES_PER_PATIENT = ((1, 2, 3, 4), (0.15, 0.35, 0.35, 0.15))
ATTENUATION_SCALE = 8.0  # per image height; sets how strong enhancement and shadows are
MIN_SIZE, MAX_SIZE = 48, 2048

Float = NDArray[np.float32]
Box = list[float]


def _smoothstep(x: Float) -> Float:
    x = np.clip(x, 0.0, 1.0)
    return (x * x * (3.0 - 2.0 * x)).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> Float:
    """Low-frequency noise of unit-ish amplitude: a small random grid upsampled bicubically."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    big = cv2.resize(grid, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return np.asarray(big, dtype=np.float32) / np.float32(1.3)


@dataclass(frozen=True)
class _Fan:
    """Convex-probe geometry: virtual apex above the image, radii r0..r1, half-angle phi."""

    ax: float
    ay: float
    r0: float
    r1: float
    phi: float

    @staticmethod
    def draw(rng: np.random.Generator, h: int, w: int) -> _Fan:
        ay = -h * rng.uniform(0.08, 0.3)
        r0 = -ay + h * rng.uniform(0.03, 0.06)
        r1 = h * rng.uniform(0.9, 0.97) - ay
        phi = min(rng.uniform(0.5, 0.7), math.asin(min(1.0, (w / 2 - 2) / r1)))
        return _Fan(w / 2, ay, r0, r1, phi)


@dataclass(frozen=True)
class _Lesion:
    """A lesion's outline: ellipse with a few harmonic bumps; ``radius`` includes halo/rim."""

    category: str
    cx: float
    cy: float
    radius: float
    ratio: float
    angle: float
    bumps: tuple[tuple[int, float, float], ...]  # (harmonic, amplitude, phase)

    def coords(self, x: Float, y: Float) -> tuple[Float, Float, Float]:
        """``(dn, u, v)``: normalised distance (1 = border) and rotated coords / radius."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        u = ((x - self.cx) * c + (y - self.cy) * s) / self.radius
        v = (-(x - self.cx) * s + (y - self.cy) * c) / (self.radius * self.ratio)
        rho = np.sqrt(u * u + v * v)
        t = np.arctan2(v, u)
        edge = np.ones_like(rho)
        for k, amp, ph in self.bumps:
            edge += amp * np.cos(k * t + ph)
        return (rho / edge).astype(np.float32), u.astype(np.float32), v.astype(np.float32)

    def bbox(self, h: int, w: int) -> Box:
        """Tight ``[x, y, w, h]`` around the pixels whose centre lies inside the outline."""
        pad = self.radius * 1.3 + 2
        x0, x1 = max(0, int(self.cx - pad)), min(w, int(self.cx + pad) + 1)
        y0, y1 = max(0, int(self.cy - pad)), min(h, int(self.cy + pad) + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
        inside = self.coords(xx, yy)[0] <= 1.0
        cols, rows = np.flatnonzero(inside.any(0)), np.flatnonzero(inside.any(1))
        return [float(x0 + cols[0]), float(y0 + rows[0]), float(cols[-1] - cols[0] + 1),
                float(rows[-1] - rows[0] + 1)]  # fmt: skip


def _place(
    rng: np.random.Generator, fan: _Fan, h: int, wall: float, classes: Sequence[str]
) -> list[_Lesion]:
    """Non-overlapping lesions inside the fan, below the abdominal wall."""
    out: list[_Lesion] = []
    for cat in classes:
        lo, hi = DIAMETER[cat]
        radius = rng.uniform(lo, hi) * h / 2
        for attempt in range(60):
            if attempt and attempt % 20 == 0:
                radius *= 0.8  # crowded fan: try a smaller lesion
            r = rng.uniform(fan.r0 + wall + radius + 2, fan.r1 - radius * 1.15 - 3)
            margin = (radius * 1.15 + 3) / r
            if margin >= fan.phi:
                continue
            th = rng.uniform(-fan.phi + margin, fan.phi - margin)
            cx, cy = fan.ax + r * math.sin(th), fan.ay + r * math.cos(th)
            if all(math.hypot(cx - o.cx, cy - o.cy) > (radius + o.radius) * 1.1 + 2 for o in out):
                smooth = cat == "cyst"
                bumps = tuple(
                    (k, 0.0 if smooth else rng.uniform(0.0, 0.04), rng.uniform(0, 2 * math.pi))
                    for k in (2, 3, 5)
                )
                ratio = rng.uniform(0.85, 1.0) if smooth else rng.uniform(0.75, 1.0)
                out.append(_Lesion(cat, cx, cy, radius, ratio, rng.uniform(0, math.pi), bumps))
                break
    return out


def _waves(rng: np.random.Generator, u: Float, v: Float, freq: float, n: int = 4) -> Float:
    """Sum of ``n`` random plane waves in lesion coordinates: a blotchy internal texture."""
    out = np.zeros_like(u)
    for _ in range(n):
        a = rng.uniform(0, math.pi)
        f = freq * rng.uniform(0.7, 1.3) * 2 * math.pi
        out += np.cos(f * (u * math.cos(a) + v * math.sin(a)) + rng.uniform(0, 2 * math.pi))
    return (out / math.sqrt(n / 2)).astype(np.float32)


def _echo(
    les: _Lesion, dn: Float, u: Float, v: Float, style: dict[str, float], rng: np.random.Generator
) -> tuple[Float, Float, Float, Float]:
    """``(echo, mask, attenuation, shell)`` of one lesion; echo 1 = liver parenchyma."""
    edge = style["edge"]
    mask = _smoothstep((1 + edge / 2 - dn) / edge)
    shell = np.zeros_like(dn)
    if les.category == "cyst":
        echo = np.full_like(dn, style["level"])
        att = np.full_like(dn, 0.05)  # fluid barely attenuates: enhancement behind
        # A strongly attenuating thin wall: beams grazing it lose most, hence edge shadows.
        shell = np.exp(-(((dn - 1.0) / 0.07) ** 2)).astype(np.float32)
    elif les.category == "hemangioma":
        echo = style["level"] * (1 + 0.2 * _waves(rng, u, v, 1.5))
        att = np.full_like(dn, 0.85)
    elif les.category == "HCC":
        f = _waves(rng, u, v, style["freq"])
        mosaic = np.select([f < -0.6, f < 0.6], [0.45, 1.3], 2.6).astype(np.float32)
        inner = _smoothstep((1 - style["halo"] - dn) / 0.08 + 0.5)
        echo = style["level"] * mosaic * inner + style["halo_level"] * (1 - inner)
        att = np.full_like(dn, 0.8)
    else:  # Meta: target (bright centre, dark rim) or concentric rings
        core = _smoothstep((style["core"] - dn) / 0.15 + 0.5)
        if style["rings"] > 0.5:
            rings = 0.5 + 0.5 * np.cos(2 * math.pi * 2.2 * dn)
            core = np.maximum(core, rings * (dn < 0.8))
        echo = style["rim_level"] + (style["level"] - style["rim_level"]) * core
        att = np.full_like(dn, 1.05)
    return echo.astype(np.float32), mask, att, shell


def _styles(rng: np.random.Generator) -> dict[str, dict[str, float]]:
    """Per-image look of each class, so lesions of one class in an image look alike."""
    return {
        "cyst": {"edge": 0.06, "level": rng.uniform(0.01, 0.04)},
        "hemangioma": {"edge": 0.14, "level": rng.uniform(2.5, 4.5)},
        "HCC": {
            "edge": 0.08,
            "level": rng.uniform(0.8, 1.2),
            "freq": rng.uniform(1.0, 1.7),
            "halo": rng.uniform(0.13, 0.22),
            "halo_level": rng.uniform(0.05, 0.15),
        },
        "Meta": {
            "edge": 0.1,
            "level": rng.uniform(3.0, 5.0),
            "rim_level": rng.uniform(0.06, 0.15),
            "core": rng.uniform(0.45, 0.62),
            "rings": float(rng.random() < 0.35),
        },
    }


def _tissue(rng: np.random.Generator, h: int, depth: Float, wall: Float) -> Float:
    """Echo of the abdominal wall, capsule and liver parenchyma in beam space (liver ~ 1)."""
    shape = (depth.shape[0], depth.shape[1])
    coarse = 0.3 * _smooth_noise(rng, shape, 4) + 0.2 * _smooth_noise(rng, shape, 7)
    liver = np.exp(coarse + 0.1 * _smooth_noise(rng, shape, 14))
    layers = rng.uniform(1.5, 3.0)
    wall_echo = 0.6 + 1.8 * (0.5 + 0.5 * np.cos(2 * math.pi * layers * depth / wall)) ** 2
    echo = np.where(depth < wall, wall_echo, liver)
    capsule = 3.0 * np.exp(-(((depth - wall) / (0.008 * h + 0.6)) ** 2))
    return (echo + capsule).astype(np.float32)


def _vessels(
    rng: np.random.Generator, fan: _Fan, h: int, x: Float, y: Float, lesions: list[_Lesion]
) -> tuple[Float, Float]:
    """``(mask, wall)`` of 0-3 anechoic vessels (portal veins with bright walls) off the lesions."""
    mask, walls = np.zeros_like(x), np.zeros_like(x)
    for _ in range(int(rng.choice(3, p=(0.3, 0.45, 0.25)))):
        r = rng.uniform(fan.r0 + 0.25 * h, fan.r1 - 0.1 * h)
        th = rng.uniform(-fan.phi, fan.phi) * 0.8
        px, py = fan.ax + r * math.sin(th), fan.ay + r * math.cos(th)
        psi, half = rng.uniform(0, math.pi), rng.uniform(0.06, 0.2) * h
        width = rng.uniform(0.008, 0.022) * h
        bend = rng.uniform(-1.5, 1.5) / h  # a gently curved tube, not a ruler
        c, s = math.cos(psi), math.sin(psi)
        near = False
        for les in lesions:  # keep vessels clear of lesions: boxes stay unambiguous
            t = max(-half, min(half, (les.cx - px) * c + (les.cy - py) * s))
            near |= math.hypot(les.cx - px - t * c, les.cy - py - t * s) < les.radius + width + 3
        if near:
            continue
        along = (x - px) * c + (y - py) * s
        across = np.abs(-(x - px) * s + (y - py) * c - bend * along**2)
        dist = np.sqrt(across**2 + np.maximum(np.abs(along) - half, 0) ** 2)
        mask = np.maximum(mask, _smoothstep((width - dist) / 1.2 + 0.5))
        if rng.random() < 0.5:
            walls = np.maximum(walls, np.exp(-(((dist - width) / (0.3 * width + 0.6)) ** 2)))
    return mask.astype(np.float32), walls.astype(np.float32)


def _rib_shadow(rng: np.random.Generator, fan: _Fan, th: Float, depth: Float, wall: float) -> Float:
    """Gain of an acoustic shadow behind a rib at one side of the fan (intercostal view)."""
    if rng.random() >= RIB_SHADOW_SHARE:
        return np.ones_like(depth)
    side = 1.0 if rng.random() < 0.5 else -1.0
    inner = fan.phi * rng.uniform(0.55, 0.85)  # shadow covers angles beyond this
    band = _smoothstep((side * th - inner) / (0.08 * fan.phi) + 0.5)
    start = _smoothstep((depth - wall * rng.uniform(0.6, 1.0)) / 3.0)
    return (1 - rng.uniform(0.6, 0.85) * band * start).astype(np.float32)


def _speckle(rng: np.random.Generator, shape: tuple[int, int]) -> Float:
    """Fully developed speckle: |blurred complex Gaussian|, Rayleigh with mean square 1."""
    lateral, axial = rng.uniform(0.9, 1.4), rng.uniform(0.5, 0.8)
    re = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), lateral, None,
                          axial)  # fmt: skip
    im = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), lateral, None,
                          axial)  # fmt: skip
    amp = np.sqrt(re * re + im * im)
    return (amp / np.sqrt(np.mean(amp * amp))).astype(np.float32)


def render_liver(
    rng: np.random.Generator, height: int, width: int, classes: Sequence[str]
) -> tuple[NDArray[np.uint8], list[tuple[str, Box]]]:
    """One grayscale ultrasound frame ``(height, width)`` uint8 and its ``(category, bbox)``s.

    ``classes`` lists the lesions to draw (empty = negative); a lesion that finds no room in
    the fan is left out, so the returned list can be shorter.
    """
    h, w = height, width
    fan = _Fan.draw(rng, h, w)
    wall = h * rng.uniform(0.06, 0.12)
    lesions = _place(rng, fan, h, wall, classes)
    # Beam space: rows = depth samples, columns = beam angles.
    r = np.linspace(fan.r0, fan.r1, h, dtype=np.float32)[:, None]
    th = np.linspace(-fan.phi, fan.phi, w, dtype=np.float32)[None, :]
    x = (fan.ax + r * np.sin(th)).astype(np.float32)
    y = (fan.ay + r * np.cos(th)).astype(np.float32)
    depth = np.broadcast_to(r - fan.r0, (h, w)).astype(np.float32)
    wall_map = (wall * (1 + 0.15 * np.sin(th * rng.uniform(2, 5) + rng.uniform(0, 6)))).astype(
        np.float32
    )
    echo = _tissue(rng, h, depth, wall_map)
    att = np.ones_like(echo)
    vmask, vwall = _vessels(rng, fan, h, x, y, lesions)
    echo = echo * (1 - vmask) + 0.03 * vmask + 2.5 * vwall
    att = att * (1 - vmask) + 0.4 * vmask
    styles = _styles(rng)
    for les in lesions:
        dn, u, v = les.coords(x, y)
        le, lm, la, shell = _echo(les, dn, u, v, styles[les.category], rng)
        echo = echo * (1 - lm) + le * lm
        att = att * (1 - lm) + la * lm + 2.5 * shell
    # Diaphragm: a wavy arc (+-0.06 h) kept clear below every lesion.
    bottom = max((math.hypot(o.cx - fan.ax, o.cy - fan.ay) + 1.15 * o.radius for o in lesions),
                 default=0.0) + 0.1 * h  # fmt: skip
    if rng.random() < 0.5 and bottom < fan.r1 - 0.04 * h:
        rd = rng.uniform(max(bottom, fan.r1 - 0.15 * h), fan.r1 - 0.04 * h)
        curve = r - (rd + 0.06 * h * np.sin(th * rng.uniform(1, 3) + rng.uniform(0, 6)))
        echo = echo * np.where(curve > 0, 0.3, 1.0) + 3.5 * np.exp(-((curve / (0.012 * h)) ** 2))
    # Attenuation relative to liver (which TGC compensates), integrated along each beam.
    step = (fan.r1 - fan.r0) / (h - 1) / h
    gain = np.exp(-ATTENUATION_SCALE * np.cumsum(att - 1, axis=0) * step).clip(0.25, 3.0)
    gain *= np.exp(-rng.uniform(0.2, 1.0) * depth / (fan.r1 - fan.r0))  # imperfect TGC
    gain *= _rib_shadow(rng, fan, th, depth, wall)
    amp = echo * gain * _speckle(rng, (h, w))
    amp += 0.01 * _speckle(rng, (h, w))  # electronic noise floor
    dyn, level = rng.uniform(45, 55), rng.uniform(0.38, 0.5)
    beam = (20 * np.log10(amp + 1e-4) + 2.5 + level * dyn) / dyn  # log compression
    img = _scan_convert(np.clip(beam, 0, 1).astype(np.float32), fan, h, w)
    boxes = [(les.category, les.bbox(h, w)) for les in lesions]
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8), boxes


def _scan_convert(beam: Float, fan: _Fan, h: int, w: int) -> Float:
    """Beam-space image -> cartesian fan (black outside)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    r = np.sqrt((xx - fan.ax) ** 2 + (yy - fan.ay) ** 2)
    th = np.arctan2(xx - fan.ax, yy - fan.ay)
    map_y = (r - fan.r0) / (fan.r1 - fan.r0) * (beam.shape[0] - 1)
    map_x = (th + fan.phi) / (2 * fan.phi) * (beam.shape[1] - 1)
    out = cv2.remap(
        beam, map_x.astype(np.float32), map_y.astype(np.float32), cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0.0,
    )  # fmt: skip
    return np.asarray(out, dtype=np.float32)


def _burn_overlay(rng: np.random.Generator, rgb: NDArray[np.uint8], boxes: list[Box]) -> None:
    """Burn a blue-to-yellow colour bar (most images) and yellow '+' calipers into ``rgb``."""
    h, w = rgb.shape[:2]
    if rng.random() < 0.75:
        bw, top, length = max(3, round(0.03 * w)), round(0.1 * h), round(0.4 * h)
        hue = np.linspace(30, 120, length, dtype=np.float32)  # OpenCV hue: 30 yellow .. 120 blue
        hsv = np.stack([hue, np.full_like(hue, 255), np.full_like(hue, 255)], -1)
        bar = cv2.cvtColor(hsv[:, None, :].astype(np.uint8), cv2.COLOR_HSV2RGB)
        x0 = 2 if rng.random() < 0.5 else w - 2 - bw
        rgb[top : top + length, x0 : x0 + bw] = bar
    arm, thick = max(2, round(0.025 * h)), max(1, round(h / 200))
    if boxes:  # calipers at the ends of the first lesion's horizontal diameter
        x, y, bw_, bh = boxes[0]
        points = [(x, y + bh / 2), (x + bw_, y + bh / 2)]
        if rng.random() < 0.5:
            points += [(x + bw_ / 2, y), (x + bw_ / 2, y + bh)]
    else:
        points = [(rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.8) * h) for _ in range(2)]
    colour = (255, int(rng.integers(220, 256)), int(rng.integers(0, 40)))
    for px, py in points:
        cx, cy = int(np.clip(px, arm, w - 1 - arm)), int(np.clip(py, arm, h - 1 - arm))
        cv2.line(rgb, (cx - arm, cy), (cx + arm, cy), colour, thick)
        cv2.line(rgb, (cx, cy - arm), (cx, cy + arm), colour, thick)


def _resize(rgb: NDArray[np.uint8], boxes: list[Box], w: int, h: int) -> list[Box]:
    """Scale the boxes of an image resized to ``w x h`` (the caller resizes the pixels)."""
    sx, sy = w / rgb.shape[1], h / rgb.shape[0]
    return [[round(b[0] * sx, 2), round(b[1] * sy, 2), round(b[2] * sx, 2), round(b[3] * sy, 2)]
            for b in boxes]  # fmt: skip


def _shrink(rgb: NDArray[np.uint8], boxes: list[Box], limit: int) -> tuple[Any, list[Box]]:
    """The image scaled so both sides are <= ``limit`` (a 'small' image for the cleansing)."""
    scale = limit / max(rgb.shape[:2])
    w, h = max(1, int(rgb.shape[1] * scale)), max(1, int(rgb.shape[0] * scale))
    return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA), _resize(rgb, boxes, w, h)


def _near_duplicate(
    rng: np.random.Generator, rgb: NDArray[np.uint8], boxes: list[Box]
) -> tuple[NDArray[np.uint8], list[Box]]:
    """The image re-saved with a brightness change and, often, a slight downscale."""
    out = np.clip(rgb.astype(np.float32) * rng.uniform(0.88, 1.12), 0, 255).astype(np.uint8)
    if rng.random() < 0.6:
        scale = rng.uniform(0.85, 0.97)
        w, h = round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)
        return cv2.resize(out, (w, h), interpolation=cv2.INTER_AREA), _resize(rgb, boxes, w, h)
    return out, [list(b) for b in boxes]


@dataclass
class _Planned:
    """One image to write: its patient, lesion classes, size and (synthetic) flaw."""

    patient: int
    classes: tuple[str, ...]
    height: int
    width: int
    dirty: str | None = None
    source: int | None = None  # for duplicates: index of the source in the plan


def _patients(rng: np.random.Generator, n_base: int, size: int) -> list[dict[str, Any]]:
    """Patients with diagnosis, age, sex, scanner aspect and image count (n_base in total)."""
    out: list[dict[str, Any]] = []
    total = 0
    while total < n_base:
        k = min(int(rng.choice(IMAGES_PER_PATIENT[0], p=IMAGES_PER_PATIENT[1])), n_base - total)
        cat = CATEGORIES[int(rng.choice(len(CATEGORIES), p=CLASS_SHARE))]
        mean, sd = AGE[cat]
        aspect = ASPECTS[int(rng.choice(3, p=ASPECT_SHARE.get(cat, (1 / 3, 1 / 3, 1 / 3))))]
        out.append(
            {
                "diagnosis": cat,
                "age": int(np.clip(round(rng.normal(mean, sd)), 20, 95)),
                "sex": "M" if rng.random() < P_MALE[cat] else "F",
                "size": (size, round(size * aspect)),
                "images": k,
            }
        )
        total += k
    return out


def _lesion_classes(rng: np.random.Generator, cat: str) -> tuple[str, ...]:
    if rng.random() < NEGATIVE_SHARE:
        return ()
    k = 1 + int(rng.choice(3, p=N_LESIONS[cat]))
    extra = ("cyst",) if cat != "cyst" and k < 3 and rng.random() < EXTRA_CYST_SHARE else ()
    return (cat,) * k + extra


def _plan(
    rng: np.random.Generator, n: int, size: int, shares: tuple[float, float, float]
) -> tuple[list[_Planned], list[dict[str, Any]]]:
    """Images in file order (duplicates right after their source) and the patients."""
    small_share, duplicate_share, overlay_share = shares
    n_dup = round(duplicate_share * n)
    n_base = n - n_dup
    n_small, n_overlay = round(small_share * n), round(overlay_share * n)
    if n_small + n_overlay + n_dup > n_base:
        raise ValueError(f"dirty shares too large for n={n}: {shares}")
    patients = _patients(rng, n_base, size)
    base = [
        _Planned(p, _lesion_classes(rng, pat["diagnosis"]), *pat["size"])
        for p, pat in enumerate(patients)
        for _ in range(pat["images"])
    ]
    flaws = rng.permutation(n_base)
    for i in flaws[:n_small]:
        base[i].dirty = "small"
    for i in flaws[n_small : n_small + n_overlay]:
        base[i].dirty = "overlay"
    sources = set(flaws[n_small + n_overlay : n_small + n_overlay + n_dup].tolist())
    plan: list[_Planned] = []
    for i, item in enumerate(base):
        plan.append(item)
        if i in sources:
            src = len(plan) - 1
            plan.append(_Planned(item.patient, item.classes, 0, 0, "duplicate", src))
    return plan, patients


def _image_entry(image_id: int, item: _Planned, shape: tuple[int, ...], pat: dict[str, Any],
                 source_id: int | None) -> dict[str, Any]:  # fmt: skip
    entry: dict[str, Any] = {
        "id": image_id,
        "file_name": f"../images/liver_{image_id:05d}.png",
        "width": int(shape[1]),
        "height": int(shape[0]),
        "patient_id": f"P{item.patient + 1:05d}",
        "age": pat["age"],
        "sex": pat["sex"],
        "dirty": item.dirty,
    }
    if source_id is not None:
        entry["duplicate_of"] = source_id
    return entry


def generate(
    out: Path,
    n: int = 600,
    size: int = 128,
    seed: int = 0,
    *,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    small_share: float = 0.05,
    duplicate_share: float = 0.05,
    overlay_share: float = 0.1,
) -> Path:
    """Write ``n`` synthetic liver ultrasound PNGs and COCO files under ``out``.

    Args:
        out: output folder: ``out/images/liver_NNNNN.png`` and
            ``out/annotations/{train,val,test}.json``.
        n: number of images (near-duplicates included).
        size: image height in pixels (48..2048); widths are 1-1.33 x ``size``.
        seed: random seed; the same arguments give byte-identical files.
        split: fractions of images in train, val, test; whole patients go to one split.
        small_share: share of images shrunk to <= ``size // 2`` px per side.
        duplicate_share: share of images that are near-duplicates of another image.
        overlay_share: share of images with a burned-in colour scale and caliper markers.

    Returns:
        ``out/annotations/train.json``. ``file_name`` is relative to the COCO file's folder
        (``../images/liver_00001.png``); categories are ids 1-4 = cyst, HCC, hemangioma, Meta;
        image entries also carry ``patient_id``, ``age``, ``sex`` and ``dirty``
        (``null``/``"small"``/``"duplicate"``/``"overlay"``, plus ``duplicate_of``).
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be in {MIN_SIZE}..{MAX_SIZE} pixels, got {size}")
    shares = (small_share, duplicate_share, overlay_share)
    if not all(0.0 <= s < 1.0 for s in shares):
        raise ValueError(f"shares must be in [0, 1): {shares}")
    fractions = check_fractions(split)
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    plan_seq, image_seq, split_seq = np.random.SeedSequence(seed).spawn(3)
    plan, patients = _plan(np.random.default_rng(plan_seq), n, size, shares)
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    pixels: dict[int, tuple[NDArray[np.uint8], list[Box]]] = {}  # sources awaiting their copy
    for index, (item, child) in enumerate(zip(plan, image_seq.spawn(len(plan)), strict=True)):
        rng = np.random.default_rng(child)
        if item.source is not None:
            rgb, boxes = _near_duplicate(rng, *pixels.pop(item.source))
            cats = [c for c, _ in images[item.source]["_lesions"]]
        else:
            gray, found = render_liver(rng, item.height, item.width, item.classes)
            rgb, boxes = np.repeat(gray[:, :, None], 3, axis=2), [b for _, b in found]
            cats = [c for c, _ in found]
            if item.dirty == "small":
                rgb, boxes = _shrink(rgb, boxes, size // 2)
            elif item.dirty == "overlay":
                _burn_overlay(rng, rgb, boxes)
            if index + 1 < len(plan) and plan[index + 1].source == index:
                pixels[index] = (rgb, boxes)
        image_id = index + 1
        source_id = None if item.source is None else item.source + 1
        entry = _image_entry(image_id, item, rgb.shape, patients[item.patient], source_id)
        entry["_lesions"] = list(zip(cats, boxes, strict=True))
        images.append(entry)
        # compress_level fixed so output does not depend on Pillow's default.
        Image.fromarray(rgb).save(out / "images" / f"liver_{image_id:05d}.png", compress_level=6)
    for entry in images:
        for cat, box in entry.pop("_lesions"):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": entry["id"],
                    "category_id": CATEGORIES.index(cat) + 1,
                    "bbox": box,
                    "area": round(box[2] * box[3], 4),
                    "iscrowd": 0,
                }
            )
    return _write_splits(out, images, anns, patients, fractions, split_seq, seed)


def _write_splits(
    out: Path,
    images: list[dict[str, Any]],
    anns: list[dict[str, Any]],
    patients: list[dict[str, Any]],
    fractions: tuple[float, ...],
    split_seq: np.random.SeedSequence,
    seed: int,
) -> Path:
    sizes = [0] * len(patients)
    for img in images:
        sizes[int(img["patient_id"][1:]) - 1] += 1
    split_seed = int(split_seq.generate_state(1)[0])
    assign = split_groups(sizes, fractions, split_seed)
    for s, name in enumerate(SPLITS):
        imgs = [img for img in images if assign[int(img["patient_id"][1:]) - 1] == s]
        ids = {img["id"] for img in imgs}
        part = [a for a in anns if a["image_id"] in ids]
        info = {
            "description": "synthetic liver ultrasound (medsweep, seed 000 task)",
            "split": name,
            "seed": seed,
            "images": len(imgs),
            "annotations": len(part),
            "patients": len({img["patient_id"] for img in imgs}),
        }
        write_coco(out / "annotations" / f"{name}.json", imgs, part, CATEGORIES, info)
    return out / "annotations" / "train.json"

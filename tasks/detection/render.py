"""Rendering of one synthetic liver-ultrasound frame with lesions (see `tasks.detection.synth`
for the dataset the frames make up): a convex-probe fan, abdominal wall, liver parenchyma with
speckle, vessels, optional rib shadows, and class-specific lesions (cyst, HCC, hemangioma, Meta),
built along the beams and scan-converted so shadows and enhancement follow the beams."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

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

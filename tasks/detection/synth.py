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

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tasks.detection.convert import SPLITS, check_fractions, split_groups, write_coco
from tasks.detection.render import (
    AGE,
    ASPECT_SHARE,
    ASPECTS,
    CATEGORIES,
    CLASS_SHARE,
    EXTRA_CYST_SHARE,
    IMAGES_PER_PATIENT,
    MAX_SIZE,
    MIN_SIZE,
    N_LESIONS,
    NEGATIVE_SHARE,
    P_MALE,
    Box,
    render_liver,
)

__all__ = ["CATEGORIES", "generate", "render_liver"]


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

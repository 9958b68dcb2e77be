"""Data cleansing of seed 000: small images, near-duplicates, burned-in colour scales.

Rules, in this order:

1. **Small**: an image is dropped when its width *and* its height are both ``<= min_size``
   (the seed's "400 x 400 or smaller": it fits in a ``min_size`` square). A 1024 x 300 strip
   stays. For the synthetic 128 px demo use ``min_size = 64`` (``size // 2``).
2. **Overlays** (``remove_overlays``): pixels with high colour saturation (OpenCV HSV,
   ``S >= 96`` and ``V >= 32``) in an otherwise gray ultrasound image are burned-in colour scales
   and caliper markers. With at least ``max(4, 0.02 % of the pixels)`` of them the image is
   repaired: the mask is dilated slightly and inpainted (``cv2.inpaint``, TELEA), and the
   cleaned copy is written. Grayscale (mode ``L``) files cannot hold colour and are skipped.
3. **Near-duplicates**: a perceptual hash (``imagehash.phash`` by default, 64 bits) of every
   remaining image, *after* inpainting so markers do not hide a duplicate; images within Hamming
   distance ``hash_threshold`` are joined into groups (union-find, so chains join too). Each
   group keeps exactly one image: the largest (pixel area), then the earliest split in the
   order of ``coco_paths`` (e.g. train < val < test), then the smallest image id. Keeping one
   image per group means a group can never straddle splits, i.e. no leakage of one scene into
   both train and test.

Output in ``out_dir``: ``images/`` (every kept image: copied, or inpainted), ``annotations/``
(one COCO file per input, same file names, kept images and their annotations; ``file_name`` is
``../images/NAME``, relative to the COCO file's folder like everywhere in this task family), and
``cleaning_report.csv`` with one row per dropped or modified image: ``image_id, file_name,
split, action, reason`` where action is ``dropped_small``, ``dropped_duplicate`` or
``inpainted_overlay``. An inpainted image that is then dropped as a duplicate gets only the
``dropped_duplicate`` row.

Image files are resolved as ``image_root / file_name``, by default relative to each COCO
file's folder.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import imagehash
import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from orchestrator.errors import DataError, UserError
from tasks.detection.convert import read_coco

__all__ = ["HASHES", "clean", "hamming_pairs", "overlay_mask"]

SATURATION_MIN = 96  # HSV S (0..255) of a colour pixel; gray ultrasound has ~0
VALUE_MIN = 32  # ... and not nearly black, where hue and saturation are noise
OVERLAY_MIN_PIXELS = 4
OVERLAY_MIN_FRACTION = 2e-4
INPAINT_RADIUS = 3
HASHES: dict[str, Callable[[Image.Image], imagehash.ImageHash]] = {
    "phash": imagehash.phash,
    "dhash": imagehash.dhash,
    "ahash": imagehash.average_hash,
    "whash": imagehash.whash,
}
ACTIONS = ("dropped_small", "dropped_duplicate", "inpainted_overlay")
REPORT_COLUMNS = ("image_id", "file_name", "split", "action", "reason")
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def overlay_mask(rgb: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """Pixels of burned-in colour (high saturation, not near black) in an RGB image."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    return (hsv[..., 1] >= SATURATION_MIN) & (hsv[..., 2] >= VALUE_MIN)


def _inpaint(rgb: NDArray[np.uint8], mask: NDArray[np.bool_]) -> NDArray[np.uint8]:
    # Dilate so the anti-aliased, less saturated fringe of markers goes too.
    iterations = max(1, round(min(rgb.shape[:2]) / 256))
    grown = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=iterations)
    return np.asarray(cv2.inpaint(rgb, grown, INPAINT_RADIUS, cv2.INPAINT_TELEA), dtype=np.uint8)


def _words(bits: NDArray[np.bool_]) -> NDArray[Any]:
    """Rows packed into uint64 words (numpy >= 2, popcount per word) or bytes (lookup table)."""
    packed = np.packbits(bits, axis=1)
    if hasattr(np, "bitwise_count"):
        pad = (-packed.shape[1]) % 8
        packed = np.pad(packed, ((0, 0), (0, pad)))
        return np.ascontiguousarray(packed).view(np.uint64)
    return packed


def _popcount(x: NDArray[Any]) -> NDArray[Any]:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return _POPCOUNT[x]


def hamming_pairs(
    bits: NDArray[np.bool_], threshold: int, chunk: int = 256
) -> list[tuple[int, int, int]]:
    """``(i, j, distance)`` for all ``i < j`` with Hamming distance ``<= threshold``.

    ``bits`` is ``(N, B)`` bool; rows are packed and compared by XOR + popcount, a block of
    ``chunk`` rows against all later rows at a time (memory ~ ``chunk * N * B / 8`` bytes):
    20k 64-bit hashes take a few seconds.
    """
    words = _words(bits)
    out: list[tuple[int, int, int]] = []
    for start in range(0, len(words), chunk):
        block, rest = words[start : start + chunk], words[start:]
        dist = _popcount(block[:, None, :] ^ rest[None, :, :]).sum(axis=2, dtype=np.int32)
        rows, cols = np.nonzero(dist <= threshold)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            if c > r:  # column c of this block is image start + c; skip self and lower pairs
                out.append((start + r, start + c, int(dist[r, c])))
    return out


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]  # path halving
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


@dataclass
class _Item:
    """One image of one input file and what cleaning found out about it."""

    split: str
    rank: int  # position of its COCO file in coco_paths
    entry: dict[str, Any]
    coco_path: Path
    path: Path
    out_name: str
    width: int = 0
    height: int = 0
    small: bool = False
    overlay: float = 0.0  # fraction of saturated pixels, 0 when not inpainted
    bits: NDArray[np.bool_] | None = None

    @property
    def where(self) -> str:
        return f"image id {self.entry['id']} ({self.entry['file_name']})"


@dataclass(frozen=True)
class _Options:
    min_size: int
    remove_overlays: bool
    hasher: Callable[[Image.Image], imagehash.ImageHash]
    out_images: Path


def _load(item: _Item) -> Image.Image:
    if not item.path.is_file():
        raise DataError(f"image file {item.path} does not exist", source=item.coco_path,
                        where=item.where)  # fmt: skip
    try:
        img = Image.open(item.path)
        img.load()
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"cannot read image {item.path}: {exc}", source=item.coco_path,
                        where=item.where) from None  # fmt: skip
    return img


def _inspect(item: _Item, opt: _Options) -> _Item:
    """Size rule, overlay repair (writes the cleaned copy) and hash of one image."""
    with _load(item) as img:
        item.width, item.height = img.size
        if (item.entry.get("width"), item.entry.get("height")) != img.size:
            raise DataError(
                f"the image file is {img.width}x{img.height} but the COCO entry says "
                f"{item.entry.get('width')}x{item.entry.get('height')}",
                source=item.coco_path,
                where=item.where,
            )
        if img.width <= opt.min_size and img.height <= opt.min_size:
            item.small = True
            return item
        colour = img.mode not in _GRAY_MODES
        pil = img.convert("RGB") if colour else img.convert("L")
    if colour and opt.remove_overlays:
        rgb = np.asarray(pil)
        mask = overlay_mask(rgb)
        count = int(mask.sum())
        if count >= max(OVERLAY_MIN_PIXELS, OVERLAY_MIN_FRACTION * mask.size):
            item.overlay = count / mask.size
            pil = Image.fromarray(_inpaint(rgb, mask))
            pil.save(opt.out_images / item.out_name)
    item.bits = np.asarray(opt.hasher(pil).hash, dtype=bool).ravel()
    return item


def _items(
    coco_paths: Sequence[Path], image_root: Path | None, out_images: Path
) -> tuple[list[_Item], list[dict[str, Any]]]:
    """Every image of every file, with a unique output name; and the loaded COCO dicts."""
    items: list[_Item] = []
    cocos: list[dict[str, Any]] = []
    names = [Path(p).stem for p in coco_paths]
    if len(set(names)) != len(names):
        raise UserError(f"the COCO files need distinct names (one per split): {names}")
    for rank, path in enumerate(coco_paths):
        coco = read_coco(path)
        cocos.append(coco)
        base = image_root if image_root is not None else Path(path).parent
        for entry in coco["images"]:
            src = (base / entry["file_name"]).resolve()
            if src.parent == out_images.resolve():
                raise UserError(f"out_dir must not hold the input images ({src.parent})")
            items.append(_Item(names[rank], rank, entry, Path(path), src, src.name))
    taken: dict[str, int] = {}
    for item in items:
        taken[item.out_name] = taken.get(item.out_name, 0) + 1
    for item in items:  # same base name from different folders: prefix split and id
        if taken[item.out_name] > 1:
            item.out_name = f"{item.split}_{item.entry['id']}_{item.out_name}"
    return items, cocos


def _dedup(items: list[_Item], threshold: int, hash_name: str) -> tuple[dict[int, str], int]:
    """Reason per dropped duplicate (index into ``items``) and the number of groups."""
    idx = [i for i, it in enumerate(items) if it.bits is not None]
    if len(idx) < 2:
        return {}, 0
    bits = np.stack([items[i].bits for i in idx])  # type: ignore[misc]
    uf = _UnionFind(len(idx))
    for a, b, _ in hamming_pairs(bits, threshold):
        uf.union(a, b)
    groups: dict[int, list[int]] = {}
    for k in range(len(idx)):
        groups.setdefault(uf.find(k), []).append(k)
    dropped: dict[int, str] = {}
    multi = [m for m in groups.values() if len(m) > 1]
    for members in multi:
        its = [items[idx[k]] for k in members]
        keep = min(
            range(len(its)),
            key=lambda m: (-its[m].width * its[m].height, its[m].rank, its[m].entry["id"]),
        )
        kept = its[keep]
        for m, it in enumerate(its):
            if m == keep:
                continue
            dist = int(np.count_nonzero(it.bits != kept.bits))
            dropped[idx[members[m]]] = (
                f"{hash_name} distance {dist} to image {kept.entry['id']} ({kept.split}, kept; "
                f"group of {len(its)})"
            )
    return dropped, len(multi)


def _report_rows(items: list[_Item], dups: dict[int, str], min_size: int) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for i, it in enumerate(items):
        head = [it.entry["id"], it.entry["file_name"], it.split]
        if it.small:
            reason = f"{it.width}x{it.height} <= {min_size}x{min_size}"
            rows.append([*head, "dropped_small", reason])
        elif i in dups:
            rows.append([*head, "dropped_duplicate", dups[i]])
        elif it.overlay > 0:
            rows.append([*head, "inpainted_overlay", f"{100 * it.overlay:.1f}% saturated pixels"])
    return rows


def _write_outputs(
    items: list[_Item],
    cocos: list[dict[str, Any]],
    dropped: set[int],
    out_dir: Path,
    params: dict[str, Any],
) -> dict[str, dict[str, int]]:
    """Kept images (copied unless inpainted) and one COCO file per split; per-split counts."""
    per_split: dict[str, dict[str, int]] = {}
    for rank, coco in enumerate(cocos):
        mine = [(i, it) for i, it in enumerate(items) if it.rank == rank]
        split = mine[0][1].split if mine else str(rank)
        images: list[dict[str, Any]] = []
        for i, it in mine:
            out_path = out_dir / "images" / it.out_name
            if i in dropped:
                if it.overlay > 0:
                    out_path.unlink(missing_ok=True)  # written while inspecting
                continue
            if it.overlay == 0:
                shutil.copyfile(it.path, out_path)
            images.append({**it.entry, "file_name": f"../images/{it.out_name}"})
        ids = {img["id"] for img in images}
        anns = [a for a in coco["annotations"] if a["image_id"] in ids]
        info = {**coco.get("info", {}), "cleaning": params}
        data = {**coco, "info": info, "images": images, "annotations": anns}
        path = out_dir / "annotations" / f"{split}.json"
        path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        per_split[split] = {"images_in": len(mine), "images_kept": len(images),
                            "annotations_kept": len(anns)}  # fmt: skip
    return per_split


def clean(
    coco_paths: list[Path],
    out_dir: Path,
    *,
    min_size: int = 400,
    hash_threshold: int = 4,
    hash: str = "phash",
    remove_overlays: bool = True,
    image_root: Path | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Clean COCO splits (rules in the module docstring) into ``out_dir``.

    Args:
        coco_paths: the COCO files of the splits, in priority order (train, val, test); their
            file stems name the splits.
        out_dir: output folder (``images/``, ``annotations/``, ``cleaning_report.csv``); must
            not be the folder of the input images.
        min_size: drop images with width and height both ``<= min_size``.
        hash_threshold: largest Hamming distance (of 64 bits) between near-duplicates.
        hash: ``phash`` (default), ``dhash``, ``ahash`` or ``whash``.
        remove_overlays: inpaint burned-in colour scales and markers.
        image_root: folder ``file_name`` is relative to (default: each COCO file's folder).
        workers: threads reading and hashing images (default: up to 8); results do not depend
            on it.

    Returns:
        Counts: ``images_in``, ``images_kept``, ``dropped_small``, ``dropped_duplicate``,
        ``duplicate_groups``, ``inpainted_overlay``, ``annotations_kept`` and ``splits``
        (per split ``images_in``, ``images_kept``, ``annotations_kept``).

    Raises:
        DataError: an unreadable COCO file or image, or an image whose size disagrees with
            its entry.
        UserError: an unknown ``hash``, a negative threshold, or ``out_dir`` holding the input.
    """
    if hash not in HASHES:
        raise UserError(f"unknown hash {hash!r}; expected one of {', '.join(HASHES)}")
    if hash_threshold < 0:
        raise UserError(f"hash_threshold must be >= 0, got {hash_threshold}")
    out_dir = Path(out_dir)
    out_images = out_dir / "images"
    items, cocos = _items([Path(p) for p in coco_paths], image_root, out_images)
    out_images.mkdir(parents=True, exist_ok=True)
    (out_dir / "annotations").mkdir(parents=True, exist_ok=True)
    opt = _Options(min_size, remove_overlays, HASHES[hash], out_images)
    n_workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        items = list(pool.map(lambda it: _inspect(it, opt), items))
    dups, n_groups = _dedup(items, hash_threshold, hash)
    rows = _report_rows(items, dups, min_size)
    with (out_dir / "cleaning_report.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(REPORT_COLUMNS)
        writer.writerows(rows)
    dropped = set(dups) | {i for i, it in enumerate(items) if it.small}
    params = {"min_size": min_size, "hash": hash, "hash_threshold": hash_threshold,
              "remove_overlays": remove_overlays}  # fmt: skip
    per_split = _write_outputs(items, cocos, dropped, out_dir, params)
    counts = {a: sum(1 for r in rows if r[3] == a) for a in ACTIONS}
    return {
        "images_in": len(items),
        "images_kept": len(items) - len(dropped),
        **counts,
        "duplicate_groups": n_groups,
        "annotations_kept": sum(s["annotations_kept"] for s in per_split.values()),
        "splits": per_split,
    }

"""Classical lung segmentation of CT slices by HU threshold, and ``medsweep data lungmask``.

Seed 003 supervises the ABN attention map with lung masks from a pretrained lung U-Net
(Hofmanninger et al. 2020). Without downloads we offer the classical method that paper compares
against: air-like voxels (below -320 HU) not connected to the outside air, the two largest
components (the lungs), morphological closing and hole filling (vessels, small nodules). Its
known weakness, shared with every threshold method, is dense disease touching the pleura
(consolidation is soft-tissue dense and ends up outside the mask); a U-Net's masks can be used
instead by listing them in the manifest's ``mask`` column.
"""

from __future__ import annotations

import argparse
import csv
import os
from collections import Counter
from pathlib import Path, PurePath

import numpy as np
from numpy.typing import ArrayLike, NDArray
from PIL import Image

from orchestrator.errors import DataError

__all__ = ["lung_mask", "main"]

SECOND_LUNG_MIN = 0.1  # the second component is a lung if >= 10 % of the first
MIN_LUNG_FRACTION = 0.002  # components below 0.2 % of the image are never lungs
CLOSING_FRACTION = 1 / 48  # closing disk radius as a fraction of the image side (2 px at 96)


def lung_mask(hu: ArrayLike, threshold: float = -320.0) -> NDArray[np.bool_]:
    """Lung mask of one axial slice given in Hounsfield units.

    Args:
        hu: ``[H, W]`` HU values.
        threshold: voxels below it are air-like (lung or outside air).

    Returns:
        bool ``[H, W]``: the one or two largest air-like components not touching the image
        border, closed with a disk of radius ``side / 48`` and with holes filled. All False when
        no lung is found.

    Raises:
        ValueError: `hu` is not a 2-D array.
    """
    from scipy import ndimage
    from skimage.measure import label
    from skimage.morphology import disk
    from skimage.segmentation import clear_border

    img = np.asarray(hu, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D slice, got shape {img.shape}")
    inside = clear_border(img < threshold)  # drops the air around the body (touches the border)
    labels = label(inside, connectivity=1)
    areas = np.bincount(labels.ravel())[1:]
    if areas.size == 0:
        return np.zeros(img.shape, dtype=bool)
    order = np.argsort(areas)[::-1][:2]
    big = max(float(areas[order[0]]) * SECOND_LUNG_MIN, MIN_LUNG_FRACTION * img.size)
    keep = [int(i) + 1 for i in order if i == order[0] or areas[i] >= big]
    mask = np.isin(labels, keep)
    radius = max(1, round(min(img.shape) * CLOSING_FRACTION))
    # padded so that closing does not erode lungs at the image border
    closed = ndimage.binary_closing(np.pad(mask, radius), disk(radius).astype(bool))
    mask = closed[radius:-radius, radius:-radius]
    return np.asarray(ndimage.binary_fill_holes(mask), dtype=bool)


def _mask_names(raws: list[str], lines: list[int]) -> list[str]:
    """Mask file stems: the slice's stem, made unique with its line when stems repeat."""
    stems = [PurePath(r.replace("\\", "/")).stem for r in raws]
    counts = Counter(stems)
    return [s if counts[s] == 1 else f"{s}_line{ln}" for s, ln in zip(stems, lines, strict=True)]


def _slice_hu(path: Path, window: tuple[float, float], hint: str) -> NDArray[np.float32]:
    """HU of a DICOM slice, or HU reconstructed from a windowed 8-bit image via `window`."""
    from tasks.abn.synth import pixel_to_hu
    from tasks.common.dicom import is_dicom, read_hu, read_slice

    if path.is_file() and is_dicom(path):
        return read_hu(path, row_hint=hint)
    pixels = read_slice(path, window=None, row_hint=hint) * 255.0
    return pixel_to_hu(pixels, *window)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="medsweep data lungmask",
        description="Lung masks for every slice of a manifest (HU threshold, largest two "
        "components, closing, hole filling). Writes OUT/masks/<stem>.png and OUT/labels.csv "
        "(the manifest with paths relative to OUT and a 'mask' column).",
    )
    p.add_argument("manifest", help="CSV with one slice per row (DICOM or windowed PNG/JPEG)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--window",
        nargs=2,
        type=float,
        default=(-600.0, 1500.0),
        metavar=("LEVEL", "WIDTH"),
        help="window the PNG/JPEG slices were saved with, to recover HU (default: lung window)",
    )
    p.add_argument("--threshold", type=float, default=-320.0, help="air-like below (HU)")
    p.add_argument("--column", default="path", help="the manifest column with slice paths")
    return p


def main(argv: list[str]) -> int:
    """``medsweep data lungmask MANIFEST --out DIR ...``; returns the exit code (0).

    Raises:
        DataError: the manifest or one of its slices is missing or unreadable, naming the line.
    """
    from tasks.common.manifest import read_csv_rows

    parser = _parser()
    a = parser.parse_args(argv)
    if a.window[1] <= 0:
        parser.error(f"--window WIDTH must be > 0, got {a.window[1]}")
    manifest, out = Path(a.manifest), Path(a.out)
    header, rows = read_csv_rows(manifest)
    if a.column not in header:
        raise DataError(
            f"no {a.column!r} column; columns found: {header}", source=manifest, where="header"
        )
    target = out / "labels.csv"
    if target.resolve() == manifest.resolve():
        raise DataError(
            "--out would overwrite the input manifest; choose another folder", source=manifest
        )
    col = header.index(a.column)
    for line, fields in rows:
        if not fields[col]:
            raise DataError(
                "empty slice path", source=manifest, where=f"line {line}, column {a.column!r}"
            )
    names = _mask_names([f[col] for _, f in rows], [ln for ln, _ in rows])
    (out / "masks").mkdir(parents=True, exist_ok=True)
    out_header = header if "mask" in header else [*header, "mask"]
    table: list[list[str]] = []
    for (line, fields), name in zip(rows, names, strict=True):
        src = manifest.parent / os.path.expanduser(fields[col])
        hu = _slice_hu(src, tuple(a.window), f"{manifest} line {line}")
        mask = lung_mask(hu, a.threshold)
        Image.fromarray(mask.astype(np.uint8) * 255).save(out / "masks" / f"{name}.png")
        record = dict(zip(header, fields, strict=True))
        record[a.column] = os.path.relpath(os.path.abspath(src), os.path.abspath(out))
        record["mask"] = f"masks/{name}.png"
        table.append([record[c] for c in out_header])
    with target.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(out_header)
        writer.writerows(table)
    print(f"wrote {len(table)} masks to {target}")
    return 0

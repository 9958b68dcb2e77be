"""ABN data: the slice + lung-mask manifest, its checks, cached decoding, joint augmentation.

A manifest row is one CT slice (8-bit PNG/JPEG already windowed, or DICOM windowed here with
``data.window``), its lung mask (PNG, lung > 0, the slice's size), ``patient_id`` and ``label``.
Every problem is a `DataError` naming the manifest line (or the file) and what was expected.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from orchestrator.errors import DataError
from tasks.abn.config import ABNAugment, ABNData
from tasks.common.dicom import is_dicom, read_slice
from tasks.common.manifest import read_manifest
from tasks.common.torch_utils import IMAGENET_MEAN, IMAGENET_STD

MASK = "mask"
_PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2")
_PIXEL_ELEMENTS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)

Pair = tuple[NDArray[np.uint8], NDArray[np.uint8]]  # slice 0..255, mask 0/1, both [S, S]


# --- manifests -------------------------------------------------------------------------------
def read_slices(manifest: Path, image_root: str | None, *, training: bool = True) -> pd.DataFrame:
    """The manifest as a case table: ``case`` = ``path`` (absolute), ``mask`` (absolute or
    ``""``), ``label``, ``patient_id``, ``line``. Training manifests need labels, patient ids
    and masks; prediction manifests (``training=False``) need only paths."""
    frame = read_manifest(manifest, image_root=image_root, require_labels=training)
    if training and "patient_id" not in frame.columns:
        raise DataError(
            "no 'patient_id' column: slices are grouped by patient for cross-validation and the "
            "patient-level diagnosis",
            source=manifest,
            where="header",
        )
    if MASK in frame.columns:
        base = Path(image_root) if image_root else manifest.parent
        frame[MASK] = _mask_paths(frame, manifest, base, required=training)
    elif training:
        raise DataError(
            "no 'mask' column: every slice needs a lung mask (make them with `medsweep data "
            "lungmask MANIFEST --out DIR`)",
            source=manifest,
            where="header",
        )
    else:
        frame[MASK] = ""
    if training:
        check_patient_labels(frame, manifest)
    return frame.assign(case=frame["path"])


def _mask_paths(frame: pd.DataFrame, manifest: Path, base: Path, required: bool) -> list[str]:
    out = []
    for raw, line in zip(frame[MASK].tolist(), frame["line"].tolist(), strict=True):
        text = "" if pd.isna(raw) else str(raw).strip()
        where = f"line {line}, column 'mask'"
        if not text:
            if required:
                raise DataError(
                    "empty mask path; expected a lung-mask PNG", source=manifest, where=where
                )
            out.append("")
            continue
        full = os.path.normpath(os.path.join(os.path.abspath(base), os.path.expanduser(text)))
        if not os.path.isfile(full):
            raise DataError(f"mask file does not exist: {full}", source=manifest, where=where)
        out.append(full)
    return out


def check_patient_labels(frame: pd.DataFrame, manifest: Path) -> None:
    """All slices of one patient carry one label; else name the first disagreeing line."""
    first: dict[str, tuple[int, int]] = {}
    for pid, label, line in zip(frame["patient_id"], frame["label"], frame["line"], strict=True):
        seen = first.setdefault(str(pid), (int(line), int(label)))
        if seen[1] != int(label):
            raise DataError(
                f"patient {pid!r} has label {seen[1]} on line {seen[0]} and label {label} here; "
                "all slices of one patient must carry the same label",
                source=manifest,
                where=f"line {line}, column 'label'",
            )


def check_rows(frame: pd.DataFrame, manifest: Path) -> None:
    """Headers only (cheap for large sets): every slice readable and its mask of equal size."""
    for path, mask, line in zip(frame["path"], frame[MASK], frame["line"], strict=True):
        hint = f"{manifest} line {line}"
        shape = slice_shape(path, hint)
        if mask:
            size = _picture_shape(mask, hint)
            if size != shape:
                raise DataError(
                    f"mask {mask} is {size[1]}x{size[0]} px but its slice {path} is "
                    f"{shape[1]}x{shape[0]}; a lung mask must have its slice's size",
                    source=manifest,
                    where=f"line {line}, column 'mask'",
                )


def slice_shape(path: str, hint: str) -> tuple[int, int]:
    """(rows, columns) of a slice; DICOM without pixel data or with an unsupported
    PhotometricInterpretation is refused here, without decoding the pixels."""
    if not is_dicom(path):
        return _picture_shape(path, hint)
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, defer_size=1024)  # pixel data stays on disk
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"cannot read DICOM file: {exc}", source=path, where=hint) from exc
    if not any(name in ds for name in _PIXEL_ELEMENTS):
        raise DataError(
            "DICOM file has no pixel data (no PixelData element): expected a CT image slice",
            source=path,
            where=hint,
        )
    photometric = str(ds.get("PhotometricInterpretation", "")).strip() or "missing"
    if photometric not in _PHOTOMETRIC:
        raise DataError(
            f"unsupported PhotometricInterpretation {photometric!r}: expected MONOCHROME2 or "
            "MONOCHROME1 (a grey CT slice)",
            source=path,
            where=hint,
        )
    return int(ds.get("Rows", 0)), int(ds.get("Columns", 0))


def _picture_shape(path: str, hint: str) -> tuple[int, int]:
    try:
        with Image.open(path) as img:
            width, height = img.size
    except _IMAGE_ERRORS as exc:
        raise DataError(f"cannot read image: {exc}", source=path, where=hint) from exc
    return height, width


# --- decoding and caching --------------------------------------------------------------------
def load_pair(path: str, mask: str, cfg: ABNData, hint: str) -> Pair:
    """A slice (windowed, 0..255) and its 0/1 lung mask, resized to ``image_size``; a slice
    without a mask (prediction) gets an empty one."""
    size = (cfg.image_size, cfg.image_size)
    grey = read_slice(path, window=cfg.window, row_hint=hint)
    image = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    pixels = np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)
    if not mask:
        return pixels, np.zeros(size, dtype=np.uint8)
    raw = read_mask(mask, hint)
    if raw.shape != grey.shape:
        raise DataError(
            f"mask is {raw.shape[1]}x{raw.shape[0]} px, its slice {grey.shape[1]}x"
            f"{grey.shape[0]}; a lung mask must have its slice's size",
            source=mask,
            where=hint,
        )
    # area resize keeps the lung fraction of each pixel; >= 0.5 makes it 0/1 again
    small = cv2.resize(raw.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    return pixels, (small >= 0.5).astype(np.uint8)


def read_mask(path: str, hint: str) -> NDArray[np.uint8]:
    """A lung mask as 0/1: files store 0/255 (or 0/1); anything above half of 255 is lung."""
    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("L"))
    except _IMAGE_ERRORS as exc:
        raise DataError(f"cannot read mask: {exc}", source=path, where=hint) from exc
    cut = 127 if arr.max(initial=0) > 1 else 0
    return (arr > cut).astype(np.uint8)


class SliceCache:
    """Decoded (slice, mask) pairs by slice path, filled on first use."""

    def __init__(self, cfg: ABNData, manifest: str) -> None:
        self.cfg, self.manifest = cfg, manifest
        self.pairs: dict[str, Pair] = {}

    def fill(self, frame: pd.DataFrame) -> None:
        for path, mask, line in _rows(frame):
            if path not in self.pairs:
                self.pairs[path] = self.load(path, mask, line)

    def get(self, path: str, mask: str, line: int | None) -> Pair:
        pair = self.pairs.get(path)
        return pair if pair is not None else self.load(path, mask, line)

    def load(self, path: str, mask: str, line: int | None) -> Pair:
        hint = f"{self.manifest} line {line}" if line is not None else self.manifest
        return load_pair(path, mask, self.cfg, hint)


def _rows(frame: pd.DataFrame) -> list[tuple[str, str, int | None]]:
    masks = frame[MASK].fillna("") if MASK in frame.columns else pd.Series([""] * len(frame))
    lines = frame["line"] if "line" in frame.columns else pd.Series([None] * len(frame))
    return [
        (str(p), str(m), None if pd.isna(ln) else int(ln))
        for p, m, ln in zip(frame["path"], masks, lines, strict=True)
    ]


# --- datasets --------------------------------------------------------------------------------
def build_augment(aug: ABNAugment) -> v2.Compose | None:
    """Geometric transforms applied to `tv_tensors.Image` and `tv_tensors.Mask` together (the
    mask is resampled with nearest neighbours, so it stays 0/1)."""
    steps: list[Any] = []
    if aug.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(aug.hflip))
    if aug.vflip > 0:
        steps.append(v2.RandomVerticalFlip(aug.vflip))
    if aug.rotate > 0 or aug.scale > 0:
        scale = (1 - aug.scale, 1 + aug.scale) if aug.scale > 0 else None
        steps.append(v2.RandomAffine(degrees=aug.rotate, scale=scale))
    return v2.Compose(steps) if steps else None


def normalize(pixels: torch.Tensor, in_chans: int) -> torch.Tensor:
    """uint8 ``[1, H, W]`` -> float ``[C, H, W]`` with ImageNet statistics (grey repeated)."""
    x = pixels.float().div(255.0)
    if in_chans == 1:
        mean, std = sum(IMAGENET_MEAN) / 3, sum(IMAGENET_STD) / 3
        return (x - mean) / std
    m = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    s = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x.expand(3, -1, -1) - m) / s


Item = tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]


class SliceDataset(Dataset[Item]):
    """Rows of a case table; yields (image ``[C,S,S]``, mask ``[1,S,S]`` 0/1 float, label
    (-1 when unknown), row position)."""

    def __init__(
        self, frame: pd.DataFrame, cache: SliceCache, augment: v2.Compose | None, in_chans: int
    ) -> None:
        self.rows, self.cache, self.augment, self.in_chans = _rows(frame), cache, augment, in_chans
        labels = frame["label"] if "label" in frame.columns else pd.Series([-1] * len(frame))
        self.labels: list[int] = labels.fillna(-1).astype(int).tolist()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Item:
        pixels, lung = self.cache.get(*self.rows[i])
        image = tv_tensors.Image(torch.from_numpy(pixels)[None])
        mask = tv_tensors.Mask(torch.from_numpy(lung)[None])
        if self.augment is not None:
            image, mask = self.augment(image, mask)
        x = normalize(image.as_subclass(torch.Tensor), self.in_chans)
        label = torch.tensor(self.labels[i], dtype=torch.int64)
        return x, mask.as_subclass(torch.Tensor).float(), label, i

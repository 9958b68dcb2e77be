"""PET/CT pair lists and pairs: reading, checking (unpaired or size-mismatched images,
abnormal cases without a lesion mask, non-binary masks: DataError naming the file and line),
normalising and the body mask, for `tasks.anomaly.petct_task`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from PIL import Image
from scipy import ndimage
from torch.utils.data import Dataset

from orchestrator.errors import DataError
from tasks.anomaly.config import PetCtConfig
from tasks.common.froc import lesion_labels
from tasks.common.manifest import parse_label, read_csv_rows

Pair = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # CT input, PET, mask, body


def read_pairs(
    csv_path: Path, image_root: str | None = None, require_labels: bool = True
) -> pd.DataFrame:
    """The pair list: ``case`` (= CT path), ``ct``, ``pet``, ``mask`` ("" = none), ``label``,
    ``patient_id`` where given, ``line``. Unpaired rows, missing files, a file in two pairs and
    abnormal cases without a lesion mask raise DataError naming the file and line."""
    header, rows = read_csv_rows(csv_path, what="PET/CT pair list")
    need = ["ct", "pet"] + (["label"] if require_labels else [])
    missing = [c for c in need if c not in header]
    if missing:
        raise DataError(f"missing column(s) {missing}; found {header}", source=csv_path)
    col = {name: i for i, name in enumerate(header)}
    base = Path(image_root) if image_root else csv_path.parent
    seen: dict[str, int] = {}
    records = [_pair_row(fields, col, line, base, csv_path, seen) for line, fields in rows]
    frame = pd.DataFrame(records)
    drop = [c for c in ("label", "patient_id") if c not in col]
    return frame.drop(columns=drop).assign(case=frame["ct"])


def _pair_row(
    fields: list[str],
    col: dict[str, int],
    line: int,
    base: Path,
    csv_path: Path,
    seen: dict[str, int],
) -> dict[str, Any]:
    """One checked row of the pair list (`seen`: files already paired, with their line)."""
    cell = {c: fields[col[c]] if c in col else "" for c in ("ct", "pet", "mask", "label")}
    for kind, other in (("ct", "PET"), ("pet", "CT")):
        if not cell[kind]:
            raise DataError(
                f"unpaired row: a {other} image without its {kind.upper()} image",
                source=csv_path,
                where=f"line {line}, column {kind!r}",
            )
    paths = {k: _resolve(base, cell[k]) for k in ("ct", "pet", "mask") if cell[k]}
    for kind, path in paths.items():
        where = f"line {line}, column {kind!r}"
        if not Path(path).is_file():
            raise DataError(f"{kind} file does not exist: {path}", source=csv_path, where=where)
        if kind != "mask" and path in seen:
            raise DataError(
                f"unpaired: {path} is also in the pair on line {seen[path]}",
                source=csv_path,
                where=where,
            )
        seen.setdefault(path, line)
    label = parse_label(cell["label"], csv_path, line, "label") if "label" in col else -1
    if label == 1 and "mask" not in paths:
        raise DataError(
            "abnormal case (label 1) without a lesion mask: the lesion-level FROC needs one",
            source=csv_path,
            where=f"line {line}, column 'mask'",
        )
    group = fields[col["patient_id"]] if "patient_id" in col else ""
    return {
        "ct": paths["ct"],
        "pet": paths["pet"],
        "mask": paths.get("mask", ""),
        "label": label,
        "patient_id": group or f"line{line}",
        "line": line,
    }


def _resolve(base: Path, raw: str) -> str:
    return str((base / Path(raw).expanduser()).resolve())


def _read_array(path: str, source: Path, where: str) -> np.ndarray:
    try:
        if path.lower().endswith(".npy"):
            return np.asarray(np.load(path, allow_pickle=False))
        with Image.open(path) as img:
            return np.asarray(img)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read {path}: {exc}", source=source, where=where) from exc


def body_mask(hu: np.ndarray, air_hu: float) -> np.ndarray:
    """Everything but the air connected to the image border. Thresholding tissue and filling
    holes would lose lungs that touch a one-pixel body wall at low resolution."""
    labels, _ = ndimage.label(hu <= air_hu)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return ~np.isin(labels, border[border > 0])


def load_pair(row: Any, cfg: PetCtConfig) -> Pair:
    """CT input in [0, 1], PET (SUV), lesion mask (0/1) and body mask of one manifest row."""
    d, source = cfg.data, Path(cfg.data.manifest)
    where = f"line {row.line}"
    ct = _read_array(row.ct, source, where).astype(np.float32)
    pet = _read_array(row.pet, source, where).astype(np.float32)
    if ct.ndim != 2 or pet.shape != ct.shape:
        raise DataError(
            f"size mismatch: CT {row.ct} is {ct.shape}, PET {row.pet} is {pet.shape}; a pair "
            "is one 2-D slice of one size",
            source=source,
            where=where,
        )
    mask = np.zeros(ct.shape, np.uint8)
    if row.mask:
        raw = _read_array(row.mask, source, where)
        lesion_labels(raw, name="lesion mask", source=row.mask, where=f"{source} {where}")
        if raw.shape != ct.shape:
            raise DataError(
                f"lesion mask {raw.shape} differs from the CT {ct.shape}",
                source=row.mask,
                where=f"{source} {where}",
            )
        mask = (raw > 0).astype(np.uint8)
    hu = ct - d.ct_offset
    body = body_mask(hu, d.air_hu).astype(np.uint8)
    lo, hi = d.ct_window
    x = (np.clip(hu, lo, hi) - lo) / (hi - lo)
    arrays = [x, pet, mask, body]
    if d.image_size is not None and ct.shape != (d.image_size, d.image_size):
        dsize = (d.image_size, d.image_size)
        modes = (cv2.INTER_AREA, cv2.INTER_AREA, cv2.INTER_NEAREST, cv2.INTER_NEAREST)
        pairs = zip(arrays, modes, strict=True)
        arrays = [np.asarray(cv2.resize(a, dsize, interpolation=m)) for a, m in pairs]
    x, pet, mask, body = arrays
    return x.astype(np.float32), pet.astype(np.float32), mask.astype(np.uint8), body > 0


def load_nth(rows: list[Any], cfg: PetCtConfig, i: int) -> Pair:
    return load_pair(rows[i], cfg)


class PairDataset(Dataset[tuple[Any, ...]]):
    """Items ``(ct [1,H,W], pet [1,H,W], mask [1,H,W], body [1,H,W], keep, position)``;
    ``get(i)`` returns the i-th pair (from memory, or read from disk with `data.cache` off)."""

    def __init__(self, get: Callable[[int], Pair], positions: np.ndarray, keep: np.ndarray) -> None:
        self.get, self.positions, self.keep = get, positions, keep

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        x, pet, mask, body = (torch.from_numpy(a)[None] for a in self.get(i))
        return x, pet, mask, body, bool(self.keep[i]), int(self.positions[i])

"""CSV of lesions -> COCO train/val/test files split by patient (seed 000's conversion step).

Input CSV: one row per lesion with the columns ``image, x, y, w, h, diagnosis, age, sex,
patient_id`` (any order, extra columns ignored). ``x, y, w, h`` is the box in pixels (COCO
``[x, y, width, height]``, top-left origin). A row whose ``x, y, w, h, diagnosis`` are all empty
stands for an image without lesion (a negative). ``sex`` is ``M``/``F`` (``male``/``female``
accepted, empty = unknown); ``age`` is a number (empty = unknown).

File names (the convention of the whole detection family): ``file_name`` in a COCO file is
relative to the folder of that COCO file, so the loaders find the images without an explicit
image root (``tasks.detection.data.image_path`` resolves it that way). The CSV's ``image`` paths
are relative to ``image_root`` (default: the CSV's folder) and are rewritten relative to
``out_dir``.

Every problem raises :class:`~orchestrator.errors.DataError` naming the CSV, the line and the
column.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from orchestrator.errors import DataError, UserError
from tasks.common.coco import load_coco_gt

__all__ = ["COLUMNS", "SPLITS", "csv_to_coco", "read_coco", "split_groups", "write_coco"]

log = logging.getLogger(__name__)

COLUMNS = ("image", "x", "y", "w", "h", "diagnosis", "age", "sex", "patient_id")
LESION_COLUMNS = ("x", "y", "w", "h", "diagnosis")
SPLITS = ("train", "val", "test")
BOX_TOLERANCE_PX = 1e-6  # boxes must lie inside the image; only float rounding is forgiven
_SEX = {"m": "M", "male": "M", "f": "F", "female": "F", "": None}


def split_groups(sizes: Sequence[int], fractions: Sequence[float], seed: int) -> list[int]:
    """Split index of each group, whole groups only, with item fractions as close as possible.

    The groups are shuffled (seeded), then cut where the cumulative item count is nearest to
    each target; every split with a positive fraction gets at least one group when there are
    enough groups.
    """
    n_groups = len(sizes)
    if n_groups == 0:
        return []
    order = np.random.default_rng(seed).permutation(n_groups)
    cum = np.cumsum(np.asarray(sizes, dtype=np.int64)[order])
    total = float(cum[-1])
    assign = np.zeros(n_groups, dtype=np.int64)
    prev = 0
    for s in range(len(fractions) - 1):
        need_after = sum(1 for f in fractions[s + 1 :] if f > 0)
        hi = max(prev, n_groups - need_after)
        lo = min(prev + (1 if fractions[s] > 0 else 0), hi)
        ks = np.arange(lo, hi + 1)
        counts = np.where(ks > 0, cum[np.maximum(ks - 1, 0)], 0)
        k = int(ks[np.argmin(np.abs(counts - sum(fractions[: s + 1]) * total))])
        assign[order[k:]] = s + 1
        prev = k
    return [int(a) for a in assign]


def check_fractions(split: Sequence[float]) -> tuple[float, ...]:
    """The three split fractions, or UserError unless they are >= 0 and sum to 1."""
    fr = tuple(float(f) for f in split)
    if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1.0) > 1e-6:
        raise UserError(f"split must be 3 fractions >= 0 that sum to 1 (train, val, test): {split}")
    return fr


def read_coco(path: Path) -> dict[str, Any]:
    """A validated COCO file (``cocoio.load_coco_gt``), except that an empty split is fine."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        raw = None  # load_coco_gt explains the problem
    if isinstance(raw, dict) and raw.get("images") == [] and not raw.get("annotations"):
        return {**raw, "annotations": [], "categories": raw.get("categories") or []}
    return load_coco_gt(path)[0]


def write_coco(
    path: Path,
    images: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
    categories: Sequence[str],
    info: dict[str, Any],
) -> Path:
    """Write one COCO file (categories get ids 1..n in the given order)."""
    cats = [{"id": i + 1, "name": c, "supercategory": "lesion"} for i, c in enumerate(categories)]
    data = {
        "info": info,
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": cats,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    # indent=1 keeps large files readable (the seed kept an indented copy) at little cost.
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


@dataclass
class _ImageRec:
    """One image collected from the CSV (first line that named it, for messages)."""

    line: int
    name: str
    patient: str
    age: float | None
    sex: str | None
    width: int
    height: int
    boxes: list[tuple[int, list[float], str]] = field(default_factory=list)  # (line, box, diag)
    negative_line: int | None = None


class _Reader:
    """Row-by-row validation of the lesion CSV; raises DataError naming line and column."""

    def __init__(self, csv_path: Path, image_root: Path, categories: list[str] | None) -> None:
        self.csv_path, self.root, self.categories = csv_path, image_root, categories
        self.images: dict[str, _ImageRec] = {}
        self.patient_sex: dict[str, tuple[str, int]] = {}

    def fail(self, line: int, column: str | None, message: str) -> DataError:
        where = f"line {line}" + (f", column '{column}'" if column else "")
        return DataError(message, source=self.csv_path, where=where)

    def number(self, row: dict[str, str], col: str, line: int) -> float:
        text = row[col].strip()
        try:
            value = float(text)
        except ValueError:
            raise self.fail(line, col, f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise self.fail(line, col, f"{text!r} is not a finite number")
        return value

    def image_size(self, name: str, line: int) -> tuple[int, int]:
        path = self.root / name
        if not path.is_file():
            raise self.fail(line, "image", f"image file {path} does not exist")
        try:
            with Image.open(path) as img:
                size = img.size
                img.verify()  # reads every chunk: catches truncated or corrupt files
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
            raise self.fail(line, "image", f"cannot read image {path}: {exc}") from None
        return size

    def meta(self, row: dict[str, str], line: int) -> tuple[str, float | None, str | None]:
        patient = row["patient_id"].strip()
        if not patient:
            raise self.fail(line, "patient_id", "patient_id is empty")
        age: float | None = None
        if row["age"].strip():
            age = self.number(row, "age", line)
            if not 0 <= age <= 130:
                raise self.fail(line, "age", f"age {age:g} is outside 0..130")
        sex_text = row["sex"].strip()
        if sex_text.lower() not in _SEX:
            raise self.fail(line, "sex", f"sex {sex_text!r} is not M or F (or empty)")
        sex = _SEX[sex_text.lower()]
        if sex is not None:
            first = self.patient_sex.setdefault(patient, (sex, line))
            if first[0] != sex:
                raise self.fail(
                    line,
                    "sex",
                    f"patient {patient!r} has sex {sex} here but {first[0]} on line {first[1]}",
                )
        return patient, age, sex

    def image(self, row: dict[str, str], line: int) -> _ImageRec:
        name = row["image"].strip()
        if not name:
            raise self.fail(line, "image", "image is empty")
        patient, age, sex = self.meta(row, line)
        rec = self.images.get(name)
        if rec is None:
            width, height = self.image_size(name, line)
            rec = _ImageRec(line, name, patient, age, sex, width, height)
            self.images[name] = rec
            return rec
        # Rows of one image must agree on who the image belongs to.
        for col, old, new in (("patient_id", rec.patient, patient), ("age", rec.age, age)):
            if old != new:
                raise self.fail(
                    line,
                    col,
                    f"image {name!r} has {col} {new!r} here but {old!r} on line {rec.line}",
                )
        rec.sex = rec.sex or sex
        return rec

    def box(self, row: dict[str, str], line: int, rec: _ImageRec) -> tuple[list[float], str]:
        x, y, w, h = (self.number(row, c, line) for c in ("x", "y", "w", "h"))
        for col, value in (("w", w), ("h", h)):
            if value <= 0:
                raise self.fail(line, col, f"{col} {value:g} must be positive")
        tol = BOX_TOLERANCE_PX
        for col, lo, hi, size in (("x", x, x + w, rec.width), ("y", y, y + h, rec.height)):
            if lo < -tol or hi > size + tol:
                raise self.fail(
                    line,
                    col,
                    f"box [{x:g}, {y:g}, {w:g}, {h:g}] lies outside the {rec.width}x"
                    f"{rec.height} image {rec.name!r}",
                )
        diagnosis = row["diagnosis"].strip()
        if self.categories is not None and diagnosis not in self.categories:
            raise self.fail(
                line,
                "diagnosis",
                f"unknown diagnosis {diagnosis!r}; expected one of {', '.join(self.categories)}",
            )
        return [x, y, w, h], diagnosis

    def row(self, row: dict[str, str], line: int) -> None:
        rec = self.image(row, line)
        filled = [c for c in LESION_COLUMNS if row[c].strip()]
        if not filled:
            rec.negative_line = rec.negative_line or line
        elif len(filled) < len(LESION_COLUMNS):
            empty = next(c for c in LESION_COLUMNS if not row[c].strip())
            raise self.fail(
                line,
                empty,
                f"{empty} is empty; a lesion row needs all of x, y, w, h, diagnosis "
                "(leave all five empty for an image without lesion)",
            )
        else:
            box, diagnosis = self.box(row, line, rec)
            rec.boxes.append((line, box, diagnosis))
        if rec.boxes and rec.negative_line is not None:
            raise self.fail(
                max(rec.negative_line, rec.boxes[0][0]),
                None,
                f"image {rec.name!r} has both a lesion row (line {rec.boxes[0][0]}) and an "
                f"empty 'no lesion' row (line {rec.negative_line})",
            )


def _read_csv(csv_path: Path, reader: _Reader) -> None:
    try:
        fh = csv_path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"cannot read the CSV: {exc}", source=csv_path) from None
    with fh:
        rows = csv.DictReader(fh)
        found = [c.strip() for c in rows.fieldnames or []]
        missing = [c for c in COLUMNS if c not in found]
        if missing:
            raise DataError(
                f"missing column(s) {', '.join(missing)}; found {', '.join(found) or 'none'}",
                source=csv_path,
                where="line 1",
            )
        rows.fieldnames = found
        for row in rows:
            if None in row or any(row.get(c) is None for c in COLUMNS):
                raise reader.fail(rows.line_num, None, "wrong number of fields")
            reader.row(row, rows.line_num)
    if not reader.images:
        raise DataError("the CSV has no data rows", source=csv_path)


def _coco_entries(
    recs: list[_ImageRec], out_dir: Path, root: Path, cat_ids: dict[str, int]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """COCO image and annotation entries; ids follow the CSV order (1-based)."""
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    for image_id, rec in enumerate(recs, start=1):
        rel = Path(os.path.relpath((root / rec.name).resolve(), out_dir.resolve())).as_posix()
        age = None if rec.age is None else (int(rec.age) if rec.age.is_integer() else rec.age)
        images.append(
            {
                "id": image_id,
                "file_name": rel,
                "width": rec.width,
                "height": rec.height,
                "patient_id": rec.patient,
                "age": age,
                "sex": rec.sex,
            }
        )
        for _, box, diagnosis in rec.boxes:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": cat_ids[diagnosis],
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    return images, anns


def csv_to_coco(
    csv_path: Path,
    out_dir: Path,
    *,
    image_root: Path | None = None,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    categories: list[str] | None = None,
) -> dict[str, Path]:
    """Convert a lesion CSV into ``out_dir/{train,val,test}.json``, split by patient.

    Args:
        csv_path: the CSV (columns: see the module docstring).
        out_dir: folder for the three COCO files (created).
        image_root: folder the CSV's ``image`` paths are relative to (default: the CSV's folder).
        split: fractions of *images* for train, val, test; whole patients go to one split
            (shuffled with ``seed``, cut where the image counts come closest to the fractions).
        seed: shuffling seed of the patient split.
        categories: category names in id order (ids 1..n); a diagnosis not in the list is an
            error. Default: the unique diagnoses sorted case-insensitively.

    Returns:
        ``{"train": path, "val": path, "test": path}``. Each file's ``info`` holds its counts
        (``images``, ``annotations``, ``patients``), which are also logged.

    Raises:
        DataError: naming the CSV line and column of the first problem.
        UserError: for invalid ``split`` fractions.
    """
    fractions = check_fractions(split)
    csv_path, out_dir = Path(csv_path), Path(out_dir)
    root = Path(image_root) if image_root is not None else csv_path.parent
    reader = _Reader(csv_path, root, list(categories) if categories is not None else None)
    _read_csv(csv_path, reader)
    recs = list(reader.images.values())
    names = categories or sorted(
        {d for r in recs for _, _, d in r.boxes}, key=lambda s: (s.casefold(), s)
    )
    cat_ids = {c: i + 1 for i, c in enumerate(names)}
    images, anns = _coco_entries(recs, out_dir, root, cat_ids)

    patients = sorted({img["patient_id"] for img in images})
    sizes = [0] * len(patients)
    index = {p: i for i, p in enumerate(patients)}
    for img in images:
        sizes[index[img["patient_id"]]] += 1
    assign = split_groups(sizes, fractions, seed)
    paths: dict[str, Path] = {}
    for s, name in enumerate(SPLITS):
        keep = {p for p, a in zip(patients, assign, strict=True) if a == s}
        imgs = [img for img in images if img["patient_id"] in keep]
        ids = {img["id"] for img in imgs}
        part = [a for a in anns if a["image_id"] in ids]
        info = {
            "description": f"{csv_path.name} converted by medsweep (split by patient)",
            "split": name,
            "seed": seed,
            "images": len(imgs),
            "annotations": len(part),
            "patients": len(keep),
        }
        paths[name] = write_coco(out_dir / f"{name}.json", imgs, part, names, info)
        log.info("%s: %d images, %d lesions, %d patients", name, len(imgs), len(part), len(keep))
    return paths

"""Safe reading of COCO ground truth and COCO-results detections (training and `eval detection`).

Every problem raises :class:`~orchestrator.errors.DataError` naming the file and the offending
entry (``annotations[17] (id 42)``). With ``skip_invalid=True`` invalid images, annotations and
detections are dropped instead and each drop is reported in the returned notes — never silently.
Duplicate ids and a broken category list are never skippable: they make every id ambiguous.

Boxes are COCO ``[x, y, width, height]`` in pixels; a ground-truth box may reach
:data:`BOX_TOLERANCE_PX` beyond the image border (rounding in annotation tools).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.errors import DataError
from tasks.common.coco_columns import (
    Columns,
    Detections,
    decode_valid,
    gc_paused,
    merged,
    raw_columns,
)

__all__ = ["BOX_TOLERANCE_PX", "MAX_NOTES", "Detections", "load_coco_gt", "load_detections"]

BOX_TOLERANCE_PX = 1.0
MAX_NOTES = 50  # per-entry notes kept after the summary; the summary always has the full counts
_TOP_KEYS = ("images", "annotations", "categories")


class _Invalid(Exception):
    """One entry is invalid; the caller decides between skipping it and raising DataError."""


class _Skipper:
    """Raises DataError for an invalid entry, or (skip_invalid) records it as a note."""

    def __init__(self, source: Path | None, skip: bool) -> None:
        self.source, self.skip = source, skip
        self.notes: list[str] = []
        self.counts: dict[str, int] = {}

    def invalid(self, kind: str, where: str, message: str) -> None:
        if not self.skip:
            raise DataError(message, source=self.source, where=where)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.notes.append(f"{where}: {message} — skipped")

    def report(self, totals: dict[str, int]) -> list[str]:
        if not self.counts:
            return []
        parts = [f"{n} of {totals[k]} {k}" for k, n in self.counts.items()]
        name = self.source.name if self.source else "detections"
        head = f"{name}: skipped {', '.join(parts)} as invalid"
        extra = len(self.notes) - MAX_NOTES
        tail = [f"... and {extra} more"] if extra > 0 else []
        return [head, *self.notes[:MAX_NOTES], *tail]


def _label(kind: str, i: int, entry: Any) -> str:
    if isinstance(entry, dict) and "id" in entry:
        return f"{kind}[{i}] (id {entry['id']!r})"
    return f"{kind}[{i}]"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DataError(f"{what} file does not exist", source=path)
    try:
        with path.open(encoding="utf-8-sig") as fh, gc_paused():
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"not valid JSON: {exc.msg}",
            source=path,
            where=f"line {exc.lineno}, column {exc.colno}",
        ) from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason})", source=path) from exc
    except OSError as exc:
        raise DataError(f"cannot read {what} file: {exc}", source=path) from exc


def _bbox(value: Any) -> list[float]:
    """``[x, y, w, h]`` as floats; _Invalid unless 4 finite numbers with positive w and h."""
    if not (isinstance(value, list) and len(value) == 4 and all(map(_is_number, value))):
        raise _Invalid(f"bbox {value!r} is not 4 finite numbers [x, y, width, height]")
    box = [float(v) for v in value]
    if box[2] <= 0 or box[3] <= 0:
        raise _Invalid(f"bbox {value!r} has zero or negative width/height")
    return box


def _unique_ids(entries: list[Any], kind: str, source: Path) -> None:
    """DataError on the second use of an id; ids are never skippable (they would stay ambiguous)."""
    first: dict[Any, int] = {}
    for i, entry in enumerate(entries):
        if isinstance(entry, dict) and _is_int(entry.get("id")):
            j = first.setdefault(entry["id"], i)
            if j != i:
                raise DataError(
                    f"duplicate id {entry['id']} (first used by {kind}[{j}]); ids must be unique",
                    source=source,
                    where=_label(kind, i, entry),
                )


def _categories(raw: list[Any], source: Path) -> list[dict[str, Any]]:
    names: dict[str, int] = {}
    for i, cat in enumerate(raw):
        where = _label("categories", i, cat)
        if not (isinstance(cat, dict) and _is_int(cat.get("id"))):
            raise DataError("expected an object with an integer 'id'", source=source, where=where)
        name = cat.get("name")
        if not (isinstance(name, str) and name):
            raise DataError("expected a non-empty string 'name'", source=source, where=where)
        j = names.setdefault(name, i)
        if j != i:  # metrics are keyed by class name
            raise DataError(
                f"duplicate category name {name!r} (first used by categories[{j}])",
                source=source,
                where=where,
            )
    _unique_ids(raw, "categories", source)
    return raw


def _ref(entry: dict[str, Any], key: str, known: Collection[int], what: str) -> int:
    """``entry[key]`` when it is an integer id in ``known`` (``True`` is not id 1)."""
    value = entry.get(key)
    if not (_is_int(value) and value in known):
        raise _Invalid(f"{key} {value!r} is not {what}")
    return value  # type: ignore[return-value]


def _check_image(img: Any, root: Path | None) -> dict[str, Any]:
    if not isinstance(img, dict):
        raise _Invalid("expected an object")
    if not _is_int(img.get("id")):
        raise _Invalid(f"'id' {img.get('id')!r} is not an integer")
    for key in ("width", "height"):
        if not (_is_number(img.get(key)) and img[key] > 0):
            raise _Invalid(f"{key!r} {img.get(key)!r} is not a positive number")
    name = img.get("file_name")
    if not (isinstance(name, str) and name):
        raise _Invalid("'file_name' is missing or not a string")
    if root is not None and not (root / name).is_file():
        raise _Invalid(f"image file {name!r} not found under {root}")
    return img


def _check_annotation(
    ann: Any, images: dict[int, dict[str, Any]], cat_ids: set[int]
) -> dict[str, Any]:
    """The annotation with ``area``/``iscrowd`` filled in (pycocotools needs both)."""
    if not (isinstance(ann, dict) and _is_int(ann.get("id"))):
        raise _Invalid("expected an object with an integer 'id'")
    img = images[_ref(ann, "image_id", images.keys(), "a (valid) image of this file")]
    _ref(ann, "category_id", cat_ids, "a category of this file")
    x, y, w, h = _bbox(ann.get("bbox"))
    tol = BOX_TOLERANCE_PX
    if x < -tol or y < -tol or x + w > img["width"] + tol or y + h > img["height"] + tol:
        raise _Invalid(
            f"bbox {ann['bbox']!r} lies outside the {img['width']}x{img['height']} image "
            f"(tolerance {tol:g} px)"
        )
    return {**ann, "area": ann.get("area", w * h), "iscrowd": ann.get("iscrowd", 0)}


def _valid_entries(
    entries: list[Any], kind: str, skipper: _Skipper, check: Callable[[Any], dict[str, Any]]
) -> list[dict[str, Any]]:
    """``check(entry)`` of every entry that passes; the others go to ``skipper``."""
    out: list[dict[str, Any]] = []
    for i, entry in enumerate(entries):
        try:
            out.append(check(entry))
        except _Invalid as exc:
            skipper.invalid(kind, _label(kind, i, entry), str(exc))
    return out


def load_coco_gt(
    path: str | Path,
    *,
    image_root: str | Path | None = None,
    check_files: bool = False,
    skip_invalid: bool = False,
) -> tuple[dict[str, Any], list[str]]:
    """Read and validate a COCO ground-truth file.

    Args:
        path: the COCO JSON (``images``, ``annotations``, ``categories``).
        image_root: folder that relative ``file_name`` values are resolved against
            (default: the JSON's folder); only used with ``check_files``.
        check_files: also require every image file to exist.
        skip_invalid: drop invalid images (with their annotations) and annotations, and
            describe each drop in the notes, instead of raising.

    Returns:
        ``(coco, notes)``: the validated dict (other top-level keys and extra per-image fields
        such as age, sex, patient_id pass through; images without annotations are kept as
        negatives) and human-readable notes on what was skipped (empty when nothing was).

    Raises:
        DataError: naming the file and the entry, for the first problem found.
    """
    source = Path(path)
    data = _read_json(source, "ground-truth")
    if not isinstance(data, dict):
        raise DataError(
            "expected a COCO object with images, annotations, categories", source=source
        )
    for key in _TOP_KEYS:
        if not isinstance(data.get(key), list):
            raise DataError(f"top-level {key!r} is missing or not a list", source=source)
    cats = _categories(data["categories"], source)
    _unique_ids(data["images"], "images", source)
    _unique_ids(data["annotations"], "annotations", source)
    skipper = _Skipper(source, skip_invalid)
    root = Path(image_root) if image_root is not None else source.parent
    files = root if check_files else None
    images = _valid_entries(data["images"], "images", skipper, lambda im: _check_image(im, files))
    by_id = {img["id"]: img for img in images}
    cat_ids = {c["id"] for c in cats}
    anns = _valid_entries(
        data["annotations"], "annotations", skipper, lambda a: _check_annotation(a, by_id, cat_ids)
    )
    totals = {k: len(data[k]) for k in ("images", "annotations")}
    coco = {**data, "images": images, "annotations": anns, "categories": cats}
    return coco, skipper.report(totals)


def _check_detection(det: Any, image_ids: set[int], cat_ids: set[int]) -> dict[str, Any]:
    if not isinstance(det, dict):
        raise _Invalid("expected an object {image_id, category_id, bbox, score}")
    _ref(det, "image_id", image_ids, "an image of the ground truth")
    _ref(det, "category_id", cat_ids, "a category of the ground truth")
    box = _bbox(det.get("bbox"))
    score: Any = det.get("score")
    if not (_is_number(score) and 0.0 <= score <= 1.0):
        raise _Invalid(f"score {score!r} is not a finite number within [0, 1]")
    return {
        "image_id": det["image_id"],
        "category_id": det["category_id"],
        "bbox": box,
        "score": float(score),
    }


def load_detections(
    path_or_list: str | Path | Sequence[Any], gt: dict[str, Any], *, skip_invalid: bool = False
) -> tuple[Detections, list[str]]:
    """Read and validate detections in the COCO results format against validated ground truth.

    Args:
        path_or_list: a JSON file holding ``[{image_id, category_id, bbox: [x, y, w, h], score}]``,
            or that list itself.
        gt: the ground truth from :func:`load_coco_gt`.
        skip_invalid: drop invalid detections and describe each drop in the notes.

    Returns:
        ``(detections, notes)``: the valid detections as columns (:class:`Detections`, which
        reads as a list of fresh dicts with exactly the four keys, ids as ints, bbox and score
        as floats), and notes on what was skipped.

    Raises:
        DataError: naming the file and ``detections[i]`` of the first problem found.
    """
    image_ids = {img["id"] for img in gt["images"]}
    cat_ids = {c["id"] for c in gt["categories"]}
    if isinstance(path_or_list, (str, Path)):
        source: Path | None = Path(path_or_list)
        fast = _read_valid(Path(path_or_list), image_ids, cat_ids)
        if fast is not None:
            return fast, []
        raw = _read_json(Path(path_or_list), "detections")
    else:
        source, raw = None, list(path_or_list)
    if not isinstance(raw, list):
        raise DataError(
            "expected a JSON list of {image_id, category_id, bbox, score} (COCO results format)",
            source=source,
        )
    skipper = _Skipper(source, skip_invalid)
    dets = _valid_detections(raw, skipper, image_ids, cat_ids)
    return dets, skipper.report({"detections": len(raw)})


# ---------------------------------------------------------------- detections, vectorised
#
# Hundreds of thousands of detections are checked column by column (tasks.common.coco_columns).
# Only the entries a column check flags ("suspects": an unusual type, a value out of range) go
# through the per-entry checks above, which decide and word the verdict; so the result, the
# messages and their order are exactly those of checking every entry one by one. A file is first
# decoded strictly into columns and taken as is when every entry is valid; any doubt (or an
# invalid entry to name) sends it through the standard library's parser and the path above.


def _read_valid(path: Path, image_ids: set[int], cat_ids: set[int]) -> Detections | None:
    """The detections of `path` when every entry is valid; None for anything else."""
    try:
        data = path.read_bytes()
    except OSError:  # _read_json words it
        return None
    with gc_paused():
        return decode_valid(data, image_ids, cat_ids)


def _valid_detections(
    raw: list[Any], skipper: _Skipper, image_ids: set[int], cat_ids: set[int]
) -> Detections:
    """``_valid_entries`` over detections, vectorised (see the comment above)."""
    columns: Columns | None
    try:
        with gc_paused():
            columns, suspect = raw_columns(raw, image_ids, cat_ids)
    except (OverflowError, ValueError):  # ids or coordinates numpy cannot hold: check one by one
        columns, suspect = None, np.ones(len(raw), dtype=bool)
    if columns is not None and not suspect.any():
        return Detections(*columns)
    fixed: dict[int, dict[str, Any]] = {}
    for i in np.flatnonzero(suspect).tolist():
        try:
            fixed[i] = _check_detection(raw[i], image_ids, cat_ids)
        except _Invalid as exc:
            skipper.invalid("detections", _label("detections", i, raw[i]), str(exc))
    return merged(columns, ~suspect, fixed)

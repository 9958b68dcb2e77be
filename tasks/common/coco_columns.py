"""COCO-results detections as columns (numpy arrays) and their vectorised checks.

:func:`tasks.common.coco.load_detections` returns :class:`Detections`, four arrays instead of a
dict per detection: seed 000's 839k detections are read, checked and scored without building
839k Python dicts (issue 14: <= 1 s from file to checked detections). It still reads as the list
of ``{image_id, category_id, bbox, score}`` dicts it replaced.

Nothing here words a verdict: these functions only *flag*. A file goes through
:func:`decode_valid` (strict, typed decoding by msgspec) and is taken as is only when every
entry is valid; anything unusual sends it back to the standard library's parser and
:func:`raw_columns`, whose suspects the per-entry checks in tasks.common.coco decide and word.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from operator import attrgetter
from typing import Any, overload

import msgspec
import numpy as np
from numpy.typing import NDArray

__all__ = ["Columns", "Detections", "decode_valid", "gc_paused", "merged", "raw_columns"]

Ids = NDArray[Any]  # int64; object only for ids numpy cannot hold
Floats = NDArray[np.float64]
Mask = NDArray[np.bool_]
Columns = tuple[Ids, Ids, Floats, Floats]  # image_id, category_id, bbox (n x 4), score

_KEYS = ("image_id", "category_id", "bbox", "score")
_INT = frozenset({int})
_NUMBER_TYPES = frozenset({int, float})
_INT64 = np.iinfo(np.int64)


class Detections(Sequence[dict[str, Any]]):
    """Checked detections as read-only columns: ``image_id``, ``category_id`` (int64),
    ``bbox`` (n x 4 float64, ``[x, y, w, h]``) and ``score`` (float64). Indexing and iterating
    give fresh ``{image_id, category_id, bbox, score}`` dicts of Python ints and floats; it
    equals a list of such dicts with the same values."""

    __slots__ = _KEYS

    def __init__(self, image_id: Ids, category_id: Ids, bbox: Floats, score: Floats) -> None:
        n = len(score)
        if not (len(image_id) == len(category_id) == n and bbox.shape == (n, 4)):
            raise ValueError("detection columns differ in length")
        self.image_id, self.category_id, self.bbox, self.score = image_id, category_id, bbox, score
        for column in (image_id, category_id, bbox, score):
            column.flags.writeable = False  # shared by every consumer

    @classmethod
    def from_dicts(cls, dets: Sequence[dict[str, Any]]) -> Detections:
        """Columns of detections that passed the checks (ids as int64 where they fit)."""
        boxes = np.array([d["bbox"] for d in dets], dtype=np.float64).reshape(len(dets), 4)
        return cls(
            _id_array([d["image_id"] for d in dets]),
            _id_array([d["category_id"] for d in dets]),
            boxes,
            np.array([d["score"] for d in dets], dtype=np.float64),
        )

    def __len__(self) -> int:
        return len(self.score)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> Detections: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | Detections:
        if isinstance(index, slice):
            return Detections(*(getattr(self, k)[index] for k in _KEYS))
        return _entry(
            int(self.image_id[index]),
            int(self.category_id[index]),
            self.bbox[index].tolist(),
            float(self.score[index]),
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        columns = (getattr(self, k).tolist() for k in _KEYS)
        return (_entry(*values) for values in zip(*columns, strict=True))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Detections, list)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking, like the list it replaces

    def __repr__(self) -> str:
        return f"Detections({len(self)} detections)"


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while millions of acyclic lists and dicts are made: each
    collection would walk every object alive (the raw detections too), over and over. Cycles
    made meanwhile wait for the next collection after it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _entry(image_id: int, category_id: int, bbox: list[float], score: float) -> dict[str, Any]:
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


def _id_array(values: list[int]) -> Ids:
    try:
        return np.array(values, dtype=np.int64)
    except OverflowError:
        return np.array(values, dtype=object)


def _known(ids: set[int]) -> NDArray[np.int64]:
    """The ids an int64 column can hold (no other can match one)."""
    fits = [i for i in ids if _INT64.min <= i <= _INT64.max]
    return np.array(fits, dtype=np.int64)


def _bad_values(columns: Columns, image_ids: set[int], cat_ids: set[int]) -> Mask:
    """Per row: an unknown id, a non-finite coordinate, w or h <= 0, or a score outside [0, 1]."""
    img, cat, box, score = columns
    bad = ~np.isin(img, _known(image_ids)) | ~np.isin(cat, _known(cat_ids))
    bad |= ~np.isfinite(box).all(axis=1) | (box[:, 2:] <= 0).any(axis=1)
    return bad | ~np.isfinite(score) | (score < 0) | (score > 1)


# ---------------------------------------------------------------- a JSON file, strictly typed


class _Entry(msgspec.Struct, gc=False):
    """A detection with exactly the types the checks accept: ints (not bools, not 2.0), four
    numbers, a number. Other keys are ignored, as the checks ignore them."""

    image_id: int
    category_id: int
    bbox: tuple[float, float, float, float]
    score: float


_DECODER = msgspec.json.Decoder(list[_Entry])
_BOM = b"\xef\xbb\xbf"


def decode_valid(data: bytes, image_ids: set[int], cat_ids: set[int]) -> Detections | None:
    """The detections of a COCO-results JSON document when every entry is valid, else None.

    None for anything the strict decoding or the value checks flag: not UTF-8, beyond strict
    JSON (NaN, Infinity), a wrong type or a missing key, an id numpy cannot hold, an invalid
    value. The caller then parses with the standard library and checks entry by entry, which
    accepts exactly what was accepted here (with the same values) and words the rejections.
    """
    if data.startswith(_BOM):  # as the "utf-8-sig" codec of the standard path
        data = data[len(_BOM) :]
    if not data.isascii():  # msgspec skips ignored strings without validating them
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    try:
        entries = _DECODER.decode(data)
    except msgspec.MsgspecError:
        return None
    n = len(entries)
    try:
        img = np.fromiter(map(attrgetter("image_id"), entries), np.int64, count=n)
        cat = np.fromiter(map(attrgetter("category_id"), entries), np.int64, count=n)
    except OverflowError:
        return None
    boxes = chain.from_iterable(map(attrgetter("bbox"), entries))
    box = np.fromiter(boxes, np.float64, count=4 * n).reshape(n, 4)
    score = np.fromiter(map(attrgetter("score"), entries), np.float64, count=n)
    columns = (img, cat, box, score)
    return None if _bad_values(columns, image_ids, cat_ids).any() else Detections(*columns)


# ---------------------------------------------------------------- a list of parsed entries


def _exact_types(values: list[Any], allowed: frozenset[type]) -> Mask:
    """Per value: is its type exactly one of `allowed` (so ``bool`` is not an ``int``)?"""
    if set(map(type, values)) <= allowed:
        return np.ones(len(values), dtype=bool)
    return np.fromiter((type(v) in allowed for v in values), dtype=bool, count=len(values))


def _filled(values: list[Any], ok: Mask, fill: Any) -> list[Any]:
    """`values` with `fill` where not `ok` (the same list when all are)."""
    if ok.all():
        return values
    return [v if o else fill for v, o in zip(values, ok.tolist(), strict=True)]


def _numbers(values: list[Any]) -> Floats:
    """Floats of a number column; NaN (which every check rejects) where not int or float."""
    return np.array(_filled(values, _exact_types(values, _NUMBER_TYPES), math.nan), np.float64)


_PLACEHOLDER = (math.nan,) * 4


def _coordinates(box: list[Any]) -> tuple[Floats, Mask]:
    """The n x 4 coordinates of a bbox column (NaN where not 4 numbers) and where it is a list
    of 4 values."""
    ok = _exact_types(box, frozenset({list}))
    ok[ok] = np.fromiter(map(len, _filled(box, ok, ())), np.int64)[ok] == 4
    boxes = _filled(box, ok, _PLACEHOLDER)
    if set(map(type, chain.from_iterable(boxes))) <= _NUMBER_TYPES:  # no list materialised
        coords = np.fromiter(chain.from_iterable(boxes), np.float64, count=4 * len(box))
    else:
        coords = _numbers(list(chain.from_iterable(boxes)))
    return coords.reshape(len(box), 4), ok


def raw_columns(raw: list[Any], image_ids: set[int], cat_ids: set[int]) -> tuple[Columns, Mask]:
    """Columns of a parsed list (garbage where suspect) and the suspect mask: entries of an
    unusual type or with a value a check rejects. OverflowError: ids or coordinates numpy
    cannot hold."""
    suspect = ~_exact_types(raw, frozenset({dict}))
    rows = _filled(raw, ~suspect, {})
    img, cat, box, score = ([d.get(k) for d in rows] for k in _KEYS)
    img_ok, cat_ok = _exact_types(img, _INT), _exact_types(cat, _INT)
    coords, box_ok = _coordinates(box)
    columns = (
        np.array(_filled(img, img_ok, 0), dtype=np.int64),
        np.array(_filled(cat, cat_ok, 0), dtype=np.int64),
        coords,
        _numbers(score),
    )
    suspect |= ~img_ok | ~cat_ok | ~box_ok | _bad_values(columns, image_ids, cat_ids)
    return columns, suspect


def merged(columns: Columns | None, keep: Mask, fixed: dict[int, dict[str, Any]]) -> Detections:
    """The `keep` rows of `columns` and, in their places, the rows `fixed` (checked one by one
    and normalised); `columns` None: the `fixed` rows alone."""
    if columns is None:
        return Detections.from_dicts(list(fixed.values()))
    rows = list(fixed)
    img, cat, box, score = columns
    try:
        img[rows] = [d["image_id"] for d in fixed.values()]
        cat[rows] = [d["category_id"] for d in fixed.values()]
    except OverflowError:  # an id numpy cannot hold (an int subclass): rebuild from dicts
        order = sorted([*np.flatnonzero(keep).tolist(), *rows])
        base = Detections(*columns)
        return Detections.from_dicts([fixed[i] if i in fixed else base[i] for i in order])
    box[rows] = np.array([d["bbox"] for d in fixed.values()], np.float64).reshape(-1, 4)
    score[rows] = [d["score"] for d in fixed.values()]
    keep = keep.copy()
    keep[rows] = True
    return Detections(img[keep], cat[keep], box[keep], score[keep])

"""The vectorised detection checks give exactly what checking entry by entry gives: the same
detections, the same skip notes in the same order, the same first error; from a list in memory
and from a file (strictly decoded when every entry is valid, else parsed by the standard
library)."""

from __future__ import annotations

import json
import random
from collections import OrderedDict
from enum import IntEnum
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import DataError
from tasks.common import coco

GT: dict[str, Any] = {
    "images": [{"id": i, "file_name": f"{i}.png", "width": 64, "height": 64} for i in (1, 2, 5)],
    "annotations": [],
    "categories": [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}],
}

BAD: list[tuple[str, Any]] = [
    ("image_id", 4),
    ("image_id", True),
    ("image_id", 2.0),
    ("image_id", 2**70),
    ("category_id", None),
    ("category_id", "1"),
    ("bbox", [1, 2, 3]),
    ("bbox", (1, 2, 3, 4)),
    ("bbox", [1, 2, True, 4]),
    ("bbox", [1, 2, float("nan"), 4]),
    ("bbox", [1, 2, 0, 4]),
    ("bbox", [1e400, 2, 3, 4]),
    ("bbox", "1234"),
    ("score", 1.0000001),
    ("score", -0.0001),
    ("score", float("inf")),
    ("score", False),
    ("score", None),
]


def reference(
    raw: list[Any], skip: bool, source: Path | None = None, gt: dict[str, Any] = GT
) -> tuple[list[dict[str, Any]], list[str]]:
    """The per-entry path the vectorised one replaces."""
    image_ids = {img["id"] for img in gt["images"]}
    cat_ids = {c["id"] for c in gt["categories"]}
    skipper = coco._Skipper(source, skip)
    dets = coco._valid_entries(
        raw, "detections", skipper, lambda d: coco._check_detection(d, image_ids, cat_ids)
    )
    return dets, skipper.report({"detections": len(raw)})


def detections(seed: int, n: int = 400) -> list[Any]:
    rng = random.Random(seed)
    out: list[Any] = []
    for _ in range(n):
        det: Any = {
            "image_id": rng.choice([1, 2, 5]),
            "category_id": rng.choice([1, 3]),
            "bbox": [rng.uniform(0, 50), rng.randint(0, 50), rng.uniform(1, 9), rng.randint(1, 9)],
            "score": rng.choice([rng.random(), 0, 1]),
        }
        roll = rng.random()
        if roll < 0.15:
            key, value = rng.choice(BAD)
            det[key] = value
        elif roll < 0.18:
            del det[rng.choice(list(det))]
        elif roll < 0.20:
            det = rng.choice([[1, 2], None, "det"])
        elif roll < 0.22:
            det["extra"] = "ignored"
        out.append(det)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_checks_equal_entry_by_entry(seed: int) -> None:
    raw = detections(seed)
    assert coco.load_detections(raw, GT, skip_invalid=True) == reference(raw, skip=True)
    with pytest.raises(DataError) as fast:
        coco.load_detections(raw, GT)
    with pytest.raises(DataError) as slow:
        reference(raw, skip=False)
    assert str(fast.value) == str(slow.value)


def test_all_valid_detections_take_the_fast_path() -> None:
    raw = [d for d in detections(7, 2000) if d in reference([d], skip=True)[0]]
    assert len(raw) > 1000
    dets, notes = coco.load_detections(raw, GT)
    assert notes == [] and dets == reference(raw, skip=False)[0]
    assert all(type(v) is float for d in dets for v in [*d["bbox"], d["score"]])


def test_suspect_but_valid_entries_are_kept_in_place() -> None:
    """Subclasses of dict, int, list and float are flagged by the column checks, pass the
    per-entry checks and land in their own rows."""

    class Image(IntEnum):
        FIVE = 5

    raw = detections(8, 50)
    raw[3] = OrderedDict(image_id=1, category_id=3, bbox=[1, 2, 3, 4], score=0.5)
    raw[7] = {"image_id": Image.FIVE, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.25}
    raw[9] = {"image_id": 2, "category_id": 1, "bbox": type("Box", (list,), {})([1, 2, 3, 4]),
              "score": type("Score", (float,), {})(0.75)}  # fmt: skip
    dets, notes = coco.load_detections(raw, GT, skip_invalid=True)
    assert (dets, notes) == reference(raw, skip=True)
    assert {"image_id": 5, "category_id": 1, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.25} in dets


def test_ids_numpy_cannot_hold(tmp_path: Path) -> None:
    """Ground-truth ids beyond int64 are valid ids: detections of them are kept as they are."""
    big = 2**70

    class Huge(IntEnum):
        ID = big

    gt = {**GT, "images": [*GT["images"], {**GT["images"][0], "id": big}]}
    raw = [*detections(9, 30), {"image_id": big, "category_id": 1, "bbox": [1, 2, 3, 4],
                                "score": 0.5}]  # fmt: skip
    assert coco.load_detections(raw, gt, skip_invalid=True) == reference(raw, True, gt=gt)
    path = tmp_path / "dets.json"
    for entries in (raw, VALID):  # with and without the big id
        path.write_text(json.dumps(entries))
        expected = reference(json.loads(path.read_text()), True, source=path, gt=gt)
        assert coco.load_detections(path, gt, skip_invalid=True) == expected
    raw[-1]["image_id"] = Huge.ID  # suspect alone: its row cannot go into the int64 column
    dets, _ = coco.load_detections(raw, gt, skip_invalid=True)
    assert dets == reference(raw, True, gt=gt)[0] and dets[-1]["image_id"] == big


# ---------------------------------------------------------------- from a file


def load_file(tmp_path: Path, text: str | bytes, **kw: Any) -> Any:
    path = tmp_path / "dets.json"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return coco.load_detections(path, GT, **kw)


@pytest.mark.parametrize("seed", range(4))
def test_file_equals_entry_by_entry(tmp_path: Path, seed: int) -> None:
    """json.dumps writes NaN and Infinity, which only the standard library reads."""
    raw = detections(seed)
    text = json.dumps(raw)
    path = tmp_path / "dets.json"
    expected = reference(json.loads(text), skip=True, source=path)
    assert load_file(tmp_path, text, skip_invalid=True) == expected
    with pytest.raises(DataError) as fast:
        load_file(tmp_path, text)
    with pytest.raises(DataError) as slow:
        reference(json.loads(text), skip=False, source=path)
    assert str(fast.value) == str(slow.value)


VALID = [
    {"image_id": 1, "category_id": 3, "bbox": [1, 2.5, 3, 4], "score": 1},
    {"score": 0, "bbox": [0.1, 0.2, 1e-3, 64], "category_id": 1, "image_id": 5, "note": "ü"},
]
SPELLINGS = [  # (text, read without the standard parser)
    (json.dumps(VALID), True),
    (json.dumps(VALID, indent=2).replace("\n", "\r\n"), True),
    ("\ufeff" + json.dumps(VALID), True),  # a byte-order mark, as "utf-8-sig" reads it
    (json.dumps(VALID, ensure_ascii=False), True),
    (json.dumps(VALID).replace('"score": 1}', '"score": 0.5, "score": 1}'), True),  # last wins
    (json.dumps(VALID).replace('"score": 1}', '"score": "x", "score": 1}'), False),
    (json.dumps(VALID).replace('"image_id": 1,', '"image_\\u0069d": 1,'), True),
    (json.dumps(VALID).replace('"note": "\\u00fc"', '"note": [NaN, {"a": null}]'), False),
]


@pytest.mark.parametrize(("text", "fast"), SPELLINGS)
def test_valid_file_spellings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, fast: bool
) -> None:
    if fast:
        monkeypatch.setattr(coco, "_read_json", lambda *a: pytest.fail("standard parser used"))
    dets, notes = load_file(tmp_path, text)
    assert notes == [] and dets == reference(json.loads(text.lstrip("\ufeff")), skip=False)[0]
    assert all(type(v) is float for d in dets for v in [*d["bbox"], d["score"]])


def test_all_valid_file_skips_the_standard_parser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = [d for d in detections(7, 500) if d in reference([d], skip=True)[0]]
    text = json.dumps(raw)
    monkeypatch.setattr(coco, "_read_json", lambda *a: pytest.fail("parsed twice"))
    assert load_file(tmp_path, text) == (reference(raw, skip=False)[0], [])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (json.dumps(VALID).encode().replace(b"\\u00fc", b"\xff"), "not UTF-8 text"),
        (json.dumps(VALID)[:-1], "not valid JSON"),
        (json.dumps({"detections": VALID}), "expected a JSON list"),
        (json.dumps(VALID).replace(": 5,", ": 4,"), "detections[1]: image_id 4 is not an image"),
    ],
)
def test_invalid_file_worded_by_the_standard_path(
    tmp_path: Path, text: str | bytes, message: str
) -> None:
    with pytest.raises(DataError) as info:
        load_file(tmp_path, text)
    assert str(info.value).startswith(f"{tmp_path / 'dets.json'}") and message in str(info.value)

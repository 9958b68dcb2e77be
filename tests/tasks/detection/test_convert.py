"""tasks.detection.convert: CSV -> COCO split by patient, and errors that name line and column."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pycocotools.coco import COCO

from orchestrator.errors import DataError
from tasks.detection.convert import csv_to_coco, split_groups

HEADER = "image,x,y,w,h,diagnosis,age,sex,patient_id"


def _dataset(tmp_path: Path, rows: list[str], sizes: dict[str, tuple[int, int]]) -> Path:
    """Images under tmp/imgs (gray PNGs of the given sizes) and tmp/imgs/lesions.csv."""
    root = tmp_path / "imgs"
    root.mkdir(exist_ok=True)
    for name, size in sizes.items():
        Image.new("L", size, 80).save(root / name)
    csv = root / "lesions.csv"
    csv.write_text("\n".join([HEADER, *rows]) + "\n")
    return csv


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


GOOD = [
    "a.png,10,10,20,20,cyst,61,M,P1",
    "a.png,40,5,10,12,Meta,61,M,P1",
    "b.png,,,,,,61,M,P1",  # negative
    "c.png,0,0,64,48,HCC,70,F,P2",
    "d.png,1.5,2.5,8,9,hemangioma,,F,P3",
]
SIZES = {"a.png": (64, 48), "b.png": (64, 48), "c.png": (64, 48), "d.png": (32, 32)}


def test_converts_and_splits_by_patient(tmp_path: Path) -> None:
    csv = _dataset(tmp_path, GOOD, SIZES)
    out = tmp_path / "coco"
    paths = csv_to_coco(csv, out, split=(0.4, 0.3, 0.3), seed=1)
    assert set(paths) == {"train", "val", "test"}
    cocos = {s: _load(p) for s, p in paths.items()}
    names = [c["name"] for c in cocos["train"]["categories"]]
    assert names == ["cyst", "HCC", "hemangioma", "Meta"]  # sorted case-insensitively
    images = {i["file_name"]: (s, i) for s, c in cocos.items() for i in c["images"]}
    assert len(images) == 4
    for name, (_, img) in images.items():
        assert (out / name).resolve() == (tmp_path / "imgs" / Path(name).name).resolve()
        assert (img["width"], img["height"]) == SIZES[Path(name).name]
    owner = {img["patient_id"]: s for s, img in images.values()}
    assert all(owner[img["patient_id"]] == s for s, img in images.values())  # one split each
    a = images["../imgs/a.png"][1]
    assert (a["age"], a["sex"], a["patient_id"]) == (61, "M", "P1")
    assert images["../imgs/d.png"][1]["age"] is None
    anns = [ann for c in cocos.values() for ann in c["annotations"]]
    assert len(anns) == 4 and len({ann["id"] for ann in anns}) == 4
    d_ann = next(x for x in anns if x["image_id"] == images["../imgs/d.png"][1]["id"])
    assert d_ann["bbox"] == [1.5, 2.5, 8, 9] and d_ann["category_id"] == 3
    for s, c in cocos.items():
        assert c["info"]["images"] == len(c["images"]) and c["info"]["split"] == s
        if c["images"]:
            COCO(str(paths[s]))  # pycocotools reads it


def test_given_category_order_and_image_root(tmp_path: Path) -> None:
    csv = _dataset(tmp_path, GOOD, SIZES)
    moved = tmp_path / "elsewhere" / "x.csv"
    moved.parent.mkdir()
    moved.write_text(csv.read_text())
    cats = ["Meta", "HCC", "hemangioma", "cyst", "unused"]
    paths = csv_to_coco(moved, tmp_path / "c", image_root=tmp_path / "imgs", categories=cats)
    coco = _load(paths["train"])
    assert [c["name"] for c in coco["categories"]] == cats
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3, 4, 5]


def test_split_fractions_and_determinism(tmp_path: Path) -> None:
    rows, sizes = [], {}
    for p in range(60):
        for k in range(1 + p % 3):
            name = f"p{p}_{k}.png"
            sizes[name] = (16, 16)
            rows.append(f"{name},1,1,4,4,cyst,50,F,P{p}")
    csv = _dataset(tmp_path, rows, sizes)
    first = csv_to_coco(csv, tmp_path / "a", seed=3)
    again = csv_to_coco(csv, tmp_path / "b", seed=3)
    other = csv_to_coco(csv, tmp_path / "c", seed=4)
    counts = [len(_load(first[s])["images"]) for s in ("train", "val", "test")]
    assert sum(counts) == 120
    assert abs(counts[0] - 96) <= 2 and abs(counts[1] - 12) <= 2, counts
    assert [_load(first[s])["images"] for s in first] == [_load(again[s])["images"] for s in again]
    assert [_load(first[s])["images"] for s in first] != [_load(other[s])["images"] for s in other]


def test_split_groups_keeps_every_split_non_empty() -> None:
    assign = split_groups([5, 1, 1], (0.8, 0.1, 0.1), seed=0)
    assert sorted(Counter(assign)) == [0, 1, 2]
    assert split_groups([], (0.8, 0.1, 0.1), seed=0) == []
    big = split_groups([1] * 1000, (0.7, 0.2, 0.1), seed=5)
    assert Counter(big) == {0: 700, 1: 200, 2: 100}


@pytest.mark.parametrize(
    ("row", "where", "message"),
    [
        ("a.png,x1,10,20,20,cyst,61,M,P1", "line 2, column 'x'", "not a number"),
        ("a.png,10,10,0,20,cyst,61,M,P1", "line 2, column 'w'", "must be positive"),
        ("a.png,10,10,20,-3,cyst,61,M,P1", "line 2, column 'h'", "must be positive"),
        ("a.png,50,10,20,20,cyst,61,M,P1", "line 2, column 'x'", "outside the 64x48"),
        ("a.png,10,40,20,20,cyst,61,M,P1", "line 2, column 'y'", "outside"),
        ("a.png,10,10,20,20,,61,M,P1", "line 2, column 'diagnosis'", "diagnosis is empty"),
        ("a.png,10,10,20,20,cyst,sixty,M,P1", "line 2, column 'age'", "not a number"),
        ("a.png,10,10,20,20,cyst,61,X,P1", "line 2, column 'sex'", "not M or F"),
        ("a.png,10,10,20,20,cyst,61,M,", "line 2, column 'patient_id'", "empty"),
        ("zz.png,10,10,20,20,cyst,61,M,P1", "line 2, column 'image'", "does not exist"),
        ("bad.png,10,10,20,20,cyst,61,M,P1", "line 2, column 'image'", "cannot read image"),
    ],
)
def test_row_errors_name_line_and_column(
    tmp_path: Path, row: str, where: str, message: str
) -> None:
    csv = _dataset(tmp_path, [row], {"a.png": (64, 48)})
    (csv.parent / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DataError, match=message) as err:
        csv_to_coco(csv, tmp_path / "out")
    assert err.value.where == where and err.value.source == str(csv)


def test_unknown_diagnosis_with_given_categories(tmp_path: Path) -> None:
    csv = _dataset(tmp_path, GOOD, SIZES)
    with pytest.raises(DataError, match="unknown diagnosis 'Meta'") as err:
        csv_to_coco(csv, tmp_path / "out", categories=["cyst", "HCC", "hemangioma"])
    assert err.value.where == "line 3, column 'diagnosis'"


def test_conflicting_sex_names_both_lines(tmp_path: Path) -> None:
    rows = [*GOOD, "e.png,1,1,5,5,cyst,61,F,P1"]
    csv = _dataset(tmp_path, rows, {**SIZES, "e.png": (16, 16)})
    with pytest.raises(DataError, match="patient 'P1' has sex F here but M on line 2") as err:
        csv_to_coco(csv, tmp_path / "out")
    assert err.value.where == "line 7, column 'sex'"


def test_missing_columns_listed_with_those_found(tmp_path: Path) -> None:
    csv = tmp_path / "x.csv"
    csv.write_text("image,x,y,width,h,diagnosis,age,patient_id\na.png,1,1,1,1,cyst,3,P\n")
    with pytest.raises(DataError, match=r"missing column\(s\) w, sex; found image, x, y, width"):
        csv_to_coco(csv, tmp_path / "out")


def test_lesion_and_negative_rows_for_one_image_conflict(tmp_path: Path) -> None:
    csv = _dataset(tmp_path, [GOOD[0], "a.png,,,,,,61,M,P1"], SIZES)
    with pytest.raises(DataError, match=r"both a lesion row \(line 2\) and an empty"):
        csv_to_coco(csv, tmp_path / "out")

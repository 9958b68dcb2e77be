"""tasks.detection.stats: figure-2 plots exist and the table's counts match the COCO files."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tasks.detection.stats import COLUMNS, NONE, PLOTS, dataset_stats
from tasks.detection.synth import generate

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path, dict[str, Any]]:
    src = tmp_path_factory.mktemp("liver")
    generate(src, n=80, size=64, seed=2)
    paths = [src / "annotations" / f"{s}.json" for s in SPLITS]
    out = tmp_path_factory.mktemp("stats")
    return paths, out, dataset_stats(paths, out)


def test_files_written(synthetic: tuple[list[Path], Path, dict[str, Any]]) -> None:
    _, out, table = synthetic
    for name in PLOTS:
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.width > 200
    with (out / "stats.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == COLUMNS
    assert [r["diagnosis"] for r in rows] == list(table)
    assert list(table) == ["cyst", "HCC", "hemangioma", "Meta", NONE]
    assert [int(r["n_lesions"]) for r in rows] == [t["n_lesions"] for t in table.values()]


def test_counts_match_coco(synthetic: tuple[list[Path], Path, dict[str, Any]]) -> None:
    paths, _, table = synthetic
    images, anns, names = [], [], {}
    for p in paths:
        coco = json.loads(p.read_text())
        images += coco["images"]
        anns += coco["annotations"]
        names.update({c["id"]: c["name"] for c in coco["categories"]})
    lesions = Counter(names[a["category_id"]] for a in anns)
    with_diag = {d: {a["image_id"] for a in anns if names[a["category_id"]] == d} for d in lesions}
    negatives = [img for img in images if img["id"] not in {a["image_id"] for a in anns}]
    for diag, row in table.items():
        if diag == NONE:
            assert row["n_images"] == len(negatives) and row["n_lesions"] == 0
            assert math.isnan(row["area_ratio_median"])
        else:
            assert row["n_lesions"] == lesions[diag]
            assert row["n_images"] == len(with_diag[diag])
            assert 0 < row["area_ratio_median"] < 0.2
        assert row["n_male"] + row["n_female"] + row["n_sex_unknown"] == row["n_images"]
    assert sum(r["n_lesions"] for r in table.values()) == len(anns)


def test_mixed_image_counts_under_each_diagnosis(tmp_path: Path) -> None:
    coco = {
        "images": [
            {
                "id": 1,
                "file_name": "a.png",
                "width": 100,
                "height": 50,
                "age": 40,
                "sex": "F",
                "patient_id": "P1",
            },
            {
                "id": 2,
                "file_name": "b.png",
                "width": 200,
                "height": 100,
                "age": 60,
                "sex": "M",
                "patient_id": "P2",
            },
            {
                "id": 3,
                "file_name": "c.png",
                "width": 100,
                "height": 100,
                "age": None,
                "patient_id": "P2",
            },
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 5]},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 0, 20, 10]},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 40, 20]},
        ],
        "categories": [{"id": 1, "name": "cyst"}, {"id": 2, "name": "HCC"}],
    }
    path = tmp_path / "all.json"
    path.write_text(json.dumps(coco))
    empty = tmp_path / "test.json"  # an empty split is fine
    empty.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    table = dataset_stats([path, empty], tmp_path / "out")
    assert list(table) == ["cyst", "HCC", NONE]
    cyst, hcc, none = table["cyst"], table["HCC"], table[NONE]
    assert (cyst["n_images"], cyst["n_lesions"], cyst["n_male"], cyst["n_female"]) == (2, 2, 1, 1)
    assert cyst["age_mean"] == 50 and cyst["age_sd"] == pytest.approx(math.sqrt(200))
    assert cyst["area_ratio_median"] == pytest.approx(0.025)  # 50/5000, 800/20000
    assert (hcc["n_images"], hcc["area_ratio_median"]) == (1, pytest.approx(0.04))
    assert (none["n_images"], none["n_sex_unknown"], none["n_patients"]) == (1, 1, 1)
    assert math.isnan(none["age_mean"]) and none["width_mean"] == 100

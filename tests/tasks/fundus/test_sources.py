"""tasks.fundus.sources: merging coded manifests, subsampling, and cross-source duplicates."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from orchestrator.errors import DataError
from tasks.fundus.sources import (
    Source,
    duplicate_groups_report,
    load_sources,
    merge_sources,
    near_duplicates,
    unify_groups,
)


def _image(path: Path, seed: int, size: int = 96) -> None:
    """A smooth random picture (distinct per seed, so perceptual hashes differ)."""
    grid = np.random.default_rng(seed).integers(0, 255, (6, 6, 3), dtype=np.uint8)
    Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC).save(path)


def _csv(path: Path, header: list[str], rows: Sequence[Sequence[object]]) -> str:
    lines = [",".join(header)] + [",".join(str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def two_sources(tmp_path: Path) -> tuple[Source, Source]:
    """Source a: label 0/1 + patient_id; source b: diagnosis G/N + patient, extra column."""
    for name, n in (("a", 4), ("b", 3)):
        (tmp_path / name).mkdir()
        for i in range(n):
            _image(tmp_path / name / f"{i}.png", seed=100 * (name == "b") + i)
    a = _csv(
        tmp_path / "a" / "labels.csv",
        ["path", "label", "patient_id"],
        [["0.png", 0, "P1"], ["1.png", 0, "P1"], ["2.png", 1, "P2"], ["3.png", 1, "P3"]],
    )
    b = _csv(
        tmp_path / "b" / "labels.csv",
        ["path", "diagnosis", "patient", "age"],
        [["0.png", "G", "P1", 70], ["1.png", "N", "P2", 50], ["2.png", "N", "P2", 50]],
    )
    return (
        Source(name="a", manifest=a),
        Source(
            name="b",
            manifest=b,
            label_column="diagnosis",
            label_map={"G": 1, "N": 0},
            group_column="patient",
        ),
    )


def test_merge_maps_labels_and_prefixes_patients(two_sources: tuple[Source, Source]) -> None:
    df = merge_sources(list(two_sources), seed=0)
    assert list(df.columns[:5]) == ["path", "label", "patient_id", "source", "line"]
    assert "age" in df.columns and "diagnosis" not in df.columns
    assert df["label"].tolist() == [0, 0, 1, 1, 1, 0, 0]
    assert df["patient_id"].tolist() == ["a:P1", "a:P1", "a:P2", "a:P3", "b:P1", "b:P2", "b:P2"]
    assert df["source"].tolist() == ["a"] * 4 + ["b"] * 3
    assert df["line"].tolist() == [2, 3, 4, 5, 2, 3, 4]
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in df["path"])
    assert df.loc[df["source"] == "a", "age"].isna().all()


def test_unmapped_label_names_line_and_column(two_sources: tuple[Source, Source]) -> None:
    a, b = two_sources
    narrow = b.model_copy(update={"label_map": {"G": 1}})
    with pytest.raises(DataError) as err:
        merge_sources([a, narrow], seed=0)
    assert err.value.source == b.manifest
    assert err.value.where == "line 3, column 'diagnosis'"
    assert "'N'" in err.value.message and "label_map" in err.value.message


def test_bad_mapping_value_names_the_field(two_sources: tuple[Source, Source]) -> None:
    a, b = two_sources
    with pytest.raises(DataError) as err:
        merge_sources([a, b.model_copy(update={"label_map": {"G": 2, "N": 0}})], seed=0)
    assert err.value.where == "field label_map" and "'G'" in err.value.message


def test_plain_labels_must_be_binary(two_sources: tuple[Source, Source], tmp_path: Path) -> None:
    bad = _csv(tmp_path / "a" / "bad.csv", ["path", "label"], [["0.png", 1], ["1.png", "G"]])
    with pytest.raises(DataError) as err:
        merge_sources([Source(name="x", manifest=bad)], seed=0)
    assert err.value.where == "line 3, column 'label'"


def test_subsample_counts_are_seeded(tmp_path: Path) -> None:
    for i in range(30):
        _image(tmp_path / f"{i}.png", i, size=16)
    rows = [[f"{i}.png", "yes" if i < 10 else "no"] for i in range(30)]
    csv = _csv(tmp_path / "m.csv", ["path", "glaucoma"], rows)
    # Integer keys, as YAML reads `{1: 3, 0: 5}`.
    src = Source.model_validate(
        {
            "name": "odir",
            "manifest": csv,
            "label_column": "glaucoma",
            "label_map": {"yes": 1, "no": 0},
            "subsample": {1: 3, 0: 5},
            "group_column": None,
        }
    )
    df = merge_sources([src], seed=7)
    assert df["label"].value_counts().to_dict() == {1: 3, 0: 5}
    assert df["line"].is_monotonic_increasing  # file order kept
    assert df["path"].tolist() == merge_sources([src], seed=7)["path"].tolist()
    others = {tuple(merge_sources([src], seed=s)["path"]) for s in range(5)}
    assert len(others) > 1  # the seed matters
    assert df["patient_id"].str.fullmatch(r"odir:line\d+").all()
    only_pos = src.model_copy(update={"subsample": {"1": 2}})
    assert merge_sources([only_pos], seed=0)["label"].value_counts().to_dict() == {0: 20, 1: 2}
    with pytest.raises(DataError) as err:
        merge_sources([src.model_copy(update={"subsample": {"1": 11}})], seed=0)
    assert err.value.where == "field subsample" and "11" in err.value.message


def test_same_image_in_two_sources(two_sources: tuple[Source, Source], tmp_path: Path) -> None:
    a, _ = two_sources
    c = _csv(tmp_path / "c.csv", ["path", "label"], [["b/0.png", 1], ["a/2.png", 1]])
    with pytest.raises(DataError) as err:
        merge_sources([a, Source(name="c", manifest=c)], seed=0)
    assert err.value.where == "line 3" and err.value.source == c
    assert "'a'" in err.value.message and a.manifest in err.value.message


def test_distinct_names_and_explicit_group_column(two_sources: tuple[Source, Source]) -> None:
    a, b = two_sources
    with pytest.raises(DataError, match="distinct"):
        merge_sources([a, b.model_copy(update={"name": "a"})], seed=0)
    with pytest.raises(DataError, match="'subject'"):
        merge_sources([b.model_copy(update={"group_column": "subject"})], seed=0)


def test_near_duplicates_across_sources_share_a_group(
    two_sources: tuple[Source, Source], tmp_path: Path
) -> None:
    a, b = two_sources
    # Source b's image 2 becomes a resized, slightly darker re-publication of a's image 2.
    with Image.open(tmp_path / "a" / "2.png") as img:
        copy = np.asarray(img.resize((72, 72), Image.Resampling.BILINEAR)).astype(float)
    padded = np.pad((copy * 0.96).astype(np.uint8), ((12, 12), (12, 12), (0, 0)))  # black frame
    Image.fromarray(padded).save(tmp_path / "b" / "2.png")
    df = merge_sources([a, b], seed=0)
    groups = near_duplicates(df["path"].tolist())
    assert groups == [[2, 6]]
    report = duplicate_groups_report(df, groups)
    assert report["path"].tolist() == [df["path"][2], df["path"][6]]
    assert report["sources"].unique().tolist() == ["a;b"] and report["group"].eq(0).all()
    assert report["label_conflict"].eq(True).all()  # a says 1, b says N
    unified = unify_groups(df, groups)
    # a:P2 and b:P2 (which also owns b/1.png) become one patient.
    assert unified["patient_id"].tolist()[2] == unified["patient_id"].tolist()[5] == "a:P2"
    assert unified["patient_id"].nunique() == df["patient_id"].nunique() - 1
    assert unified["original_patient_id"].tolist() == df["patient_id"].tolist()
    within = duplicate_groups_report(df.assign(source="a"), groups)
    assert within.empty and list(within.columns[:4]) == [
        "group",
        "n_sources",
        "sources",
        "label_conflict",
    ]


def test_near_duplicates_threshold_and_chains(tmp_path: Path) -> None:
    for i in range(3):
        _image(tmp_path / f"{i}.png", i)
    paths = [str(tmp_path / f"{i}.png") for i in range(3)]
    assert near_duplicates(paths) == []
    assert near_duplicates([*paths, paths[0], paths[0]]) == [[0, 3, 4]]
    assert near_duplicates(paths, threshold=256) == [[0, 1, 2]]
    with pytest.raises(DataError):
        near_duplicates([*paths, str(tmp_path / "missing.png")])


def test_load_sources_resolves_relative_paths(
    two_sources: tuple[Source, Source], tmp_path: Path
) -> None:
    spec = {"sources": [{"name": "b", "manifest": "b/labels.csv", "label_map": {"G": 1}}]}
    (tmp_path / "sources.json").write_text(json.dumps(spec))
    (src,) = load_sources(tmp_path / "sources.json")
    assert src.manifest == str(tmp_path / "b" / "labels.csv") and src.label_map == {"G": 1}
    spec["sources"][0]["nmae"] = "typo"
    (tmp_path / "bad.json").write_text(json.dumps(spec))
    with pytest.raises(DataError) as err:
        load_sources(tmp_path / "bad.json")
    assert err.value.where == "field sources[0].nmae"
    (tmp_path / "yes.yaml").write_text(
        "sources:\n- {name: c, manifest: m.csv, label_map: {yes: 1}}\n"
    )
    with pytest.raises(DataError, match="quote") as err:
        load_sources(tmp_path / "yes.yaml")
    assert err.value.where == "field sources[0].label_map"


def test_merged_frame_feeds_the_manifest_contract(two_sources: tuple[Source, Source]) -> None:
    df = merge_sources(list(two_sources), seed=0)
    assert df["label"].dtype == np.int64 and df["line"].dtype == np.int64
    assert isinstance(df, pd.DataFrame) and df.index.tolist() == list(range(7))

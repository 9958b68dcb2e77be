"""tasks.detection.clean: finds the injected flaws, never splits a duplicate group, inpaints."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
import pytest
from PIL import Image

from orchestrator.errors import DataError, UserError
from tasks.detection.clean import clean, hamming_pairs, overlay_mask
from tasks.detection.synth import generate, render_liver

SPLITS = ("train", "val", "test")


def _cocos(folder: Path) -> dict[str, dict[str, Any]]:
    return {s: json.loads((folder / f"{s}.json").read_text()) for s in SPLITS}


@pytest.fixture(scope="module")
def cleaned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """300 synthetic images at 96 px (small ones are <= 48 px) and their cleaned copy."""
    src = tmp_path_factory.mktemp("liver")
    generate(src, n=300, size=96, seed=5)
    out = tmp_path_factory.mktemp("clean")
    paths = [src / "annotations" / f"{s}.json" for s in SPLITS]
    summary = clean(paths, out, min_size=48)
    with (out / "cleaning_report.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    images = {img["id"]: img for c in _cocos(src / "annotations").values() for img in c["images"]}
    return {"src": src, "out": out, "summary": summary, "rows": rows, "images": images}


def test_finds_injected_flaws(cleaned: dict[str, Any]) -> None:
    images, rows = cleaned["images"], cleaned["rows"]
    action = {int(r["image_id"]): r["action"] for r in rows}
    for flaw, act in (("small", "dropped_small"), ("overlay", "inpainted_overlay")):
        truth = [i for i, img in images.items() if img["dirty"] == flaw]
        found = sum(action.get(i) == act for i in truth)
        assert found / len(truth) >= 0.9, (flaw, found, len(truth))
    # A duplicate pair is caught when exactly one of the two is dropped.
    pairs = [(i, img["duplicate_of"]) for i, img in images.items() if img["dirty"] == "duplicate"]
    caught = sum(
        (action.get(a) == "dropped_duplicate") != (action.get(b) == "dropped_duplicate")
        for a, b in pairs
    )
    assert len(pairs) == 15 and caught / len(pairs) >= 0.9
    # Few clean images lost: phash confuses only rare pairs of distinct scans.
    clean_ids = [i for i, img in images.items() if img["dirty"] is None]
    assert sum(i in action for i in clean_ids) <= 0.02 * len(clean_ids)


def test_outputs_match_summary_and_report(cleaned: dict[str, Any]) -> None:
    out, summary, rows = cleaned["out"], cleaned["summary"], cleaned["rows"]
    cocos = _cocos(out / "annotations")
    kept = [img for c in cocos.values() for img in c["images"]]
    assert summary["images_in"] == 300 and summary["images_kept"] == len(kept)
    for act in ("dropped_small", "dropped_duplicate", "inpainted_overlay"):
        assert summary[act] == sum(r["action"] == act for r in rows)
    assert summary["images_kept"] == 300 - summary["dropped_small"] - summary["dropped_duplicate"]
    dropped = {int(r["image_id"]) for r in rows if r["action"].startswith("dropped")}
    assert not dropped & {img["id"] for img in kept}
    for s, c in cocos.items():
        ids = {img["id"] for img in c["images"]}
        assert all(a["image_id"] in ids for a in c["annotations"])
        assert summary["splits"][s]["images_kept"] == len(c["images"])
    files = {p.name for p in (out / "images").iterdir()}
    assert files == {Path(img["file_name"]).name for img in kept}  # nothing dropped left behind
    for img in kept[::20]:
        with Image.open(out / "annotations" / img["file_name"]) as im:
            assert im.size == (img["width"], img["height"])
    small = next(r for r in rows if r["action"] == "dropped_small")
    assert small["reason"].endswith("<= 48x48")


def test_inpainting_removes_saturation(cleaned: dict[str, Any]) -> None:
    rows = [r for r in cleaned["rows"] if r["action"] == "inpainted_overlay"]
    assert rows and all(r["reason"].endswith("% saturated pixels") for r in rows)
    for r in rows[:10]:
        name = Path(r["file_name"]).name
        before = np.asarray(Image.open(cleaned["src"] / "images" / name).convert("RGB"))
        after = np.asarray(Image.open(cleaned["out"] / "images" / name).convert("RGB"))
        assert overlay_mask(before).sum() > 0 and overlay_mask(after).sum() == 0
        far = ~overlay_mask(before)  # pixels well away from the overlay stay as they were
        far[1:-1, 1:-1] &= far[:-2, 1:-1] & far[2:, 1:-1] & far[1:-1, :-2] & far[1:-1, 2:]
        assert np.mean(before[far] == after[far]) > 0.97


def test_no_duplicate_group_across_splits(tmp_path: Path) -> None:
    """A copy of a train image in test and a resized one in val: only the largest survives."""
    gray, _ = render_liver(np.random.default_rng(1), 96, 120, ["cyst"])
    other, _ = render_liver(np.random.default_rng(2), 96, 120, ["HCC"])
    (tmp_path / "images").mkdir()
    pics = {
        "a.png": Image.fromarray(gray),
        "b.png": Image.fromarray(np.clip(gray * 1.1, 0, 255).astype(np.uint8)).resize((108, 86)),
        "c.png": Image.fromarray(gray).resize((118, 94)),
        "d.png": Image.fromarray(other),
        "e.png": Image.fromarray(other[:40, :100]),  # 100x40: not small under the AND rule
    }
    layout = {"val": ["b.png", "e.png"], "train": ["c.png", "d.png"], "test": ["a.png"]}
    paths = []
    for ident, (split, names) in enumerate(layout.items()):
        entries = []
        for k, name in enumerate(names):
            pics[name].convert("RGB").save(tmp_path / "images" / name)
            w, h = pics[name].size
            entries.append({"id": 10 * ident + k + 1, "file_name": f"images/{name}",
                            "width": w, "height": h})  # fmt: skip
        anns = [{"id": e["id"], "image_id": e["id"], "category_id": 1, "bbox": [1, 1, 5, 5]}
                for e in entries]  # fmt: skip
        coco = {"images": entries, "annotations": anns, "categories": [{"id": 1, "name": "x"}]}
        paths.append(tmp_path / f"{split}.json")
        paths[-1].write_text(json.dumps(coco))
    summary = clean(paths, tmp_path / "out", min_size=64)
    cocos = {
        s: json.loads((tmp_path / "out/annotations" / f"{s}.json").read_text()) for s in layout
    }
    kept = {Path(i["file_name"]).name for c in cocos.values() for i in c["images"]}
    assert kept == {"a.png", "d.png", "e.png"}  # a is the largest of a/b/c
    assert summary["duplicate_groups"] == 1 and summary["dropped_duplicate"] == 2
    assert [a["id"] for a in cocos["train"]["annotations"]] == [12]  # d.png's only
    # No two kept images of different splits are near-duplicates.
    hashes = [(s, imagehash.phash(Image.open(tmp_path / "out/images" / Path(i["file_name"]).name)))
              for s, c in cocos.items() for i in c["images"]]  # fmt: skip
    for k, (s1, h1) in enumerate(hashes):
        assert all(s1 == s2 or h1 - h2 > 4 for s2, h2 in hashes[k + 1 :])


@pytest.mark.parametrize("word_popcount", [True, False])
def test_hamming_pairs_match_brute_force(
    word_popcount: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not word_popcount:  # the byte lookup table used before numpy 2
        monkeypatch.delattr(np, "bitwise_count", raising=False)
    bits = np.random.default_rng(0).random((300, 64)) < 0.5
    bits[17] = bits[3]
    bits[250] = bits[3] ^ (np.arange(64) < 3)
    dist = (bits[:, None, :] != bits[None, :, :]).sum(2)
    want = {
        (i, j, int(dist[i, j])) for i in range(300) for j in range(i + 1, 300) if dist[i, j] <= 20
    }
    assert set(hamming_pairs(bits, 20, chunk=37)) == want
    assert {(3, 17, 0), (3, 250, 3), (17, 250, 3)} <= want


def test_bad_arguments_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "a.png")
    coco = {"images": [{"id": 1, "file_name": "images/a.png", "width": 8, "height": 8}],
            "annotations": [], "categories": [{"id": 1, "name": "x"}]}  # fmt: skip
    path = tmp_path / "train.json"
    path.write_text(json.dumps(coco))
    with pytest.raises(UserError, match="unknown hash"):
        clean([path], tmp_path / "o", hash="md5")
    with pytest.raises(UserError, match="must not hold the input images"):
        clean([path], tmp_path)
    coco["images"][0]["width"] = 9
    path.write_text(json.dumps(coco))
    with pytest.raises(DataError, match="8x8 but the COCO entry says 9x8"):
        clean([path], tmp_path / "o")
    coco["images"][0]["file_name"] = "images/missing.png"
    path.write_text(json.dumps(coco))
    with pytest.raises(DataError, match="does not exist") as err:
        clean([path], tmp_path / "o")
    assert err.value.where == "image id 1 (images/missing.png)"

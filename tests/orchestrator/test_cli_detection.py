"""The detection family's command line: data tools, eval detection, bad COCO input (exit 2)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from orchestrator.cli import main


@pytest.fixture(scope="module")
def liver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("liver")
    assert main(["data", "synth", "liver-us", "--out", str(out), "--n", "40", "--size", "64"]) == 0
    return out


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().err.replace("\n", " ")


def test_clean_and_stats_tools(
    liver: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ann = sorted(str(p) for p in (liver / "annotations").glob("*.json"))
    capsys.readouterr()
    assert (
        main(["data", "clean", *ann, "--out", str(tmp_path / "c"), "--min-size", "32", "--json"])
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert isinstance(summary, dict) and summary
    report = (tmp_path / "c" / "cleaning_report.csv").read_text().splitlines()
    assert report[0].startswith("image_id") and len(report) > 1  # the synthetic set is dirty
    assert main(["data", "stats", *ann, "--out", str(tmp_path / "s")]) == 0
    assert sorted(p.suffix for p in (tmp_path / "s").iterdir()).count(".png") == 4


def test_data_coco_tool_errors_name_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "lesions.csv"
    csv.write_text("image,x,y,w,h,diagnosis,age,sex,patient_id\nmissing.png,1,2,3,4,cyst,50,F,p1\n")
    assert main(["data", "coco", str(csv), "--out", str(tmp_path / "o")]) == 2
    assert re.search(r"lesions\.csv.*line 2", _err(capsys))
    with pytest.raises(SystemExit) as exc:
        main(["data", "coco", str(csv)])  # --out missing: argparse says so, exit 2
    assert exc.value.code == 2


def _detections(gt: dict) -> list[dict]:
    """Perfect detections of every GT box plus one over-detection."""
    dets = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "score": 0.9,
        }
        for a in gt["annotations"]
    ]
    img = gt["images"][0]
    dets.append({"image_id": img["id"], "category_id": 1, "bbox": [0, 0, 3, 3], "score": 0.95})
    return dets


def test_eval_detection_json(
    liver: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt_path = liver / "annotations" / "val.json"
    gt = json.loads(gt_path.read_text())
    pred = tmp_path / "dets.json"
    pred.write_text(json.dumps(_detections(gt)[:-1]))
    capsys.readouterr()
    args = ["eval", "detection", "--gt", str(gt_path), "--pred", str(pred), "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["coco"]["AP50"] == pytest.approx(1.0)
    pred.write_text(json.dumps(_detections(gt)))
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["coco"]["AP50"] < 1.0  # the confident over-detection costs precision
    lesion = out["lesion"]
    assert lesion["iou"] == 0.25 and lesion["labels"][-1] == "None"
    assert lesion["micro"]["recall"] == pytest.approx(1.0)
    assert sum(lesion["confusion"][-1]) == 1  # the one over-detection, in the None row


def test_bad_detections_exit_2_or_are_skipped_with_a_count(
    liver: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt_path = liver / "annotations" / "val.json"
    dets = _detections(json.loads(gt_path.read_text()))
    dets.append({"image_id": 999999, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5})
    pred = tmp_path / "dets.json"
    pred.write_text(json.dumps(dets))
    args = ["eval", "detection", "--gt", str(gt_path), "--pred", str(pred), "--json"]
    assert main(args) == 2
    assert re.search(rf"dets\.json.*detections\[{len(dets) - 1}\].*999999", _err(capsys))
    assert main([*args, "--skip-invalid"]) == 0
    skipped = json.loads(capsys.readouterr().out)["skipped"]
    assert "skipped 1" in skipped[0]


@pytest.mark.parametrize(
    "defect", ["outside", "zero_size", "unknown_category", "duplicate_id", "missing_file"]
)
def test_bad_coco_training_data_exits_2(
    liver: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], defect: str
) -> None:
    data = tmp_path / "liver"
    shutil.copytree(liver, data)
    train = data / "annotations" / "train.json"
    coco = json.loads(train.read_text())
    ann = coco["annotations"][2]
    img = next(i for i in coco["images"] if i["id"] == ann["image_id"])
    pattern = r"train\.json.*annotations\[2\]"
    if defect == "outside":
        ann["bbox"] = [img["width"] - 2, 0, 20, 5]
    elif defect == "zero_size":
        ann["bbox"][2] = 0
    elif defect == "unknown_category":
        ann["category_id"] = 77
    elif defect == "duplicate_id":
        ann["id"] = coco["annotations"][0]["id"]
        pattern = r"train\.json.*duplicate"
    else:
        (train.parent / img["file_name"]).unlink()
        pattern = rf"train\.json.*{Path(img['file_name']).name}"
    train.write_text(json.dumps(coco))
    cfg = tmp_path / "det.yaml"
    val = data / "annotations" / "val.json"
    cfg.write_text(
        f"name: d\ntask: detection\ndata: {{train: {train}, val: {val}, image_size: 64}}\n"
        f"store: {{root: {tmp_path / 'store'}}}\n"
    )
    capsys.readouterr()
    assert main(["validate", str(cfg), "--check-data"]) == 2
    err = _err(capsys)
    assert re.search(pattern, err), err
    assert main(["sweep", str(cfg)]) == 2
    assert not (tmp_path / "store").exists()

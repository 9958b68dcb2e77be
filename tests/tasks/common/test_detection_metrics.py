"""Detection metrics: every lesion rule by hand, a brute-force reference, pycocotools parity."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import random
from pathlib import Path
from typing import Any

import pytest

from tasks.common.detection_metrics import (
    THRESHOLDS,
    coco_metrics,
    lesion_confusion_figure,
    lesion_metrics,
)

CATS = [{"id": 1, "name": "cyst"}, {"id": 2, "name": "HCC"}]
C, H, N = 0, 1, 2  # confusion indices: cyst, HCC, None


def make_gt(boxes: list[tuple[int, int, list[float]]], n_images: int = 1) -> dict[str, Any]:
    """``boxes``: (image_id, category_id, bbox) per annotation."""
    images = [
        {"id": i, "file_name": f"{i}.png", "width": 100, "height": 100}
        for i in range(1, n_images + 1)
    ]
    anns = [
        {"id": k + 1, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
        for k, (i, c, b) in enumerate(boxes)
    ]
    return {"images": images, "annotations": anns, "categories": CATS}


def det(image: int, cat: int, bbox: list[float], score: float) -> dict[str, Any]:
    return {"image_id": image, "category_id": cat, "bbox": bbox, "score": score}


BOX = [10.0, 10.0, 20.0, 20.0]
FAR = [70.0, 70.0, 10.0, 10.0]


def conf(gt: dict[str, Any], dets: list[dict[str, Any]], **kw: Any) -> list[list[int]]:
    return lesion_metrics(gt, dets, threshold=kw.pop("threshold", 0.5), **kw)["confusion"]


# ---------------------------------------------------------------- the rules, one by one


def test_duplicate_predictions_on_one_tumour_count_once() -> None:
    gt = make_gt([(1, 1, BOX)])
    dets = [det(1, 1, BOX, 0.9), det(1, 1, [11, 11, 20, 20], 0.8), det(1, 1, [9, 9, 21, 21], 0.7)]
    assert conf(gt, dets) == [[1, 0, 0], [0, 0, 0], [0, 0, 0]]


def test_class_comes_from_the_highest_scoring_matching_prediction() -> None:
    gt = make_gt([(1, 1, BOX)])
    hcc_wins = [det(1, 1, BOX, 0.6), det(1, 2, [11, 11, 20, 20], 0.9)]
    assert conf(gt, hcc_wins)[C] == [0, 1, 0]
    cyst_wins = [det(1, 2, BOX, 0.6), det(1, 1, [11, 11, 20, 20], 0.9)]  # not "listed last"
    assert conf(gt, cyst_wins)[C] == [1, 0, 0]
    # below the winner's score only the other prediction counts
    assert conf(gt, hcc_wins, threshold=0.95)[C] == [0, 0, 1]


def test_equal_scores_go_to_the_prediction_listed_first() -> None:
    gt = make_gt([(1, 1, BOX)])
    assert conf(gt, [det(1, 2, BOX, 0.7), det(1, 1, BOX, 0.7)])[C] == [0, 1, 0]
    assert conf(gt, [det(1, 1, BOX, 0.7), det(1, 2, BOX, 0.7)])[C] == [1, 0, 0]


def test_miss_and_over_detection() -> None:
    gt = make_gt([(1, 2, BOX)])
    dets = [det(1, 1, FAR, 0.9), det(1, 1, [80, 10, 10, 10], 0.8)]
    assert conf(gt, dets) == [[0, 0, 0], [0, 0, 1], [2, 0, 0]]


def test_matching_is_per_image() -> None:
    gt = make_gt([(1, 1, BOX)], n_images=2)
    assert conf(gt, [det(2, 1, BOX, 0.9)]) == [[0, 0, 1], [0, 0, 0], [1, 0, 0]]


def test_threshold_filters_predictions_and_equality_counts() -> None:
    gt = make_gt([(1, 1, BOX)])
    dets = [det(1, 1, BOX, 0.3), det(1, 2, FAR, 0.3)]
    assert conf(gt, dets, threshold=0.3) == [[1, 0, 0], [0, 0, 0], [0, 1, 0]]
    assert conf(gt, dets, threshold=0.35) == [[0, 0, 1], [0, 0, 0], [0, 0, 0]]


def test_iou_equal_to_the_threshold_is_a_match() -> None:
    gt = make_gt([(1, 1, [0, 0, 10, 10])])
    quarter = [det(1, 1, [0, 0, 5, 5], 0.9)]  # IoU exactly 25 / 100
    assert conf(gt, quarter, iou=0.25)[C] == [1, 0, 0]
    assert conf(gt, quarter, iou=0.26)[C] == [0, 0, 1]


def test_images_without_ground_truth_only_give_over_detections() -> None:
    gt = make_gt([], n_images=3)
    result = lesion_metrics(gt, [det(2, 2, BOX, 0.9), det(3, 2, BOX, 0.4)], threshold=0.0)
    assert result["confusion"] == [[0, 0, 0], [0, 0, 0], [0, 2, 0]]
    assert result["per_class"]["HCC"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "over": 2,
        "missed": 0,
        "n": 0,
    }


def test_absent_class_scores_zero_and_counts_in_macro() -> None:
    gt = make_gt([(1, 1, BOX)])
    result = lesion_metrics(gt, [det(1, 1, BOX, 0.9)])
    assert result["per_class"]["cyst"]["f1"] == 1.0
    assert result["per_class"]["HCC"] == dict.fromkeys(("precision", "recall", "f1"), 0.0) | {
        "over": 0,
        "missed": 0,
        "n": 0,
    }
    assert result["macro"]["f1"] == 0.5
    assert result["micro"]["f1"] == 1.0


def test_threshold_maximises_macro_f1_lowest_on_ties() -> None:
    gt = make_gt([(1, 1, BOX), (1, 2, [50, 50, 20, 20])])
    dets = [det(1, 1, BOX, 0.8), det(1, 2, [50, 50, 20, 20], 0.9), det(1, 2, FAR, 0.2)]
    result = lesion_metrics(gt, dets)
    assert result["threshold"] == 0.25  # 0.25 .. 0.80 all give F1 1; 0.20 keeps the FP
    assert [s["threshold"] for s in result["sweep"]] == list(THRESHOLDS)
    assert len(THRESHOLDS) == 21 and THRESHOLDS[7] == 0.35
    macro_f1 = [s["macro_f1"] for s in result["sweep"]]
    assert macro_f1[4] < 1.0 == macro_f1[5] == macro_f1[16] > macro_f1[17]
    assert lesion_metrics(gt, [det(1, 1, BOX, 0.5)])["threshold"] == 0.0


def test_no_detections_means_every_lesion_missed() -> None:
    gt = make_gt([(1, 1, BOX), (1, 2, FAR)])
    result = lesion_metrics(gt, [])
    assert result["confusion"] == [[0, 0, 1], [0, 0, 1], [0, 0, 0]]
    assert result["threshold"] == 0.0 and result["macro"]["missed"] == 2


def test_formulas_reproduce_seed_000_table_2() -> None:
    """The YOLOX confusion matrix of the seed (figure 4a) gives its table 2."""
    names = ["cyst", "HCC", "hemangioma", "Meta"]
    seed_conf = [  # rows cyst..Meta then None; columns cyst..Meta then None
        [2708, 17, 15, 0, 297],
        [25, 810, 152, 13, 371],
        [33, 126, 2203, 9, 591],
        [37, 396, 141, 108, 339],
        [851, 371, 468, 28, 0],
    ]
    gt, dets = _from_confusion(seed_conf, names)
    result = lesion_metrics(gt, dets, threshold=0.5)
    assert result["confusion"] == seed_conf
    table2 = {  # precision, recall, F1 as printed (4 decimals)
        "cyst": (0.7411, 0.8917, 0.8094),
        "HCC": (0.4709, 0.5908, 0.5241),
        "hemangioma": (0.7395, 0.7438, 0.7416),
        # the seed prints 0.6855, a typo: 108/158 = 0.6835, and its F1 0.1832 and macro
        # precision 0.6588 are only consistent with 0.6835
        "Meta": (0.6835, 0.1058, 0.1832),
    }
    for name, expected in table2.items():
        m = result["per_class"][name]
        assert (m["precision"], m["recall"], m["f1"]) == pytest.approx(expected, abs=5e-5)
    macro = result["macro"]
    assert (macro["precision"], macro["recall"], macro["f1"]) == pytest.approx(
        (0.6588, 0.5830, 0.5646), abs=1e-4
    )
    assert (macro["n"], macro["over"], macro["missed"]) == (8391, 1718, 1598)
    assert result["micro"]["precision"] == (2708 + 810 + 2203 + 108) / (8391 - 1598 + 1718)


def _from_confusion(
    matrix: list[list[int]], names: list[str]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One image per lesion and one per over-detection, realising ``matrix`` at threshold 0.5."""
    c = len(names)
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    dets: list[dict[str, Any]] = []
    for true, row in enumerate(matrix):
        for pred, count in enumerate(row):
            for _ in range(count):
                image = len(images) + 1
                images.append({"id": image, "file_name": "x", "width": 100, "height": 100})
                if true < c:
                    anns.append(
                        {"id": len(anns) + 1, "image_id": image, "category_id": true + 1,
                         "bbox": BOX, "area": 400.0}
                    )  # fmt: skip
                if pred < c:
                    dets.append(det(image, pred + 1, BOX if true < c else FAR, 0.9))
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    return {"images": images, "annotations": anns, "categories": cats}, dets


def test_output_is_json_ready_and_shaped() -> None:
    gt = make_gt([(1, 1, BOX)])
    result = lesion_metrics(gt, [det(1, 2, FAR, 0.9)], iou=0.3)
    assert json.loads(json.dumps(result)) == result
    assert result["labels"] == ["cyst", "HCC", "None"]
    assert result["iou"] == 0.3 and result["confusion"][N][N] == 0
    assert set(result["macro"]) == {"precision", "recall", "f1", "over", "missed", "n"}


def test_bad_arguments_raise() -> None:
    gt = make_gt([(1, 1, BOX)])
    with pytest.raises(ValueError, match="iou"):
        lesion_metrics(gt, [], iou=0.0)
    with pytest.raises(ValueError, match="threshold"):
        lesion_metrics(gt, [], threshold=1.5)
    with pytest.raises(ValueError, match="image_id 9"):
        lesion_metrics(gt, [det(9, 1, BOX, 0.5)])
    with pytest.raises(ValueError, match="category_id 7"):
        lesion_metrics(gt, [det(1, 7, BOX, 0.5)])


def test_confusion_figure_has_labelled_axes_and_counts() -> None:
    gt = make_gt([(1, 1, BOX)])
    fig = lesion_confusion_figure(lesion_metrics(gt, [det(1, 1, BOX, 0.9), det(1, 2, FAR, 0.9)]))
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("Preds", "Label")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cyst", "HCC", "None"]
    assert [t.get_text() for t in ax.texts] == ["1", "0", "0", "0", "0", "0", "0", "1", "0"]


# ---------------------------------------------------------------- brute-force reference


def _iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def reference_confusion(
    gt: dict[str, Any], dets: list[dict[str, Any]], iou: float, t: float
) -> list[list[int]]:
    """The seed-000 rules written literally: loops over every lesion and prediction."""
    idx = {c["id"]: i for i, c in enumerate(gt["categories"])}
    n = len(idx)
    m = [[0] * (n + 1) for _ in range(n + 1)]
    kept = [d for d in dets if d["score"] >= t]
    for a in gt["annotations"]:
        hits = [
            d for d in kept if d["image_id"] == a["image_id"] and _iou(a["bbox"], d["bbox"]) >= iou
        ]
        best = max(hits, key=lambda d: d["score"]) if hits else None  # first of equal maxima
        m[idx[a["category_id"]]][idx[best["category_id"]] if best else n] += 1
    for d in kept:
        same = [a for a in gt["annotations"] if a["image_id"] == d["image_id"]]
        if not any(_iou(a["bbox"], d["bbox"]) >= iou for a in same):
            m[n][idx[d["category_id"]]] += 1
    return m


def reference_f1(m: list[list[int]]) -> tuple[float, float]:
    """(macro F1, micro F1) with the zero-denominator convention of the module."""
    n = len(m) - 1

    def f1(d: int, col: int, row: int) -> float:
        p, r = (d / col if col else 0.0), (d / row if row else 0.0)
        return 2 * p * r / (p + r) if p + r else 0.0

    cols = [sum(m[i][c] for i in range(n + 1)) for c in range(n)]
    rows = [sum(m[c]) for c in range(n)]
    per = [f1(m[c][c], cols[c], rows[c]) for c in range(n)]
    return sum(per) / n, f1(sum(m[c][c] for c in range(n)), sum(cols), sum(rows))


def random_case(seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rng = random.Random(seed)
    cats: list[dict[str, Any]] = [{"id": 10 + i, "name": f"c{i}"} for i in range(rng.randint(1, 4))]
    images: list[dict[str, Any]] = [
        {"id": 100 + i, "file_name": "x", "width": 64, "height": 64} for i in range(25)
    ]

    def box() -> list[float]:
        w, h = rng.uniform(4, 30), rng.uniform(4, 30)
        return [rng.uniform(0, 64 - w), rng.uniform(0, 64 - h), w, h]

    anns: list[dict[str, Any]] = []
    dets: list[dict[str, Any]] = []
    for img in images:
        for _ in range(rng.choice([0, 0, 1, 2, 3])):
            anns.append({"id": len(anns) + 1, "image_id": img["id"], "bbox": box(),
                         "category_id": rng.choice(cats)["id"]})  # fmt: skip
    for _ in range(300):
        img = rng.choice(images)
        own = [a for a in anns if a["image_id"] == img["id"]]
        near = own and rng.random() < 0.6
        b = [v + rng.gauss(0, 3) for v in rng.choice(own)["bbox"]] if near else box()
        b[2], b[3] = max(b[2], 1.0), max(b[3], 1.0)
        score = rng.random()
        if seed % 2:  # scores on the grid: equal scores and score == threshold occur
            score = round(rng.randint(0, 20) * 0.05, 2)
        dets.append(det(img["id"], rng.choice(cats)["id"], b, score))
    rng.shuffle(dets)
    return {"images": images, "annotations": anns, "categories": cats}, dets


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_reference_at_every_threshold(seed: int) -> None:
    gt, dets = random_case(seed)
    iou = (0.25, 0.1, 0.5)[seed % 3]
    result = lesion_metrics(gt, dets, iou=iou)
    expected_sweep = []
    for t in THRESHOLDS:
        m = reference_confusion(gt, dets, iou, t)
        assert lesion_metrics(gt, dets, iou=iou, threshold=t)["confusion"] == m, t
        expected_sweep.append(reference_f1(m))
    got = [(s["macro_f1"], s["micro_f1"]) for s in result["sweep"]]
    assert [v for pair in got for v in pair] == pytest.approx(
        [v for pair in expected_sweep for v in pair], abs=1e-12
    )
    macro = [f for f, _ in expected_sweep]
    assert result["threshold"] == THRESHOLDS[macro.index(max(macro))]


# ---------------------------------------------------------------- COCO metrics vs pycocotools


def coco_case(seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Boxes from 5 to 200 px so that small, medium and large areas all occur."""
    rng = random.Random(seed)
    cats = [{"id": 3, "name": "a"}, {"id": 5, "name": "b"}, {"id": 8, "name": "c"}]
    images: list[dict[str, Any]] = [
        {"id": i, "file_name": "x", "width": 256, "height": 256} for i in range(1, 13)
    ]

    def box() -> list[float]:
        w, h = rng.uniform(5, 200), rng.uniform(5, 200)
        return [rng.uniform(0, 256 - w), rng.uniform(0, 256 - h), w, h]

    anns: list[dict[str, Any]] = [
        {"id": k + 1, "image_id": rng.choice(images)["id"], "category_id": rng.choice([3, 5]),
         "bbox": (b := box()), "area": b[2] * b[3], "iscrowd": 0}
        for k in range(40)
    ]  # fmt: skip
    dets = [
        det(a["image_id"], a["category_id"], [v + rng.gauss(0, 4) for v in a["bbox"]], rng.random())
        for a in anns
        if rng.random() < 0.8
    ]
    dets += [det(rng.choice(images)["id"], rng.choice([3, 5, 8]), box(), rng.random() / 2)
             for _ in range(60)]  # fmt: skip
    return {"images": images, "annotations": anns, "categories": cats}, dets


def pycocotools_stats(
    gt: dict[str, Any], dets: list[dict[str, Any]], tmp: Path, cat: int | None = None
) -> list[float]:
    """COCOeval run the documented way: files on disk, optionally one category."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    (tmp / "gt.json").write_text(json.dumps(gt))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(tmp / "gt.json"))
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), "bbox")
        if cat is not None:
            ev.params.catIds = [cat]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats[:6]]


@pytest.mark.parametrize("seed", [0, 1])
def test_coco_metrics_equal_pycocotools(seed: int, tmp_path: Path) -> None:
    gt, dets = coco_case(seed)
    before = copy.deepcopy((gt, dets))
    result = coco_metrics(gt, dets)
    assert (gt, dets) == before  # pycocotools mutates its input; we must not
    keys = ["mAP", "AP50", "AP75", "APs", "APm", "APl"]
    assert [result[k] for k in keys] == pycocotools_stats(gt, dets, tmp_path)
    for c in gt["categories"]:
        expected = pycocotools_stats(gt, dets, tmp_path, cat=c["id"])
        assert [result["per_class"][c["name"]][k] for k in keys] == expected, c["name"]
    assert result["per_class"]["c"]["mAP"] == -1.0  # no ground truth of class c
    assert all(0.0 <= result[k] <= 1.0 for k in keys)


def test_coco_metrics_without_detections(tmp_path: Path) -> None:
    gt = make_gt([(1, 1, [0.0, 0.0, 60.0, 60.0])])
    result = coco_metrics(gt, [])
    keys = ["mAP", "AP50", "AP75", "APs", "APm", "APl"]
    assert [result[k] for k in keys] == [0.0, 0.0, 0.0, -1.0, 0.0, -1.0]  # one medium box
    # loadRes rejects []; one detection of a class without ground truth changes no number
    assert [result[k] for k in keys] == pycocotools_stats(gt, [det(1, 2, BOX, 0.5)], tmp_path)
    assert result["per_class"]["HCC"]["mAP"] == -1.0


def test_coco_metrics_fill_area_and_iscrowd_when_missing() -> None:
    gt = make_gt([(1, 1, BOX), (1, 2, [40.0, 40.0, 50.0, 50.0])])
    dets = [det(1, 1, BOX, 0.9), det(1, 1, [40.0, 40.0, 50.0, 50.0], 0.8)]
    bare = copy.deepcopy(gt)
    for a in bare["annotations"]:
        del a["area"], a["iscrowd"]
    assert coco_metrics(bare, dets) == coco_metrics(gt, dets)


def test_empty_ground_truth_gives_undefined_coco_and_zero_lesion_metrics() -> None:
    gt: dict[str, Any] = {"images": [], "annotations": [], "categories": CATS}
    assert coco_metrics(gt, [])["mAP"] == -1.0
    result = lesion_metrics(gt, [])
    assert result["confusion"] == [[0, 0, 0]] * 3 and result["macro"]["f1"] == 0.0

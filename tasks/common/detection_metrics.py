"""Detection metrics: the one implementation used by training, `eval detection` and reports.

Two families:

* :func:`coco_metrics` — COCO box AP of pycocotools' ``COCOeval`` (no re-implementation), with
  per-class values sliced from the same precision array (identical to a run with
  ``params.catIds=[id]``: the per-category accumulation does not depend on the other categories).
  faster-coco-eval (the same algorithm in C++) computes it where it agrees with pycocotools to
  1e-6 on a check set (:func:`coco_backend`); pycocotools stays the reference.
* :func:`lesion_metrics` — the lesion-level rules of seed 000:

  - a prediction matches a ground-truth box when IoU >= ``iou`` (class-agnostic, per image);
  - at threshold ``t`` only predictions with ``score >= t`` count;
  - a ground-truth box with >= 1 matching prediction is detected once, however many match it, as
    the class of its highest-scoring matching prediction (equal scores: the one listed first);
  - a ground-truth box without a matching prediction is a miss (predicted class ``None``);
  - a prediction matching no ground-truth box is an over-detection (true class ``None``);
    a prediction matching a box that another prediction already detected is neither;
  - per class: precision = diagonal / column sum (None row included), recall = diagonal / row sum
    (None column included); a ratio with a zero denominator is 0, and F1 is 0 when
    precision + recall is 0 — so a class absent from both truth and predictions scores 0 and
    pulls the macro mean down (the seed's convention of averaging all diagnoses);
  - the threshold is the grid value 0.00, 0.05, ..., 1.00 with the highest macro F1 (the lowest
    on ties) unless given.

Every ground-truth annotation is a lesion (``iscrowd`` is not treated specially).

Speed: a GT box's class at threshold t only depends on its top-scoring matching prediction, and a
prediction is an over-detection at t iff it matches nothing and ``score >= t``. So IoU is computed
once for all (prediction, GT-of-the-same-image) pairs, and the 21 thresholds are evaluated by
counting with ``np.bincount`` (no Python loop over images or pairs).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from functools import cache
from itertools import chain
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from tasks.common.coco_columns import Detections, gc_paused

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "COCO_KEYS",
    "THRESHOLDS",
    "coco_backend",
    "coco_metrics",
    "lesion_confusion_figure",
    "lesion_metrics",
]

COCO_KEYS = ("mAP", "AP50", "AP75", "APs", "APm", "APl")
# Built as round(i * 0.05, 2) so that 0.35 is the same double as a score written "0.35".
THRESHOLDS: tuple[float, ...] = tuple(round(i * 0.05, 2) for i in range(21))
NONE = "None"

Array = NDArray[Any]
Dets = Sequence[dict[str, Any]]  # a list of COCO results, or Detections (columns)


# ---------------------------------------------------------------- COCO (pycocotools)

BACKEND_ENV = "MEDSWEEP_COCO_BACKEND"  # auto (default) | pycocotools | faster-coco-eval
PYCOCOTOOLS, FASTER = "pycocotools", "faster-coco-eval"


def _coco_inputs(gt: dict[str, Any], dets: Dets, coco_cls: Any) -> tuple[Any, Any]:
    """COCO objects (pycocotools' or faster-coco-eval's `coco_cls`) for gt and dets, built on
    copies (both libraries mutate their input)."""

    def index(dataset: dict[str, Any]) -> Any:
        coco = coco_cls()
        coco.dataset = dataset
        coco.createIndex()
        return coco

    anns = [
        {**a, "area": a.get("area", a["bbox"][2] * a["bbox"][3]), "iscrowd": a.get("iscrowd", 0)}
        for a in gt["annotations"]
    ]
    coco_gt = index({**gt, "annotations": anns})
    if dets:
        fresh = list(dets) if isinstance(dets, Detections) else [dict(d) for d in dets]
        coco_dt = coco_gt.loadRes(fresh)
    else:  # loadRes indexes anns[0]; an empty result set is valid and scores 0 (or -1)
        coco_dt = index({"images": gt["images"], "categories": gt["categories"], "annotations": []})
    return coco_gt, coco_dt


def _evaluate(gt: dict[str, Any], dets: Dets, backend: str) -> Any:
    """An evaluated, accumulated and summarised COCOeval of `backend`. Without cyclic garbage
    collections: both libraries make millions of acyclic dicts and lists (and each collection
    would walk all of them again)."""
    with contextlib.redirect_stdout(io.StringIO()), gc_paused():  # both print progress
        if backend == FASTER:
            from faster_coco_eval import COCO, COCOeval_faster

            coco_gt, coco_dt = _coco_inputs(gt, dets, COCO)
            ev = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=_quiet)
        else:
            from pycocotools.coco import COCO as RefCOCO
            from pycocotools.cocoeval import COCOeval

            coco_gt, coco_dt = _coco_inputs(gt, dets, RefCOCO)
            ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _quiet(*args: Any, **kwargs: Any) -> None:
    """faster-coco-eval's print function: silent."""


def coco_backend() -> str:
    """The library `coco_metrics` uses: faster-coco-eval (C++, ~8x faster on seed 000's
    839k detections) when it is installed and agrees with pycocotools to 1e-6 on every array
    of `COCOeval` on a check set (once per process), else pycocotools, the reference.
    ``MEDSWEEP_COCO_BACKEND=pycocotools`` (or ``faster-coco-eval``) forces one."""
    import os

    chosen = os.environ.get(BACKEND_ENV, "auto")
    if chosen in (PYCOCOTOOLS, FASTER):
        return chosen
    return FASTER if faster_agrees() else PYCOCOTOOLS


@cache
def faster_agrees() -> bool:
    """faster-coco-eval gives pycocotools' precision, recall, scores and stats (to 1e-6) on a
    seeded check set: several classes (one without ground truth), all three area ranges,
    equal scores, images without boxes and images without detections."""
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return False
    gt, dets = agreement_set()
    try:
        ref, fast = _evaluate(gt, dets, PYCOCOTOOLS), _evaluate(gt, dets, FASTER)
    except Exception:  # a broken build must not break evaluation: use the reference
        return False
    arrays = [(ref.stats, fast.stats)]
    arrays += [(ref.eval[k], fast.eval[k]) for k in ("precision", "recall", "scores")]
    return all(
        np.shape(a) == np.shape(b) and np.allclose(a, b, rtol=0, atol=1e-6) for a, b in arrays
    )


def agreement_set(seed: int = 0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The check set of `faster_agrees`: 60 images of 256 px, 4 classes (class 4 without ground
    truth), boxes from 8 to 200 px, jittered hits and random false positives."""
    rng = np.random.default_rng(seed)
    images = [{"id": i, "file_name": f"{i}.png", "width": 256, "height": 256} for i in range(1, 61)]
    cats = [{"id": c, "name": f"c{c}"} for c in range(1, 5)]
    anns: list[dict[str, Any]] = []
    dets: list[dict[str, Any]] = []

    def box(low: float, high: float) -> list[float]:
        w, h = rng.uniform(low, high, size=2)
        return [float(rng.uniform(0, 256 - w)), float(rng.uniform(0, 256 - h)), float(w), float(h)]

    for image_id in range(1, 51):  # images 51-60 have no ground truth
        for _ in range(int(rng.integers(1, 4))):
            gt_box, cat = box(8, 200), int(rng.integers(1, 4))
            area = gt_box[2] * gt_box[3]
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat,
                         "bbox": gt_box, "area": area, "iscrowd": 0})  # fmt: skip
            if image_id % 7:  # every 7th image has no detections at all
                jitter = 0.08 * max(gt_box[2:])
                hit = [v + float(rng.normal(0, jitter)) for v in gt_box]
                hit[2:] = [max(hit[2], 1.0), max(hit[3], 1.0)]
                score = round(float(rng.uniform(0.3, 1.0)), 1)  # ties between detections
                dets.append({"image_id": image_id, "category_id": cat, "bbox": hit,
                             "score": score})  # fmt: skip
    for _ in range(120):
        dets.append({"image_id": int(rng.integers(1, 61)), "category_id": int(rng.integers(1, 5)),
                     "bbox": box(8, 120), "score": float(rng.uniform(0, 0.6))})  # fmt: skip
    return {"images": images, "annotations": anns, "categories": cats}, dets


def _summarize(ev: Any, k: int, iou: float | None = None, area: str = "all") -> float:
    """AP of category index ``k`` exactly as ``COCOeval.summarize`` computes it (maxDets 100)."""
    p = ev.params
    s = ev.eval["precision"]  # [T, R, K, A, M]
    if iou is not None:
        s = s[np.where(iou == p.iouThrs)[0]]
    s = s[:, :, k : k + 1, p.areaRngLbl.index(area), p.maxDets.index(100)]
    return float(np.mean(s[s > -1])) if (s > -1).any() else -1.0


def coco_metrics(gt: dict[str, Any], dets: Dets, *, backend: str | None = None) -> dict[str, Any]:
    """COCO box metrics of pycocotools' ``COCOeval`` (-1 where pycocotools reports -1).

    Computed by faster-coco-eval where it was checked to agree with pycocotools
    (`coco_backend`), else by pycocotools itself.

    Args:
        gt: COCO ground truth (e.g. from :func:`tasks.common.coco.load_coco_gt`).
        dets: COCO results ``[{image_id, category_id, bbox, score}]`` (or the columns of
            :func:`tasks.common.coco.load_detections`); may be empty.
        backend: ``pycocotools`` or ``faster-coco-eval``; None: `coco_backend()`.

    Returns:
        ``{mAP, AP50, AP75, APs, APm, APl, per_class: {name: {same keys}}}``.
    """
    ev = _evaluate(gt, dets, backend or coco_backend())
    out: dict[str, Any] = {key: float(v) for key, v in zip(COCO_KEYS, ev.stats[:6], strict=True)}
    names = {c["id"]: c["name"] for c in gt["categories"]}
    out["per_class"] = {names[cat]: _class_ap(ev, k) for k, cat in enumerate(ev.params.catIds)}
    return out


def _class_ap(ev: Any, k: int) -> dict[str, float]:
    values = [
        _summarize(ev, k),
        _summarize(ev, k, iou=0.5),
        _summarize(ev, k, iou=0.75),
        *(_summarize(ev, k, area=a) for a in ("small", "medium", "large")),
    ]
    return dict(zip(COCO_KEYS, values, strict=True))


# ---------------------------------------------------------------- lesion level (seed 000)


def _index(ids: Array, table: Array, what: str) -> Array:
    """Positions of ``ids`` in ``table`` (unique, any order); ValueError for an unknown id."""
    order = np.argsort(table, kind="stable")
    pos = np.searchsorted(table, ids, sorter=order).clip(0, max(len(table) - 1, 0))
    found = order[pos] if len(table) else pos
    bad = table[found] != ids if len(table) else np.ones(len(ids), dtype=bool)
    if bad.any():
        raise ValueError(f"{what} {ids[np.flatnonzero(bad)[0]]} is not in the ground truth")
    return found


def _boxes(entries: Sequence[dict[str, Any]]) -> tuple[Array, Array, Array]:
    """Image ids, category ids and ``[x1, y1, x2, y2]`` boxes of COCO entries as arrays."""
    n = len(entries)
    boxes = list(map(itemgetter("bbox"), entries))
    if not set(map(len, boxes)) <= {4}:  # a ragged list would shift every later box silently
        raise ValueError("every bbox must be [x, y, width, height]")
    img = np.fromiter(map(itemgetter("image_id"), entries), dtype=np.int64, count=n)
    cat = np.fromiter(map(itemgetter("category_id"), entries), dtype=np.int64, count=n)
    box = np.fromiter(chain.from_iterable(boxes), dtype=np.float64, count=4 * n).reshape(n, 4)
    box[:, 2:] += box[:, :2]
    return img, cat, box


def _top_matches(
    gt_img: Array, gt_box: Array, pred_img: Array, pred_box: Array, iou: float, n_img: int
) -> tuple[Array, Array]:
    """Per GT the first matching prediction (index, or len(pred) when none); per prediction
    whether it matches any GT. Predictions must be sorted by image, then by falling score."""
    n_pred = len(pred_img)
    g_order = np.argsort(gt_img, kind="stable")
    g_count = np.bincount(gt_img, minlength=n_img)
    g_start = np.concatenate(([0], np.cumsum(g_count)[:-1]))
    # all (prediction, GT of the same image) pairs, in prediction order
    per_pred = g_count[pred_img]
    pair_pred = np.repeat(np.arange(n_pred), per_pred)
    offset = np.arange(len(pair_pred)) - np.repeat(np.cumsum(per_pred) - per_pred, per_pred)
    pair_gt = g_order[np.repeat(g_start[pred_img], per_pred) + offset]
    a, b = gt_box[pair_gt], pred_box[pair_pred]
    w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = w * h
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 (two empty boxes) -> no match
        match = inter / (area_a + area_b - inter) >= iou
    matched = np.zeros(n_pred, dtype=bool)
    matched[pair_pred[match]] = True
    top = np.full(len(gt_img), n_pred, dtype=np.int64)
    np.minimum.at(top, pair_gt[match], pair_pred[match])  # first in order = highest score
    return top, matched


def _confusions(
    thresholds: Array,
    true: Array,
    top_cls: Array,
    top_score: Array,
    over: tuple[Array, Array],
    c: int,
) -> Array:
    """Confusion matrices ``[len(thresholds), c + 1, c + 1]`` (index ``c`` = None).

    ``true``/``top_cls``/``top_score``: per GT its class and its top matching prediction's class
    and score (-inf when none); ``over``: class and score of the predictions matching no GT.
    """
    n_t = len(thresholds)

    def passing(score: Array, cell: Array, n_cells: int) -> Array:
        # how many thresholds each score passes (score >= t), then "passes t_k" = passes > k
        k = np.searchsorted(thresholds, score, side="right")
        hist = np.bincount(k * n_cells + cell, minlength=(n_t + 1) * n_cells)
        at_least = np.cumsum(hist.reshape(n_t + 1, n_cells)[::-1], axis=0)[::-1]
        return at_least[1:]

    conf = np.zeros((n_t, c + 1, c + 1), dtype=np.int64)
    conf[:, :c, :c] = passing(top_score, true * c + top_cls, c * c).reshape(n_t, c, c)
    conf[:, :c, c] = np.bincount(true, minlength=c) - conf[:, :c, :c].sum(axis=2)
    conf[:, c, :c] = passing(over[1], over[0], c)
    return conf


def _ratio(num: Array, den: Array) -> Array:
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def _scores(conf: Array) -> dict[str, Array]:
    """Per-class and micro precision/recall/F1 of confusion matrices ``[..., c + 1, c + 1]``."""
    diag = np.diagonal(conf[..., :-1, :-1], axis1=-2, axis2=-1)
    col, row = conf[..., :-1].sum(axis=-2), conf[..., :-1, :].sum(axis=-1)
    out: dict[str, Array] = {}
    for prefix, (d, cs, rs) in {
        "": (diag, col, row),
        "micro_": (diag.sum(axis=-1), col.sum(axis=-1), row.sum(axis=-1)),
    }.items():
        p, r = _ratio(d, cs), _ratio(d, rs)
        out[prefix + "precision"], out[prefix + "recall"] = p, r
        out[prefix + "f1"] = _ratio(2 * p * r, p + r)
    return out


def _summary(conf: Array, names: list[str]) -> dict[str, Any]:
    """per_class, macro and micro entries of one confusion matrix ``[c + 1, c + 1]``."""
    s = _scores(conf)
    counts = {"over": conf[-1, :-1], "missed": conf[:-1, -1], "n": conf[:-1].sum(axis=1)}
    per_class = {
        name: {
            **{k: float(s[k][i]) for k in ("precision", "recall", "f1")},
            **{k: int(v[i]) for k, v in counts.items()},
        }
        for i, name in enumerate(names)
    }
    totals = {k: int(v.sum()) for k, v in counts.items()}
    macro = {k: float(np.mean(s[k])) if names else 0.0 for k in ("precision", "recall", "f1")}
    micro = {k: float(s["micro_" + k]) for k in ("precision", "recall", "f1")}
    return {"per_class": per_class, "macro": macro | totals, "micro": micro | totals}


def _pred_columns(dets: Dets) -> tuple[Array, Array, Array, Array]:
    """Image ids, category ids, ``[x1, y1, x2, y2]`` boxes and scores of the predictions."""
    if isinstance(dets, Detections):  # already columns (no dict is read)
        box = dets.bbox.copy()
        box[:, 2:] += box[:, :2]
        return dets.image_id, dets.category_id, box, dets.score
    score = np.fromiter(map(itemgetter("score"), dets), dtype=np.float64, count=len(dets))
    return *_boxes(dets), score


def _lesion_inputs(
    gt: dict[str, Any], dets: Dets, iou: float
) -> tuple[Array, Array, Array, tuple[Array, Array]]:
    """What every threshold needs: per GT its class index and the class and score of its
    top-scoring matching prediction (score -inf when none); and the class and score of each
    prediction that matches no GT."""
    cat_ids = np.fromiter(map(itemgetter("id"), gt["categories"]), dtype=np.int64)
    img_ids = np.fromiter(map(itemgetter("id"), gt["images"]), dtype=np.int64)
    g_img, g_cat, g_box = _boxes(gt["annotations"])
    p_img, p_cat, p_box, score = _pred_columns(dets)
    g_img, g_cat = _index(g_img, img_ids, "image_id"), _index(g_cat, cat_ids, "category_id")
    p_img, p_cat = _index(p_img, img_ids, "image_id"), _index(p_cat, cat_ids, "category_id")
    order = np.lexsort((-score, p_img))  # by image, then falling score; stable on ties
    p_img, p_cat, p_box, score = p_img[order], p_cat[order], p_box[order], score[order]
    top, matched = _top_matches(g_img, g_box, p_img, p_box, iou, len(img_ids))
    # top == len(dets) means "no match": it lands on a sentinel that passes no threshold
    top_cls, top_score = np.append(p_cat, 0)[top], np.append(score, -np.inf)[top]
    return g_cat, top_cls, top_score, (p_cat[~matched], score[~matched])


def lesion_metrics(
    gt: dict[str, Any],
    dets: Dets,
    *,
    iou: float = 0.25,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Lesion-level confusion matrix and scores of seed 000 (rules in the module docstring).

    Args:
        gt: COCO ground truth; class order = order of ``gt["categories"]``.
        dets: COCO results ``[{image_id, category_id, bbox, score}]`` (or the columns of
            :func:`tasks.common.coco.load_detections`).
        iou: IoU a prediction needs with a ground-truth box to match it, in (0, 1].
        threshold: fixed score threshold; None picks the grid value with the best macro F1.

    Returns:
        JSON-ready ``{iou, threshold, labels, confusion, per_class, macro, micro, sweep}``:
        ``labels`` = class names then "None"; ``confusion[true][pred]`` in that order;
        ``per_class[name]`` = ``{precision, recall, f1, over, missed, n}``; ``macro`` = mean of
        the per-class precision/recall/F1 with summed over/missed/n; ``micro`` = scores of the
        summed counts; ``sweep`` = ``[{threshold, macro_f1, micro_f1}]`` over the 21 grid values.

    Raises:
        ValueError: ``iou``/``threshold`` out of range, or an image/category id not in ``gt``.
    """
    if not 0.0 < iou <= 1.0:
        raise ValueError(f"iou must be within (0, 1], got {iou}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be within [0, 1], got {threshold}")
    names = [str(c["name"]) for c in gt["categories"]]
    args = _lesion_inputs(gt, dets, iou)
    grid = np.asarray(THRESHOLDS)
    sweep_conf = _confusions(grid, *args, c=len(names))
    sweep_scores = _scores(sweep_conf)
    macro_f1 = sweep_scores["f1"].mean(axis=1) if names else np.zeros(len(grid))
    if threshold is None:
        best = int(np.argmax(macro_f1))  # first maximum = lowest threshold on ties
        threshold, conf = THRESHOLDS[best], sweep_conf[best]
    else:
        conf = _confusions(np.asarray([threshold]), *args, c=len(names))[0]
    sweep = [
        {"threshold": t, "macro_f1": float(m), "micro_f1": float(u)}
        for t, m, u in zip(THRESHOLDS, macro_f1, sweep_scores["micro_f1"], strict=True)
    ]
    return {
        "iou": float(iou),
        "threshold": float(threshold),
        "labels": [*names, NONE],
        "confusion": conf.tolist(),
        **_summary(conf, names),
        "sweep": sweep,
    }


def lesion_confusion_figure(result: dict[str, Any], title: str | None = None) -> Figure:
    """Heatmap of ``result["confusion"]`` (rows "Label" = true class, columns "Preds"), as in the
    seed's figure 4, with the counts written in the cells. Uses no pyplot state (Agg canvas).
    `title` replaces the IoU/score line (reports reuse it for classification confusions)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    conf = np.asarray(result["confusion"])
    labels = result["labels"]
    fig = Figure(figsize=(1.2 * len(labels) + 1.5, 1.0 * len(labels) + 1.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(conf, cmap="Blues")
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set_xlabel("Preds")
    ax.set_ylabel("Label")
    ax.xaxis.set_label_position("top")
    ax.xaxis.tick_top()
    high = conf.max() / 2 if conf.size else 0
    for (i, j), v in np.ndenumerate(conf):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > high else "black")
    if title is None:
        title = f"IoU >= {result['iou']:g}, score >= {result['threshold']:.2f}"
    ax.set_title(title, pad=28)
    fig.tight_layout()
    return fig

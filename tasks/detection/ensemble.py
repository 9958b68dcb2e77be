"""Fold ensembles of detections: weighted box fusion (Solovyev et al., 2021), small and exact.

Boxes of the k fold models are clustered per image and class (greedy, by descending score; a
cluster takes at most one box per model and needs IoU >= `iou` with the cluster's fused box).
A cluster's box is the score-weighted mean of its members and its score the sum of their scores
over k, so a lesion found by one model of four keeps a quarter of its confidence — the detection
analogue of averaging probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def fuse_boxes(
    boxes: np.ndarray, scores: np.ndarray, models: np.ndarray, k: int, iou: float = 0.55
) -> tuple[np.ndarray, np.ndarray]:
    """Fused boxes and scores of one image and class (inputs: all models' boxes)."""
    order = np.argsort(-scores, kind="stable")
    fused: list[np.ndarray] = []
    members: list[list[int]] = []
    for i in order:
        target = -1
        if fused:
            overlaps = _iou(boxes[i], np.stack(fused))
            for c in np.argsort(-overlaps, kind="stable"):
                if overlaps[c] < iou:
                    break
                if models[i] not in {models[m] for m in members[c]}:
                    target = int(c)
                    break
        if target < 0:
            fused.append(boxes[i].astype(np.float64))
            members.append([int(i)])
            continue
        members[target].append(int(i))
        w = scores[members[target]]
        fused[target] = (boxes[members[target]] * w[:, None]).sum(0) / max(w.sum(), 1e-12)
    out_scores = np.array([scores[m].sum() / k for m in members])
    return (np.stack(fused) if fused else np.zeros((0, 4))), out_scores


def fuse_detections(predictions: Sequence[pd.DataFrame], iou: float = 0.55) -> pd.DataFrame:
    """One prediction table from k models' (columns boxes, scores, labels per image)."""
    k = len(predictions)
    merged = pd.concat([p.assign(_model=i) for i, p in enumerate(predictions)], ignore_index=True)
    rows = []
    for _, group in merged.groupby("case", sort=False):
        first = group.iloc[0].to_dict()
        boxes = np.concatenate([np.asarray(b).reshape(-1, 4) for b in group["boxes"]])
        scores = np.concatenate([np.asarray(s, dtype=np.float64) for s in group["scores"]])
        labels = np.concatenate([np.asarray(lab, dtype=np.int64) for lab in group["labels"]])
        models = np.concatenate(
            [
                np.full(len(np.asarray(s)), m)
                for s, m in zip(group["scores"], group["_model"], strict=True)
            ]
        )
        out_b, out_s, out_l = [], [], []
        for label in np.unique(labels):
            sel = labels == label
            fb, fs = fuse_boxes(boxes[sel], scores[sel], models[sel], k, iou)
            out_b.append(fb)
            out_s.append(fs)
            out_l.append(np.full(len(fs), label))
        keep = max(len(np.asarray(s)) for s in group["scores"])
        all_s = np.concatenate(out_s) if out_s else np.zeros(0)
        top = np.argsort(-all_s, kind="stable")[:keep]
        first.update(
            boxes=(np.concatenate(out_b) if out_b else np.zeros((0, 4)))[top],
            scores=all_s[top],
            labels=(np.concatenate(out_l) if out_l else np.zeros(0, np.int64))[top],
        )
        first.pop("_model")
        rows.append(first)
    return pd.DataFrame(rows)

"""Binary-classification metrics: the one implementation used by training, `eval` and reports.

Conventions (shared by every caller, so numbers agree everywhere):

* ``scores`` are probabilities (or any monotone score) of class 1; a case is predicted positive
  when ``score >= threshold``.
* ``auc`` is scikit-learn's ``roc_auc_score``. It is undefined when only one class is present;
  we return ``NaN`` then instead of raising, so that a degenerate validation fold is visible in
  the results instead of crashing a sweep.
* ``sensitivity`` (recall of class 1) is ``NaN`` when there are no positives, ``specificity``
  (recall of class 0) is ``NaN`` when there are no negatives.
* Patient-level metrics average the scores of all images of one patient (seed 003: "mean softmax
  over each patient's slices"; seed 002 uses the same idea for fold ensembles).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.metrics import roc_auc_score

__all__ = [
    "binary_metrics",
    "classification_scores",
    "group_mean_scores",
    "log_loss",
    "patient_metrics",
]


def _as_labels(labels: ArrayLike, name: str = "labels") -> NDArray[np.int64]:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be numeric 0/1, got dtype {arr.dtype}")
    bad = ~np.isin(arr, (0, 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} must be 0 or 1; index {i} is {arr[i]!r}")
    return arr.astype(np.int64)


def _as_scores(scores: ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"scores must be one-dimensional, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"scores must be finite; index {i} is {arr[i]!r}")
    return arr


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def binary_metrics(labels: ArrayLike, scores: ArrayLike, threshold: float = 0.5) -> dict[str, Any]:
    """Compute AUC, accuracy, sensitivity and specificity at ``threshold``.

    Args:
        labels: 0/1 ground truth (list, numpy array or pandas Series).
        scores: score of class 1 per case, same length as ``labels``.
        threshold: cases with ``score >= threshold`` are predicted positive.

    Returns:
        ``{"auc", "accuracy", "sensitivity", "specificity", "threshold", "n", "tp", "fp", "tn",
        "fn"}``; floats are plain Python floats (``NaN`` where undefined, see module docstring),
        counts are ints.

    Raises:
        ValueError: lengths differ, labels are not 0/1, scores are not finite, or no cases.
    """
    y = _as_labels(labels)
    s = _as_scores(scores)
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.size} != {s.size}")
    if y.size == 0:
        raise ValueError("no cases: labels and scores are empty")
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold!r}")

    pred = s >= threshold
    pos = y == 1
    tp = int(np.sum(pred & pos))
    fp = int(np.sum(pred & ~pos))
    tn = int(np.sum(~pred & ~pos))
    fn = int(np.sum(~pred & pos))
    # roc_auc_score raises on a single class; NaN keeps a degenerate fold visible but non-fatal.
    auc = float(roc_auc_score(y, s)) if 0 < tp + fn < y.size else math.nan
    return {
        "auc": auc,
        "accuracy": (tp + tn) / y.size,
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "threshold": float(threshold),
        "n": int(y.size),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def group_mean_scores(
    labels: ArrayLike, scores: ArrayLike, groups: ArrayLike | Sequence[Any]
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[Any]]:
    """Aggregate per group (patient): mean score, the group's label, in sorted group order.

    Returns:
        ``(labels, scores, group_ids)``, one entry per distinct group.

    Raises:
        ValueError: lengths differ, or a group mixes labels 0 and 1 (the group is named).
    """
    y = _as_labels(labels)
    s = _as_scores(scores)
    g = np.asarray(groups)
    if g.ndim != 1:
        raise ValueError(f"groups must be one-dimensional, got shape {g.shape}")
    if not (y.size == s.size == g.size):
        raise ValueError(
            f"labels, scores and groups differ in length: {y.size}, {s.size}, {g.size}"
        )
    ids, inverse = np.unique(g, return_inverse=True)
    counts = np.bincount(inverse, minlength=ids.size)
    mean_scores = np.bincount(inverse, weights=s, minlength=ids.size) / counts
    positives = np.bincount(inverse, weights=y, minlength=ids.size)
    mixed = (positives > 0) & (positives < counts)
    if mixed.any():
        i = int(np.flatnonzero(mixed)[0])
        gid = ids[i].item() if isinstance(ids[i], np.generic) else ids[i]  # np.str_('a') -> 'a'
        raise ValueError(
            f"group {gid!r} has mixed labels ({int(positives[i])} of {int(counts[i])} are 1); "
            "all images of one patient must share the label"
        )
    return (positives > 0).astype(np.int64), mean_scores.astype(np.float64), ids


def patient_metrics(
    labels: ArrayLike,
    scores: ArrayLike,
    groups: ArrayLike | Sequence[Any],
    threshold: float = 0.5,
) -> dict[str, Any]:
    """``binary_metrics`` on the mean score per group (patient-level diagnosis)."""
    y, s, _ = group_mean_scores(labels, scores, groups)
    return binary_metrics(y, s, threshold)


def log_loss(labels: ArrayLike, scores: ArrayLike, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities (clipped to [eps, 1 - eps])."""
    y = _as_labels(labels).astype(np.float64)
    p = np.clip(_as_scores(scores), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


SCORE_KEYS = ("auc", "accuracy", "sensitivity", "specificity")
COUNT_KEYS = ("n", "tp", "fp", "tn", "fn")


def classification_scores(
    predictions: Any, *, patient: bool = False, threshold: float = 0.5
) -> dict[str, float]:
    """Epoch metrics of per-case predictions (columns ``label``, ``score``, ``patient_id``).

    Image level: auc, accuracy, sensitivity, specificity and loss (BCE of the probabilities).
    With ``patient=True`` and a ``patient_id`` column, also the patient-level diagnosis from the
    mean score per patient (seed 003) as ``patient_<key>``, with its counts (``patient_n``,
    ``patient_correct``, ``patient_tp`` ...), as in seed 003's table 2 (309/346).
    """
    labels, scores = predictions["label"].to_numpy(), predictions["score"].to_numpy()
    m = binary_metrics(labels, scores, threshold)
    out = {k: float(m[k]) for k in SCORE_KEYS}
    out["loss"] = log_loss(labels, scores)
    if patient and "patient_id" in predictions.columns:
        pm = patient_metrics(labels, scores, predictions["patient_id"].to_numpy(), threshold)
        out.update({f"patient_{k}": float(pm[k]) for k in (*SCORE_KEYS, *COUNT_KEYS)})
        out["patient_correct"] = float(pm["tp"] + pm["tn"])
    return out

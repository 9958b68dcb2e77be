"""`medsweep eval classification`: metrics of a prediction CSV, with patient-level aggregation.

The numbers come from :mod:`tasks.common.metrics`, the same code that training and reports use.
Undefined metrics (AUC with one class, sensitivity without positives, ...) are ``None`` in the
result instead of ``NaN`` so that ``--json`` prints valid JSON (``null``).

`medsweep eval detection` (COCO AP and seed 000's lesion-level metrics) follows at the end.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from orchestrator.errors import DataError, UserError
from tasks.common.manifest import parse_label, read_csv_rows
from tasks.common.metrics import binary_metrics, patient_metrics

__all__ = [
    "eval_classification",
    "eval_detection",
    "render_classification",
    "render_detection",
]

LABEL, SCORE = "label", "score"


def _parse_score(text: str, path: Path, line: int) -> float:
    where = f"line {line}, column {SCORE!r}"
    try:
        value = float(text)
    except ValueError:
        raise DataError(
            f"score {text!r} is not a number; expected the probability of class 1",
            source=path,
            where=where,
        ) from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise DataError(
            f"score {text!r} is not a probability within [0, 1]", source=path, where=where
        )
    return value


def _groups(
    rows: list[tuple[int, list[str]]], col: int, labels: list[int], path: Path, group: str
) -> list[str]:
    """The group id per row; DataError for an empty id or a group whose rows disagree on label."""
    first: dict[str, tuple[int, int]] = {}  # group -> (line, label) of its first row
    out: list[str] = []
    for (line, fields), label in zip(rows, labels, strict=True):
        gid = fields[col]
        if not gid:
            raise DataError("empty group id", source=path, where=f"line {line}, column {group!r}")
        seen = first.setdefault(gid, (line, label))
        if seen[1] != label:
            raise DataError(
                f"group {gid!r} has mixed labels: {seen[1]} on line {seen[0]}, {label} on line "
                f"{line}; all rows of one {group} must share the label",
                source=path,
                where=f"line {line}, column {LABEL!r}",
            )
        out.append(gid)
    return out


def _jsonable(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in metrics.items()}


def eval_classification(
    pred_csv: Path, group: str | None, threshold: float = 0.5
) -> dict[str, Any]:
    """Metrics of a prediction CSV with columns ``label`` (0/1) and ``score`` (P(class 1)).

    Args:
        pred_csv: the CSV file; other columns are ignored.
        group: optional column (e.g. ``patient_id``); adds ``patient`` metrics computed from the
            mean score per group.
        threshold: a case is positive when ``score >= threshold``.

    Returns:
        ``{auc, accuracy, sensitivity, specificity, threshold, n, tp, fp, tn, fn}`` (``None``
        where undefined) and, with ``group``, ``patient`` with the same keys (``n`` = groups).

    Raises:
        DataError: naming the file, line and column of the first bad value.
        UserError: ``threshold`` outside [0, 1].
    """
    if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise UserError(f"--threshold must be within [0, 1], got {threshold}")
    path = Path(pred_csv)
    header, rows = read_csv_rows(path, what="predictions")
    missing = [c for c in (LABEL, SCORE) if c not in header]
    if missing:
        raise DataError(
            f"missing column(s) {missing}; columns found: {header}", source=path, where="header"
        )
    if group is not None and group not in header:
        raise DataError(
            f"unknown group column {group!r}; columns found: {header}", source=path, where="header"
        )
    li, si = header.index(LABEL), header.index(SCORE)
    labels = [parse_label(f[li], path, line, LABEL) for line, f in rows]
    scores = np.array([_parse_score(f[si], path, line) for line, f in rows], dtype=np.float64)
    result = _jsonable(binary_metrics(labels, scores, threshold))
    if group is not None:
        groups = _groups(rows, header.index(group), labels, path, group)
        result["patient"] = _jsonable(patient_metrics(labels, scores, groups, threshold))
    return result


_ROWS = (
    ("AUC", "auc"),
    ("Accuracy", "accuracy"),
    ("Sensitivity", "sensitivity"),
    ("Specificity", "specificity"),
    ("n", "n"),
    ("TP / FP", ("tp", "fp")),
    ("TN / FN", ("tn", "fn")),
)


def _cell(metrics: dict[str, Any], key: str | tuple[str, str]) -> str:
    if isinstance(key, tuple):
        return " / ".join(str(metrics[k]) for k in key)
    value = metrics[key]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def render_classification(result: dict[str, Any], console: Console) -> None:
    """Print the metrics of :func:`eval_classification` as a table (image and patient level)."""
    patient = result.get("patient")
    title = f"Classification metrics (threshold {result['threshold']:g})"
    table = Table(title=title, min_width=len(title) + 2)  # keep the title on one line
    table.add_column("Metric")
    table.add_column("Image", justify="right")
    if patient is not None:
        table.add_column("Patient", justify="right")
    for name, key in _ROWS:
        cells = [_cell(result, key)] + ([_cell(patient, key)] if patient is not None else [])
        table.add_row(name, *cells)
    console.print(table)


# ---------------------------------------------------------------- detection (seed 000)


def eval_detection(
    gt_path: Path,
    pred_path: Path,
    *,
    iou: float = 0.25,
    threshold: float | None = None,
    skip_invalid: bool = False,
) -> dict[str, Any]:
    """COCO and lesion-level metrics of COCO-results detections against COCO ground truth.

    Args:
        gt_path: COCO ground truth (``images``, ``annotations``, ``categories``).
        pred_path: detections ``[{image_id, category_id, bbox: [x, y, w, h], score}]``.
        iou: IoU a prediction needs to match a lesion, in (0, 1] (seed 000: 0.25).
        threshold: fixed score threshold in [0, 1]; None picks the one with the best macro F1.
        skip_invalid: drop invalid entries (listed in ``skipped``) instead of failing.

    Returns:
        ``{"coco": {mAP, AP50, AP75, APs, APm, APl, per_class}, "lesion": {...}, "skipped": [...]}``
        with ``lesion`` as returned by :func:`tasks.common.detection_metrics.lesion_metrics`.

    Raises:
        UserError: ``iou`` or ``threshold`` out of range.
        DataError: naming the file and entry of the first invalid input.
    """
    if not (math.isfinite(iou) and 0.0 < iou <= 1.0):
        raise UserError(f"--iou must be within (0, 1], got {iou}")
    if threshold is not None and not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise UserError(f"--threshold must be within [0, 1], got {threshold}")
    # Imported here: pycocotools is only needed by this command, not by `eval classification`.
    from tasks.common.coco import load_coco_gt, load_detections
    from tasks.common.detection_metrics import coco_metrics, lesion_metrics

    gt, gt_notes = load_coco_gt(gt_path, skip_invalid=skip_invalid)
    dets, det_notes = load_detections(pred_path, gt, skip_invalid=skip_invalid)
    return {
        "coco": coco_metrics(gt, dets),
        "lesion": lesion_metrics(gt, dets, iou=iou, threshold=threshold),
        "skipped": gt_notes + det_notes,
    }


def _ap(value: float) -> str:
    return "n/a" if value < 0 else f"{value:.3f}"  # pycocotools' -1 = no ground truth there


def _coco_table(coco: dict[str, Any]) -> Table:
    table = Table(title="COCO box AP (pycocotools)")
    table.add_column("Metric")
    table.add_column("All", justify="right")
    for name in coco["per_class"]:
        table.add_column(name, justify="right")
    for key in ("mAP", "AP50", "AP75", "APs", "APm", "APl"):
        table.add_row(key, _ap(coco[key]), *(_ap(c[key]) for c in coco["per_class"].values()))
    return table


def _confusion_table(lesion: dict[str, Any]) -> Table:
    title = (
        f"Lesion confusion matrix (IoU >= {lesion['iou']:g}, score >= {lesion['threshold']:.2f})"
    )
    table = Table(title=title, min_width=len(title) + 2)  # keep the title on one line
    table.add_column("Label \\ Preds")
    for name in lesion["labels"]:
        table.add_column(name, justify="right")
    for name, row in zip(lesion["labels"], lesion["confusion"], strict=True):
        table.add_row(name, *(str(v) for v in row))
    return table


def _lesion_row(name: str, m: dict[str, Any]) -> list[str]:
    counts = [str(m[k]) for k in ("n", "over", "missed")]
    return [name, *counts, *(f"{m[k]:.4f}" for k in ("precision", "recall", "f1"))]


def _lesion_table(lesion: dict[str, Any]) -> Table:
    table = Table(title="Lesion-level metrics per diagnosis")
    table.add_column("Diagnosis")
    for head in ("n", "over-detected", "missed", "precision", "recall", "F1"):
        table.add_column(head, justify="right")
    for name, m in lesion["per_class"].items():
        table.add_row(*_lesion_row(name, m))
    table.add_section()
    table.add_row(*_lesion_row("macro", lesion["macro"]))
    table.add_row(*_lesion_row("micro", lesion["micro"]))
    return table


def render_detection(result: dict[str, Any], console: Console) -> None:
    """Print the result of :func:`eval_detection`: skip notes, COCO AP, the lesion confusion
    matrix with its None row/column, and per-class over-detections, misses, precision, recall
    and F1 with macro and micro rows (seed 000, table 2)."""
    for note in result["skipped"]:
        console.print(note, style="yellow", markup=False, highlight=False)
    console.print(_coco_table(result["coco"]))
    console.print(_confusion_table(result["lesion"]))
    console.print(_lesion_table(result["lesion"]))

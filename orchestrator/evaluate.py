"""`medsweep eval classification`: metrics of a prediction CSV, with patient-level aggregation.

The numbers come from :mod:`tasks.common.metrics`, the same code that training and reports use.
Undefined metrics (AUC with one class, sensitivity without positives, ...) are ``None`` in the
result instead of ``NaN`` so that ``--json`` prints valid JSON (``null``).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from orchestrator.errors import DataError, UserError
from tasks.common.metrics import binary_metrics, patient_metrics

__all__ = ["eval_classification", "render_classification"]

LABEL, SCORE = "label", "score"


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and ``(line, fields)`` per data row; header is line 1 as in an editor.

    The csv module (not pandas) keeps line numbers exact with blank lines and quoted newlines.
    """
    if not path.is_file():
        raise DataError("predictions file does not exist", source=path)
    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    end = 0
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            for fields in reader:
                start, end = end + 1, reader.line_num
                if not any(f.strip() for f in fields):
                    continue
                if header is None:
                    header = [f.strip() for f in fields]
                else:
                    rows.append((start, [f.strip() for f in fields]))
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason})", source=path) from exc
    except csv.Error as exc:
        raise DataError(f"not valid CSV: {exc}", source=path, where=f"line {end + 1}") from exc
    except OSError as exc:
        raise DataError(f"cannot read predictions file: {exc}", source=path) from exc
    if header is None or not rows:
        raise DataError(
            "no data rows; expected a header with 'label' and 'score' and one row per case",
            source=path,
        )
    for line, fields in rows:
        if len(fields) != len(header):
            raise DataError(
                f"expected {len(header)} fields (as in the header), found {len(fields)}",
                source=path,
                where=f"line {line}",
            )
    return header, rows


def _parse_label(text: str, path: Path, line: int) -> int:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if value not in (0.0, 1.0):  # "1.0" is fine: pandas writes float columns that way
        raise DataError(
            f"label {text!r} is not 0 or 1", source=path, where=f"line {line}, column {LABEL!r}"
        )
    return int(value)


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
    header, rows = _read_csv(path)
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
    labels = [_parse_label(f[li], path, line) for line, f in rows]
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

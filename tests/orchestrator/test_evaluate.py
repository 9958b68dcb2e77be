"""orchestrator.evaluate: `eval classification` numbers, JSON-safety, errors and rendering."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from sklearn.metrics import roc_auc_score

from orchestrator.errors import DataError, UserError
from orchestrator.evaluate import eval_classification, render_classification
from tasks.common.metrics import binary_metrics

KEYS = {"auc", "accuracy", "sensitivity", "specificity", "threshold", "n", "tp", "fp", "tn", "fn"}


@pytest.fixture
def pred_csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    patient_label = rng.integers(0, 2, 50)
    y = np.repeat(patient_label, 2)
    s = np.clip(0.35 * y + rng.normal(0.35, 0.2, 100), 0, 1)
    path = tmp_path / "pred.csv"
    pd.DataFrame(
        {"case": range(100), "label": y, "score": s, "pid": np.repeat(np.arange(50), 2)}
    ).to_csv(path, index=False)
    return path


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_image_and_patient_metrics(pred_csv: Path) -> None:
    df = pd.read_csv(pred_csv)
    result = eval_classification(pred_csv, "pid", threshold=0.4)
    assert set(result) >= KEYS and set(result["patient"]) == KEYS
    assert result == {**binary_metrics(df["label"], df["score"], 0.4), "patient": result["patient"]}
    assert result["auc"] == pytest.approx(roc_auc_score(df["label"], df["score"]))
    per_patient = df.groupby("pid").mean()
    assert result["patient"]["n"] == 50
    assert result["patient"]["auc"] == pytest.approx(
        roc_auc_score(per_patient["label"], per_patient["score"])
    )
    assert result["patient"]["threshold"] == 0.4


def test_default_threshold_and_no_group(pred_csv: Path) -> None:
    result = eval_classification(pred_csv, None)
    assert result["threshold"] == 0.5 and "patient" not in result and result["n"] == 100


def test_undefined_metrics_are_null_in_json(tmp_path: Path) -> None:
    path = _write(tmp_path, "label,score\n0,0.2\n0,0.7\n")
    result = eval_classification(path, None)
    assert result["auc"] is None and result["sensitivity"] is None
    assert result["specificity"] == 0.5
    json.dumps(result, allow_nan=False)  # valid JSON, no NaN tokens


MIXED = "label,score,g\n0,0.1,a\n1,0.3,b\n1,0.2,a\n"
BAD_INPUTS = [
    # (file text, group column, message regex, expected `where`)
    ("y,prob\n0,0.1\n", None, r"missing column\(s\) \['label', 'score'\]; columns found: "
     r"\['y', 'prob'\]", "header"),
    ("label,score\n0,0.1\n1,high\n", None, "score 'high' is not a number",
     "line 3, column 'score'"),
    ("label,score\n0,0.1\n1,1.5\n", None, r"not a probability within \[0, 1\]",
     "line 3, column 'score'"),
    ("label,score\n0,nan\n", None, "not a probability", "line 2, column 'score'"),
    ("label,score\n0,0.1\n\n2,0.3\n", None, "label '2' is outside", "line 4, column 'label'"),
    ("label,score\n0,0.1\n", "patient", "unknown group column 'patient'; columns found", "header"),
    (MIXED, "g", "group 'a' has mixed labels: 0 on line 2, 1 on line 4", "line 4, column 'label'"),
    ("label,score,g\n0,0.1,\n", "g", "empty group id", "line 2, column 'g'"),
    ("label,score\n", None, "no data rows", None),
    ("label,score\n0,0.1,9\n", None, "expected 2 fields", "line 2"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "group", "match", "where"), BAD_INPUTS)
def test_bad_input_names_file_and_line(
    tmp_path: Path, text: str, group: str | None, match: str, where: str | None
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(DataError, match=match) as info:
        eval_classification(path, group)
    assert info.value.source == str(path)
    assert info.value.where == where


def test_missing_file_and_bad_threshold(tmp_path: Path, pred_csv: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        eval_classification(tmp_path / "nope.csv", None)
    with pytest.raises(UserError, match="threshold"):
        eval_classification(pred_csv, None, threshold=1.5)


def test_render_shows_both_levels(pred_csv: Path, tmp_path: Path) -> None:
    result = eval_classification(pred_csv, "pid")
    console = Console(record=True, width=100)
    render_classification(result, console)
    text = console.export_text()
    assert "Patient" in text and "threshold 0.5" in text
    assert f"{result['auc']:.4f}" in text and f"{result['patient']['auc']:.4f}" in text
    single = eval_classification(_write(tmp_path, "label,score\n1,0.9\n"), None)
    console = Console(record=True, width=100)
    render_classification(single, console)
    out = console.export_text()
    assert "n/a" in out and "Patient" not in out

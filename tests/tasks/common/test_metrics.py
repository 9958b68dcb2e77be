"""tasks.common.metrics agrees with scikit-learn and handles the degenerate cases explicitly."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, recall_score, roc_auc_score

from tasks.common.metrics import binary_metrics, group_mean_scores, patient_metrics

KEYS = {"auc", "accuracy", "sensitivity", "specificity", "threshold", "n", "tp", "fp", "tn", "fn"}


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("threshold", [0.1, 0.5, 0.73])
def test_matches_sklearn_on_random_data(seed: int, threshold: float) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 300))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]  # both classes present
    # Rounded scores create ties, which AUC implementations handle differently if done wrong.
    s = np.round(np.clip(0.3 * y + rng.normal(0.35, 0.25, n), 0, 1), 2)
    m = binary_metrics(y, s, threshold)
    pred = (s >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    assert set(m) == KEYS
    assert m["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    assert m["sensitivity"] == pytest.approx(recall_score(y, pred, pos_label=1), abs=1e-12)
    assert m["specificity"] == pytest.approx(recall_score(y, pred, pos_label=0), abs=1e-12)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (tp, fp, tn, fn)
    assert m["n"] == n and m["threshold"] == threshold
    assert all(type(m[k]) is int for k in ("tp", "fp", "tn", "fn", "n"))
    assert all(type(m[k]) is float for k in ("auc", "accuracy", "sensitivity", "specificity"))


def test_score_equal_to_threshold_is_positive() -> None:
    m = binary_metrics([0, 1], [0.5, 0.5], threshold=0.5)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (1, 1, 0, 0)
    assert m["auc"] == 0.5


def test_accepts_lists_bools_and_series() -> None:
    a = binary_metrics([True, False, True], [0.9, 0.2, 0.4])
    b = binary_metrics(pd.Series([1, 0, 1]), pd.Series([0.9, 0.2, 0.4]))
    assert a == b
    assert a["auc"] == 1.0 and a["sensitivity"] == 0.5 and a["specificity"] == 1.0


def test_single_class_gives_nan_not_an_error() -> None:
    only_neg = binary_metrics([0, 0, 0], [0.1, 0.7, 0.2])
    assert math.isnan(only_neg["auc"]) and math.isnan(only_neg["sensitivity"])
    assert only_neg["specificity"] == pytest.approx(2 / 3)
    only_pos = binary_metrics([1, 1], [0.1, 0.7])
    assert math.isnan(only_pos["auc"]) and math.isnan(only_pos["specificity"])
    assert only_pos["sensitivity"] == 0.5 and only_pos["accuracy"] == 0.5


@pytest.mark.parametrize(
    ("labels", "scores", "match"),
    [
        ([0, 1, 1], [0.1, 0.2], "differ in length"),
        ([0, 2], [0.1, 0.2], "0 or 1; index 1"),
        (["a", "b"], [0.1, 0.2], "numeric"),
        ([0, 1], [0.1, float("nan")], "finite; index 1"),
        ([], [], "no cases"),
    ],
)
def test_bad_input_raises(labels: list, scores: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        binary_metrics(labels, scores)


def test_group_mean_scores_averages_per_group_in_sorted_order() -> None:
    y, s, g = group_mean_scores(
        [1, 0, 1, 0, 0], [0.8, 0.2, 0.6, 0.4, 0.3], ["p2", "p1", "p2", "p3", "p1"]
    )
    assert list(g) == ["p1", "p2", "p3"]
    assert list(y) == [0, 1, 0]
    np.testing.assert_allclose(s, [0.25, 0.7, 0.4])


def test_group_with_mixed_labels_is_named() -> None:
    with pytest.raises(ValueError, match=r"group 'b' has mixed labels \(1 of 2"):
        group_mean_scores([0, 0, 1], [0.1, 0.2, 0.3], ["a", "b", "b"])


def test_group_length_mismatch() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        group_mean_scores([0, 1], [0.1, 0.2], ["a"])


def test_patient_metrics_equal_metrics_of_groupby_mean() -> None:
    rng = np.random.default_rng(7)
    patients = np.repeat(np.arange(60), 2)
    y = np.repeat(rng.integers(0, 2, 60), 2)
    s = np.clip(0.4 * y + rng.normal(0.3, 0.2, 120), 0, 1)
    frame = pd.DataFrame({"g": patients, "y": y, "s": s}).groupby("g").mean()
    m = patient_metrics(y, s, patients, threshold=0.4)
    assert m["n"] == 60
    assert m["auc"] == pytest.approx(roc_auc_score(frame["y"], frame["s"]), abs=1e-12)
    assert m == binary_metrics(frame["y"].astype(int), frame["s"], 0.4)

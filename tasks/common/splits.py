"""Patient-safe data splits: the one implementation every task and the CV engine use.

A split is an integer `fold` per case of a task's labelled case table (`Task.cases()`):

* ``-1`` (`TEST`): the held-out test split, never trained on or used for model selection;
* ``0 .. k-1``: the validation fold of that fold run (the other folds train);
* ``-2`` (`TRAIN_ONLY`): always in training (a hold-out split with one "fold": fold 0 validates).

Cases are stratified by ``label`` and grouped by a patient column when the table has one, so
both eyes (or all slices) of a patient land on the same side of every boundary. `check` enforces
that before any training, also for a split the user supplied.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from orchestrator.errors import DataError

TEST, TRAIN_ONLY = -1, -2


@dataclass(frozen=True)
class FoldRows:
    """Row positions (into the case table) of one fold run: what it trains and validates on."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def group_ids(cases: pd.DataFrame, group_by: str | None) -> np.ndarray:
    """The group of every case: its `group_by` value, or the case itself when there is none."""
    if group_by and group_by in cases.columns and cases[group_by].notna().all():
        return cases[group_by].astype(str).to_numpy()
    width = len(str(len(cases)))  # zero-padded so sorted ids keep the case order
    return np.array([f"#case{i:0{width}d}" for i in range(len(cases))])


def _group_labels(labels: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique groups and each group's most common label (stratifies group-level splits)."""
    frame = pd.DataFrame({"g": groups, "y": labels})
    top = frame.groupby("g", sort=True)["y"].agg(lambda s: s.value_counts().index[0])
    return top.index.to_numpy(), top.to_numpy()


def _stratify_or_none(labels: np.ndarray, n_splits: int) -> np.ndarray | None:
    """Labels to stratify by, or None when a class is too small to be spread."""
    _, counts = np.unique(labels, return_counts=True)
    return labels if counts.min() >= n_splits else None


def holdout(
    labels: Sequence[int] | np.ndarray,
    groups: np.ndarray,
    fraction: float,
    seed: int,
    stratify: bool = True,
) -> np.ndarray:
    """Boolean mask of the held-out cases: about `fraction` of the groups, stratified by label."""
    from sklearn.model_selection import train_test_split

    y = np.asarray(labels)
    ids, group_y = _group_labels(y, groups)
    if len(ids) < 2:
        raise DataError(f"a hold-out split needs at least 2 patients, found {len(ids)}")
    strat = _stratify_or_none(group_y, 2) if stratify else None
    n_held = min(len(ids) - 1, max(1, round(fraction * len(ids))))
    _, held = train_test_split(ids, test_size=n_held, stratify=strat, random_state=seed)
    return np.isin(groups, held)


def kfold(
    labels: np.ndarray, groups: np.ndarray, k: int, seed: int, stratify: bool = True
) -> np.ndarray:
    """Fold number (0..k-1) per case of a (stratified) grouped k-fold split."""
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    splitter = (
        StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        if stratify
        else GroupKFold(n_splits=k, shuffle=True, random_state=seed)
    )
    fold = np.full(len(labels), -9, dtype=np.int64)
    for i, (_, val) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        fold[val] = i
    return fold


def assign(
    cases: pd.DataFrame,
    *,
    folds: int,
    test_fraction: float,
    val_fraction: float,
    seed: int,
    group_by: str | None = "patient_id",
    stratify: bool = True,
) -> np.ndarray:
    """The fold of every case (see the module docstring), made once per sweep."""
    labels = cases["label"].to_numpy()
    groups = group_ids(cases, group_by)
    _check_enough_groups(labels, groups, folds, test_fraction)
    fold = np.full(len(cases), TRAIN_ONLY, dtype=np.int64)
    if test_fraction > 0:
        fold[holdout(labels, groups, test_fraction, seed, stratify)] = TEST
    rest = np.flatnonzero(fold != TEST)
    if folds == 1:
        val = holdout(labels[rest], groups[rest], val_fraction, seed + 1, stratify)
        fold[rest[val]] = 0
    else:
        fold[rest] = kfold(labels[rest], groups[rest], folds, seed, stratify)
    return fold


def _check_enough_groups(
    labels: np.ndarray, groups: np.ndarray, folds: int, test_fraction: float
) -> None:
    _, group_y = _group_labels(labels, groups)
    need = folds + (1 if test_fraction > 0 else 0)
    for cls in np.unique(group_y):
        have = int((group_y == cls).sum())
        if have < need:
            raise DataError(
                f"label {cls} has {have} patient(s) (or cases, without patient ids), fewer than "
                f"the {folds} fold(s){' plus a test split' if test_fraction > 0 else ''} need; "
                "lower cv.folds or add data",
                where="field cv.folds",
            )


def from_column(cases: pd.DataFrame, column: str, folds: int) -> np.ndarray:
    """A user-supplied split: `column` holds a fold number (0..k-1), `test` or `train`."""
    if column not in cases.columns:
        raise DataError(
            f"no column {column!r} in the data; columns: {sorted(map(str, cases.columns))}",
            where="field cv.split_column",
        )
    out = np.empty(len(cases), dtype=np.int64)
    for i, raw in enumerate(cases[column].astype(str).str.strip().str.lower()):
        if raw == "test":
            out[i] = TEST
        elif raw == "train":
            out[i] = TRAIN_ONLY
        elif raw.isdigit() and int(raw) < folds:
            out[i] = int(raw)
        else:
            where = _row_where(cases, i, column)
            raise DataError(f"fold {raw!r} is not test, train or 0..{folds - 1}", where=where)
    return out


def _row_where(cases: pd.DataFrame, i: int, column: str) -> str:
    line = cases["line"].iloc[i] if "line" in cases.columns else None
    return f"line {int(line)}, column {column!r}" if line is not None else f"row {i}"


def check(cases: pd.DataFrame, fold: np.ndarray, folds: int, group_by: str | None) -> None:
    """Refuse a split that leaks a patient across a boundary or leaves a fold with one class."""
    groups = group_ids(cases, group_by)
    frame = pd.DataFrame({"g": groups, "f": fold})
    spread = frame.groupby("g")["f"].nunique()
    leaked = spread[spread > 1]
    if len(leaked):
        name = str(leaked.index[0])
        parts = sorted(_part_name(int(f)) for f in frame.loc[frame["g"] == name, "f"].unique())
        raise DataError(
            f"patient {name!r} appears in {' and '.join(parts)}"
            + (f" ({len(leaked)} patients leak in all)" if len(leaked) > 1 else "")
            + "; a patient must stay on one side of every split",
            where=f"field cv ({group_by or 'case'} grouping)",
        )
    labels = cases["label"].to_numpy()
    for i in range(folds):
        _two_classes(labels[fold == i], f"validation fold {i}")
        _two_classes(labels[(fold != i) & (fold != TEST)], f"training part of fold run {i}")


def _part_name(fold: int) -> str:
    return {TEST: "the test split", TRAIN_ONLY: "training"}.get(fold, f"fold {fold}")


def _two_classes(labels: np.ndarray, what: str) -> None:
    if len(np.unique(labels)) < 2:
        raise DataError(
            f"the {what} has a single class ({len(labels)} cases); every fold needs both "
            "labels — lower cv.folds or change cv.seed",
            where="field cv.folds",
        )


def rows(fold: np.ndarray, i: int) -> FoldRows:
    """Row positions of fold run `i`: validation fold i; training = the rest but the test split."""
    test = np.flatnonzero(fold == TEST)
    val = np.flatnonzero(fold == i)
    train = np.flatnonzero((fold != i) & (fold != TEST))
    return FoldRows(train=train, val=val, test=test)


def digest(cases: pd.Series, fold: np.ndarray) -> str:
    """A short, stable hash of a split (case ids and their folds)."""
    text = "\n".join(f"{c}\t{f}" for c, f in zip(cases.astype(str), fold, strict=True))
    return hashlib.sha256(text.encode()).hexdigest()[:16]

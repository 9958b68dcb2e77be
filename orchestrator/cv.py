"""The sweep's split: made once per sweep from the task's case table, checked, stored, reused.

`make_split` assigns every case to the test split or a fold (`tasks.common.splits`, the one
implementation), refuses leaks (a patient on two sides) and degenerate folds, reads the
pseudo-label pool and refuses one that overlaps the labelled data. The assignment is stored as
``split.csv`` in the sweep folder with its hash in sweep.json; a resumed sweep recomputes it and
must get the same hash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from orchestrator.config import CrossValidation, PseudoLabels
from orchestrator.errors import ConfigError, DataError, UserError
from tasks.common import splits

SPLIT_FILE = "split.csv"


@dataclass
class Split:
    """The fold of every case, and the frames a fold run trains, validates and predicts on."""

    cases: pd.DataFrame
    fold: np.ndarray
    folds: int
    digest: str
    pool: pd.DataFrame | None = None  # a pseudo-label pool other than the test split
    pool_is_test: bool = False

    def has_test(self) -> bool:
        return bool((self.fold == splits.TEST).any())

    def frames(self, i: int, pseudo: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
        rows = splits.rows(self.fold, i)
        train = self.cases.iloc[rows.train]
        if pseudo is not None and len(pseudo):
            train = pd.concat([train, pseudo], ignore_index=True)
        out = {
            "train": train.reset_index(drop=True),
            "val": self.cases.iloc[rows.val].reset_index(drop=True),
        }
        if len(rows.test):
            out["test"] = self.cases.iloc[rows.test].reset_index(drop=True)
        if self.pool is not None:
            out["pool"] = self.pool.reset_index(drop=True)
        return out

    def pool_frame(self) -> pd.DataFrame:
        """The cases pseudo-labels are drawn from."""
        if self.pool is not None:
            return self.pool
        return self.cases[self.fold == splits.TEST].reset_index(drop=True)

    def predict_splits(self, pseudo_rounds: int) -> tuple[str, ...]:
        """What each fold's best weights predict after training."""
        out: tuple[str, ...] = ("test",) if self.has_test() else ()
        if pseudo_rounds and self.pool is not None:
            out += ("pool",)
        return out


def make_split(task: Any, cv: CrossValidation, pseudo: PseudoLabels | None, source: str) -> Split:
    """The checked assignment of the task's cases (DataError / ConfigError: exit 2)."""
    cases = task.cases()
    if cases is None:
        raise ConfigError(
            f"task {task.name!r} has no labelled case table to cross-validate",
            source=source,
            where="field cv",
        )
    if "label" not in cases.columns:
        raise ConfigError("cross-validation needs labelled cases", source=source, where="field cv")
    try:
        fold = (
            splits.from_column(cases, cv.split_column, cv.folds)
            if cv.split_column
            else splits.assign(
                cases,
                folds=cv.folds,
                test_fraction=cv.test_fraction,
                val_fraction=cv.val_fraction,
                seed=cv.seed,
                group_by=cv.group_by,
                stratify=cv.stratify,
            )
        )
        splits.check(cases, fold, cv.folds, cv.group_by)
    except DataError as err:
        raise DataError(err.message, source=source, where=err.where) from None
    root = task.data_root()
    digest = splits.digest(pd.Series(_relative(cases["case"], root)), fold)
    split = Split(cases=cases.reset_index(drop=True), fold=fold, folds=cv.folds, digest=digest)
    if pseudo is not None:  # also with 0 rounds: a searched or grid variant may add rounds
        _attach_pool(split, task, pseudo, source)
    return split


def _attach_pool(split: Split, task: Any, pseudo: PseudoLabels, source: str) -> None:
    if pseudo.pool == "test":
        if not split.has_test() and pseudo.rounds > 0:
            raise ConfigError(
                "pseudo.pool 'test' needs a test split", source=source, where="field pseudo.pool"
            )
        split.pool_is_test = split.has_test()
        return
    pool = task.read_cases(Path(pseudo.pool))
    overlap = sorted(set(pool["case"]) & set(split.cases["case"]))
    if overlap:
        raise DataError(
            f"{len(overlap)} pool case(s) are also labelled data (e.g. {overlap[0]}); the pool "
            "must hold only unlabelled cases, so no true label is ever replaced",
            source=source,
            where="field pseudo.pool",
        )
    split.pool = pool.drop(columns=["label"], errors="ignore")


def _relative(cases: pd.Series, root: Path | None) -> list[str]:
    if root is None:
        return cases.astype(str).tolist()
    return [os.path.relpath(c, root) if os.path.isabs(str(c)) else str(c) for c in cases]


def store_split(sweep_dir: Path, split: Split, root: Path | None) -> Path:
    """split.csv: case (relative to the data root), label and fold (-1 test, -2 train only)."""
    from tasks.common.io import atomic_write_csv

    frame = pd.DataFrame(
        {
            "case": _relative(split.cases["case"], root),
            "label": split.cases["label"],
            "fold": split.fold,
        }
    )
    return atomic_write_csv(frame, sweep_dir / SPLIT_FILE)


def check_resumed(stored_digest: str | None, split: Split) -> None:
    """A resumed sweep must see the split it started with."""
    if stored_digest and stored_digest != split.digest:
        raise UserError(
            f"the data split differs from the one stored with this sweep (hash {split.digest} "
            f"vs {stored_digest}): cv.seed, the cv settings or the data changed; resume with the "
            "original settings or start a new sweep with --name",
            where="field cv",
        )

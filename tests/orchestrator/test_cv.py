"""The sweep's split (tasks/common/splits.py via orchestrator/cv.py): patient-safe folds and test
split, refused leaks and degenerate folds, the pool check, and the resume check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from orchestrator.config import CrossValidation, PseudoLabels
from orchestrator.cv import check_resumed, make_split
from orchestrator.errors import DataError, UserError
from tasks.common import splits


def _cases(n_patients: int = 40, per_patient: int = 3, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = int(rng.random() < 0.4)
        for i in range(per_patient):
            rows.append({"case": f"/data/p{p}_{i}.png", "label": label, "patient_id": f"P{p}"})
    return pd.DataFrame(rows)


class _Task:
    name = "fake"

    def __init__(self, cases: pd.DataFrame, pool: pd.DataFrame | None = None) -> None:
        self._cases, self._pool = cases, pool

    def cases(self) -> pd.DataFrame:
        return self._cases

    def read_cases(self, manifest: Path) -> pd.DataFrame:
        assert self._pool is not None
        return self._pool

    def data_root(self) -> Path:
        return Path("/data")


def _cv(**kw: Any) -> CrossValidation:
    return CrossValidation.model_validate({"folds": 4, "test_fraction": 0.3, **kw})


def test_folds_and_test_split_keep_patients_together_and_are_stratified() -> None:
    cases = _cases()
    split = make_split(_Task(cases), _cv(), None, "exp.yaml")
    frame = cases.assign(fold=split.fold)
    assert (frame.groupby("patient_id")["fold"].nunique() == 1).all()
    test_share = (split.fold == splits.TEST).mean()
    assert 0.25 <= test_share <= 0.35
    for i in range(4):
        val = frame[frame["fold"] == i]
        assert 0.2 <= val["label"].mean() <= 0.6 and len(val) > 0
    rows = splits.rows(split.fold, 1)
    assert not set(rows.train) & set(rows.val) and not set(rows.test) & set(rows.train)
    # one assignment per seed: the same inputs give the same split and hash
    again = make_split(_Task(cases), _cv(), None, "exp.yaml")
    assert again.digest == split.digest and np.array_equal(again.fold, split.fold)
    other = make_split(_Task(cases), _cv(seed=1), None, "exp.yaml")
    assert other.digest != split.digest
    with pytest.raises(UserError, match="split differs"):
        check_resumed(split.digest, other)


def test_a_leaky_manual_split_is_refused() -> None:
    cases = _cases(n_patients=8, per_patient=2)
    cases["fold"] = ["test", "test", *[str(i % 2) for i in range(14)]]
    cases.loc[3, "fold"] = "test"  # patient P1 now has a slice in the test split and one in a fold
    with pytest.raises(DataError, match="patient 'P1' appears in"):
        make_split(_Task(cases), _cv(folds=2, split_column="fold"), None, "exp.yaml")


def test_single_class_folds_and_too_few_patients_are_refused() -> None:
    cases = _cases(n_patients=10)
    cases["label"] = [0] * 27 + [1] * 3  # one positive patient
    with pytest.raises(DataError, match=r"label 1 has 1 patient.*cv\.folds"):
        make_split(_Task(cases), _cv(), None, "exp.yaml")
    manual = _cases(n_patients=8, per_patient=1)
    manual["label"] = [0, 0, 0, 0, 1, 1, 1, 1]
    manual["fold"] = ["0", "0", "1", "1", "0", "0", "0", "0"]  # fold 1 validates only label 0
    with pytest.raises(DataError, match="fold run 0 has a single class"):
        make_split(_Task(manual), _cv(folds=2, split_column="fold"), None, "exp.yaml")


def test_a_pool_overlapping_the_labelled_data_is_refused() -> None:
    cases = _cases()
    pool = pd.DataFrame({"case": [cases["case"].iloc[5], "/data/new.png"]})
    pseudo = PseudoLabels(rounds=1, pool="pool.csv")
    with pytest.raises(DataError, match=r"pool case\(s\) are also labelled"):
        make_split(_Task(cases, pool), _cv(), pseudo, "exp.yaml")
    fine = make_split(_Task(cases, pool.iloc[1:]), _cv(), pseudo, "exp.yaml")
    assert fine.predict_splits(1) == ("test", "pool")
    frames = fine.frames(0, pseudo=pool.iloc[1:].assign(label=1))
    assert "/data/new.png" in set(frames["train"]["case"])  # pseudo-labels train...
    assert "/data/new.png" not in set(frames["val"]["case"])  # ...never validate


def test_hold_out_with_one_fold() -> None:
    cases = _cases()
    split = make_split(_Task(cases), _cv(folds=1, val_fraction=0.25), None, "exp.yaml")
    assert set(np.unique(split.fold)) == {splits.TEST, splits.TRAIN_ONLY, 0}
    frames = split.frames(0)
    assert len(frames["val"]) and len(frames["test"]) and len(frames["train"])


def _config(**sections: Any) -> Any:
    from orchestrator.config import from_dict

    raw = {
        "name": "p",
        "task": "fundus",
        "data": {"manifest": "x.csv"},
        "cv": {"folds": 2, "test_fraction": 0.3},
        **sections,
    }
    return from_dict(raw, source="p.yaml")


def test_pseudo_rounds_anywhere_in_the_sweep_are_seen_by_the_checks() -> None:
    from orchestrator.engine import _check_pseudo_labelling, _check_searchable, _max_rounds
    from orchestrator.registry import get_task

    assert _max_rounds(_config()) == 0
    assert _max_rounds(_config(pseudo={"rounds": 2})) == 2
    grid = {"sampler": "grid", "variants": {"a": {}, "b": {"pseudo.rounds": 1}}}
    assert _max_rounds(_config(pseudo={"rounds": 0}, sweep=grid)) == 1
    searched = {"space": {"pseudo.rounds": {"type": "choice", "values": [0, 3]}}}
    with_rounds = _config(pseudo={"rounds": 0}, sweep=searched)
    assert _max_rounds(with_rounds) == 3
    asha = {**searched, "scheduler": {"type": "asha"}}
    with pytest.raises(UserError, match="ASHA cannot prune"):
        _check_searchable(_config(pseudo={"rounds": 0}, sweep=asha))
    _check_pseudo_labelling(with_rounds, get_task("fundus"))  # probabilities: fine
    with pytest.raises(UserError, match="'glow' cannot pseudo-label"):
        _check_pseudo_labelling(with_rounds, get_task("glow"))
    _check_pseudo_labelling(_config(), get_task("glow"))  # no rounds: nothing to refuse

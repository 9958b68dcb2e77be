"""The Optuna side of sweeps without Ray trials: how trial outcomes reach the study, and grid
sweeps that run every variant exactly once, also when the sweep restarts on the same storage."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from orchestrator.config import from_dict
from orchestrator.engine import VARIANT, _searcher, grid_size, trial_config
from orchestrator.plan import SweepInfo
from orchestrator.search import make_scheduler


def _config(tmp_path: Path, sweep: dict[str, object]) -> object:
    return from_dict(
        {
            "name": "g",
            "task": "fundus",
            "data": {"manifest": "x.csv"},
            "train": {"epochs": 3},
            "store": {"root": str(tmp_path)},
            "sweep": sweep,
        }
    )


def _info(tmp_path: Path, config: object) -> SweepInfo:
    return SweepInfo(
        sweep="g",
        command="sweep",
        task="fundus",
        metric="val_auc",
        mode="max",
        objective="best",
        epochs=3,
        store_root=str(tmp_path),
        sweep_dir=str(tmp_path / "g"),
        cwd=".",
        space={},
        config=config.to_dict(),
        source="g.yaml",
        host="h",
        user="u",  # type: ignore[attr-defined]
        versions={},
        git_rev="",
        created=0.0,
    )


VARIANTS = {"000": {}, "001": {"train.label_smoothing": 0.1}, "010": {"train.batch_size": 64}}


def test_a_grid_runs_every_variant_once_across_a_restart(tmp_path: Path) -> None:
    config = _config(tmp_path, {"sampler": "grid", "variants": VARIANTS})
    assert grid_size(config) == 3  # type: ignore[arg-type]
    first = _searcher(config, _info(tmp_path, config))  # type: ignore[arg-type]
    first.set_search_properties(None, None, {})
    a, b = first.suggest("t1"), first.suggest("t2")
    first.on_trial_complete("t1", {"objective": 0.7, "finished": 1, "val_auc": 0.7, "step": 3})
    # the driver dies with t2 unfinished; the restarted sweep reruns t2 with its stored config
    second = _searcher(config, _info(tmp_path, config))  # type: ignore[arg-type]
    second.set_search_properties(None, None, {})
    c = second.suggest("t3")
    seen = [a[VARIANT], b[VARIANT], c[VARIANT]]
    assert sorted(seen) == sorted(VARIANTS)  # every variant exactly once
    resolved = trial_config(config.to_dict(), {}, {VARIANT: "001"})  # type: ignore[attr-defined]
    assert resolved["train"]["label_smoothing"] == 0.1 and resolved["train"]["batch_size"] == 32


def test_outcomes_reach_optuna_as_complete_pruned_or_failed(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        {
            "sampler": "random",
            "space": {"train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
        },
    )
    search = _searcher(config, _info(tmp_path, config))  # type: ignore[arg-type]
    search.set_search_properties(None, None, {})
    for tid in ("done", "asha", "boom"):
        search.suggest(tid)
    for step, auc in ((1, 0.6), (2, 0.8)):
        search.on_trial_result("done", {"val_auc": auc, "objective": auc, "step": step})
    search.on_trial_complete("done", {"val_auc": 0.7, "objective": 0.8, "step": 3, "finished": 1})
    search.on_trial_result("asha", {"val_auc": 0.55, "objective": 0.55, "step": 1})
    search.on_trial_complete("asha", {"val_auc": 0.55, "objective": 0.55, "step": 1})
    search.on_trial_complete("boom", None, error=True)
    study = optuna.load_study(study_name="g", storage=search._storage)
    by_id = {t.user_attrs["medsweep_run_id"]: t for t in study.trials if t.user_attrs}
    done = by_id["done"]
    assert done.state == optuna.trial.TrialState.COMPLETE and done.value == pytest.approx(0.8)
    assert done.intermediate_values == {1: 0.6, 2: 0.8, 3: 0.7}  # raw epoch metric per step
    assert by_id["asha"].state == optuna.trial.TrialState.PRUNED
    states = {t.state for t in study.trials}
    assert optuna.trial.TrialState.FAIL in states


def test_asha_uses_the_reported_epoch() -> None:
    scheduler = make_scheduler("asha", grace_period=1, reduction_factor=2, max_epochs=8)
    assert scheduler._time_attr == "epoch"
    assert make_scheduler("none", 1, 2, 8) is None

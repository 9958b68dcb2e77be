"""Engine corrections on the shared local Ray: ASHA-pruned trials reach Optuna as pruned, a sweep
metric the task never reports ends the sweep (exit 2), a killed worker is retried from its
checkpoint, and a run that cannot recover is stored with its cause."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest

import orchestrator
from orchestrator.config import load
from orchestrator.errors import UserError
from orchestrator.results import ResultsStore

pytestmark = pytest.mark.ray


def _config(tmp_path: Path, csv: Path, body: str = "") -> Path:
    text = f"""
name: eng
task: fundus
seed: 0
data: {{manifest: {csv}, image_size: 32, val_fraction: 0.25}}
model: {{backbone: resnet10t}}
train: {{epochs: 3, batch_size: 16, scheduler: none}}
store: {{root: {tmp_path / "store"}}}
{body}
"""
    path = tmp_path / "eng.yaml"
    path.write_text(text)
    return path


def _study(store: Path, sweep: str) -> optuna.Study:
    journal = optuna.storages.journal.JournalFileBackend(str(store / sweep / "optuna.journal"))
    return optuna.load_study(study_name=sweep, storage=optuna.storages.JournalStorage(journal))


def test_asha_prunes_on_the_reported_epoch_and_tells_optuna(
    tmp_path: Path, fundus_csv: Path, ray_session: None
) -> None:
    sweep = """
sweep:
  num_samples: 4
  max_concurrent: 1   # one at a time: what ASHA compares does not depend on arrival order
  sampler: random
  scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
  space:
    train.lr: {type: loguniform, low: 1.0e-5, high: 1.0e-2}
"""
    out = orchestrator.sweep(_config(tmp_path, fundus_csv, sweep), name="asha")
    assert out.errors == 0
    runs = ResultsStore(tmp_path / "store").runs("asha")
    assert len(runs) == 4
    study = _study(tmp_path / "store", "asha")
    states = {t.user_attrs["medsweep_run_id"]: t.state for t in study.trials}
    for t in study.trials:  # what optuna-dashboard shows next to each trial
        run_id = t.user_attrs["medsweep_run_id"]
        assert t.user_attrs["medsweep_sweep"] == "asha"
        artifacts = tmp_path / "store" / "asha" / "artifacts" / run_id
        assert Path(t.user_attrs["medsweep_artifacts"]) == artifacts
    for row in runs.itertuples():
        expected = {
            "completed": optuna.trial.TrialState.COMPLETE,
            "pruned": optuna.trial.TrialState.PRUNED,
        }[row.status]
        assert states[row.run_id] == expected
        if row.status == "pruned":
            assert row.epochs < 3
    assert "pruned" in set(runs["status"]), "ASHA with 4 trials and rf 2 stops at least one"
    # intermediate values are each epoch's raw metric, one per epoch
    for trial in study.trials:
        assert sorted(trial.intermediate_values) == list(
            range(1, len(trial.intermediate_values) + 1)
        )


def test_a_metric_the_task_never_reports_ends_the_sweep(
    tmp_path: Path, fundus_csv: Path, ray_session: None
) -> None:
    cfg = load(_config(tmp_path, fundus_csv), {"sweep.metric": "val_dice", "train.epochs": 2})
    with pytest.raises(UserError, match=r"never reports 'val_dice'.*val_auc"):
        orchestrator.sweep(cfg, name="typo")


def _kill_worker_once(run_dir: Path, after_rows: Path, done: threading.Event) -> None:
    """Kill the run's rank-0 worker as soon as its first epoch is stored (mid-run)."""
    deadline = time.monotonic() + 120
    while not done.is_set() and time.monotonic() < deadline:
        pid_file = run_dir / "worker-rank0.pid"
        if pid_file.is_file() and any(after_rows.glob("part-*.parquet")):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
            return
        done.wait(0.05)


def _run_with_kill(cfg_path: Path, tmp_path: Path, retries: int, name: str) -> object:
    cfg = load(cfg_path, {"failure.max_retries": retries})
    store = tmp_path / "store"
    done = threading.Event()
    arts, rows = store / name / "artifacts", store / name / "metrics"

    def watch() -> None:
        deadline = time.monotonic() + 120
        while not done.is_set() and time.monotonic() < deadline:
            runs = [p for p in arts.glob("*") if p.is_dir()] if arts.is_dir() else []
            if runs:
                _kill_worker_once(runs[0], rows, done)
                return
            done.wait(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        return orchestrator.run(cfg, name=name)
    finally:
        done.set()
        watcher.join()


def test_a_killed_worker_is_retried_from_its_checkpoint(
    tmp_path: Path, fundus_csv: Path, ray_session: None
) -> None:
    out = _run_with_kill(_config(tmp_path, fundus_csv), tmp_path, retries=1, name="retry")
    assert out.errors == 0  # type: ignore[attr-defined]
    store = ResultsStore(tmp_path / "store")
    runs = store.runs("retry")
    assert runs["status"].tolist() == ["completed"]
    auc = store.metrics("retry").query("split == 'val' and name == 'auc'")
    assert sorted(auc["epoch"]) == [1, 2, 3]  # every epoch once: none lost, none twice


def test_a_worker_dying_without_retries_is_stored_with_its_cause(
    tmp_path: Path, fundus_csv: Path, ray_session: None
) -> None:
    out = _run_with_kill(_config(tmp_path, fundus_csv), tmp_path, retries=0, name="dies")
    assert out.errors == 1  # type: ignore[attr-defined]
    row = ResultsStore(tmp_path / "store").runs("dies").iloc[0]
    assert row["status"] == "error"
    assert row["error"] and "Error" in row["error"]
    assert "worker rank 0" in row["traceback"]  # the run's last log lines come with it


def test_groups_left_by_dead_controllers_are_removed_and_others_kept(ray_session: None) -> None:
    import ray
    from ray.util.placement_group import placement_group

    from orchestrator.loop import live_placement_groups, release_left_over

    kept = placement_group([{"CPU": 0.01}])
    before = live_placement_groups()
    assert kept.id.hex() in before
    left = placement_group([{"CPU": 0.01}])  # as a Train controller killed with its trial leaves
    ray.get(left.ready(), timeout=60)
    assert release_left_over(before) == 1
    table = ray.util.placement_group_table()
    assert table[left.id.hex()]["state"] == "REMOVED"
    assert table[kept.id.hex()]["state"] != "REMOVED"
    ray.util.remove_placement_group(kept)


def test_a_grid_of_variants_runs_each_once_to_the_end(tmp_path: Path, ray_session: None) -> None:
    # two variants at once: the trial that completes the grid used to fail (Optuna's GridSampler
    # calls study.stop(), which only works inside study.optimize)
    config = tmp_path / "grid.yaml"
    config.write_text(
        f"""
name: grid
task: toy
train: {{epochs: 2}}
store: {{root: {tmp_path / "store"}}}
sweep:
  sampler: grid
  max_concurrent: 2
  variants:
    near: {{model.x: 1.0}}
    far: {{model.x: -3.0}}
"""
    )
    out = orchestrator.sweep(config, name="grid")
    assert (out.trials, out.errors) == (2, 0)
    runs = ResultsStore(tmp_path / "store").runs("grid")
    assert sorted(runs["variant"]) == ["far", "near"] and set(runs["status"]) == {"completed"}
    best = runs.sort_values("objective").iloc[0]  # val_loss: lower is better
    assert best["variant"] == "near"  # the toy surrogate is lowest at x = 1
    states = [t.state for t in _study(tmp_path / "store", "grid").trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2


def test_groups_of_dead_train_controllers_are_removed(ray_session: None) -> None:
    import ray
    from ray._private import state
    from ray.util.placement_group import placement_group

    from orchestrator.loop import release_orphaned_groups

    controller = ray.remote(num_cpus=0)(TrainController).remote()
    orphan = ray.get(controller.make.remote())
    kept = placement_group([{"CPU": 0.01}])  # the driver's own: its creator is alive
    actor_id = controller._actor_id.hex()
    ray.kill(controller)  # as when its trial ends: Ray keeps the group
    deadline = time.monotonic() + 60
    while state.actors()[actor_id]["State"] != "DEAD":  # the GCS records the death shortly
        assert time.monotonic() < deadline, "the killed actor never showed as dead"
        time.sleep(0.05)
    assert ray.util.placement_group_table()[orphan]["state"] != "REMOVED"
    assert release_orphaned_groups() >= 1
    table = ray.util.placement_group_table()
    assert table[orphan]["state"] == "REMOVED" and table[kept.id.hex()]["state"] != "REMOVED"
    ray.util.remove_placement_group(kept)


def _dead(actor: Any) -> None:
    import ray
    from ray._private import state

    actor_id = actor._actor_id.hex()
    ray.kill(actor)
    deadline = time.monotonic() + 60
    while state.actors()[actor_id]["State"] != "DEAD":  # the GCS records the death shortly
        assert time.monotonic() < deadline, "the killed actor never showed as dead"
        time.sleep(0.05)


def test_a_finished_trial_leaves_a_live_controllers_group_to_it(
    ray_session: None, tmp_path: Path
) -> None:
    """A trial returns before Train's teardown: removing the group under the live controller
    made it restart its workers on a new group that outlived the trial (a stalled sweep)."""
    import ray

    from orchestrator.loop import PG_FILE, release_placement_groups
    from orchestrator.tune_callbacks import ResultsCallback

    live = ray.remote(num_cpus=0)(TrainController).remote()
    gone = ray.remote(num_cpus=0)(TrainController).remote()
    groups = {"live": ray.get(live.make.remote()), "gone": ray.get(gone.make.remote())}
    for name, group in groups.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / PG_FILE).write_text(group)
    _dead(gone)
    assert release_placement_groups(tmp_path) == 1
    table = ray.util.placement_group_table()
    assert table[groups["gone"]]["state"] == "REMOVED"
    assert table[groups["live"]]["state"] != "REMOVED"
    assert not list(tmp_path.rglob(PG_FILE))
    # the live controller dies without its teardown: the driver's next check removes its group
    _dead(live)
    callback = ResultsCallback.__new__(ResultsCallback)
    callback.on_step_end(0, [])
    assert ray.util.placement_group_table()[groups["live"]]["state"] == "REMOVED"


class TrainController:
    """Named as Ray Train's controller actor (Ray records a module-level class by its name)."""

    def make(self) -> str:
        import ray
        from ray.util.placement_group import placement_group

        group = placement_group([{"CPU": 0.01}])
        ray.get(group.ready(), timeout=60)
        return str(group.id.hex())

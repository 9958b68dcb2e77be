"""The trial coordinator (orchestrator/trial.py) with stand-in fold runs: fold means reach Tune
and the store, a failed fold stops the trial with its cause, and a resumed trial trains only the
unfinished fold while replaying what the others stored."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from orchestrator.config import CrossValidation, load
from orchestrator.cv import make_split
from orchestrator.folds import FoldFailed, open_channel
from orchestrator.loop import prediction_cache, write_epoch_rows
from orchestrator.plan import EndEvent, EpochEvent, RunSpec, SweepInfo
from orchestrator.results import ResultsStore
from orchestrator.trial import Trial
from tasks.fundus.task import FundusTask

pytestmark = pytest.mark.ray
EPOCHS = 3


def _auc(fold: int, epoch: int) -> float:
    return 0.5 + 0.1 * epoch + 0.01 * fold


class FakeRuns:
    """Stand-in for `fit_run`: a run writes its rows and events like a Ray Train worker."""

    def __init__(self, fail_fold: int | None = None) -> None:
        self.fail_fold, self.calls = fail_fold, []
        self.lock = threading.Lock()

    def __call__(self, spec: RunSpec) -> None:
        import ray

        with self.lock:
            self.calls.append(spec.run_id)
        Path(spec.artifacts_dir).mkdir(parents=True, exist_ok=True)
        assert spec.frames is not None and spec.fold is not None
        for epoch in range(1, EPOCHS + 1):
            if spec.fold == self.fail_fold and epoch == 2:
                raise RuntimeError("CUDA error: an illegal memory access (simulated)")
            metrics = {"val_auc": _auc(spec.fold, epoch), "train_loss": 1.0 / epoch}
            write_epoch_rows(spec, epoch, metrics)
            val = spec.frames["val"].assign(score=np.linspace(0, 1, len(spec.frames["val"])))
            ray.get(
                spec.channel.put.remote(
                    EpochEvent(spec.run_id, spec.fold, spec.round, epoch, metrics, val)
                )
            )
        test = spec.frames["test"].assign(score=0.2 + 0.6 * spec.frames["test"]["label"])
        test.assign(index=range(len(test))).to_pickle(
            Path(spec.artifacts_dir) / prediction_cache("test")
        )
        end = EndEvent(spec.run_id, spec.fold, spec.round, "completed", EPOCHS, best_epoch=EPOCHS)
        ray.get(spec.channel.put.remote(end))


def _trial(
    tmp_path: Path, csv: Path, runs: FakeRuns, reports: list[dict[str, Any]], pseudo: str = ""
) -> Trial:
    text = f"name: t\ntask: fundus\ndata: {{manifest: {csv}}}\ntrain: {{epochs: {EPOCHS}}}\n"
    if pseudo:
        text += f"cv: {{folds: 3, test_fraction: 0.3}}\npseudo: {pseudo}\n"
    (tmp_path / "t.yaml").write_text(text + f"store: {{root: {tmp_path / 'store'}}}\n")
    config = load(tmp_path / "t.yaml")
    task = FundusTask(config.task)
    cv = CrossValidation(folds=3, test_fraction=0.3)
    split = make_split(task, cv, config.experiment.pseudo, "t.yaml")
    store = ResultsStore(tmp_path / "store")
    info = SweepInfo(
        sweep="t",
        command="sweep",
        task="fundus",
        metric="val_auc",
        mode="max",
        objective="best",
        epochs=EPOCHS,
        store_root=str(store.root.resolve()),
        sweep_dir=str(store.sweep_dir("t").resolve()),
        cwd=str(tmp_path),
        space={},
        config=config.to_dict(),
        source="t.yaml",
        host="h",
        user="u",
        versions={},
        git_rev="",
        created=time.time(),
        folds=3,
    )
    store.init_sweep("t", info.to_json())
    return Trial(
        lambda: task,
        config.to_dict(),
        info,
        "tr1",
        fit=runs,
        report=reports.append,
        split=split,
        channel=open_channel(),
        limit=3,
    )


def test_fold_means_failures_and_resuming_only_the_unfinished_fold(
    tmp_path: Path, fundus_csv: Path, ray_session: None
) -> None:
    first: list[dict[str, Any]] = []
    failing = FakeRuns(fail_fold=1)
    with pytest.raises(FoldFailed, match="fold 1 failed: RuntimeError: CUDA error"):
        _trial(tmp_path, fundus_csv, failing, first).run()
    store = ResultsStore(tmp_path / "store")
    runs = store.runs("t", folds=True).set_index("run_id")
    assert runs.loc["tr1-f1", "status"] == "error" and "CUDA error" in runs.loc["tr1-f1", "error"]
    assert "simulated" in runs.loc["tr1-f1", "traceback"]
    assert first and first[0]["epoch"] == 1  # epoch 1 finished on every fold before the failure

    again: list[dict[str, Any]] = []
    resumed = FakeRuns()
    _trial(tmp_path, fundus_csv, resumed, again).run()
    assert resumed.calls == ["tr1-f1"]  # folds 0 and 2 had completed: not trained again
    assert [r["epoch"] for r in again] == [1, 2, 3] and again[-1]["finished"] == 1
    for report in again:
        expected = np.mean([_auc(f, report["epoch"]) for f in range(3)])
        assert report["val_auc"] == pytest.approx(expected)
    assert again[-1]["test_auc"] == pytest.approx(1.0)  # the stand-in test scores separate
    assert "val_oof_auc" in first[0]  # pooled out-of-fold (not for epochs replayed from the store)
    m = store.metrics("t")
    trial_auc = m[(m["run_id"] == "tr1") & (m["split"] == "val") & (m["name"] == "auc")]
    assert sorted(trial_auc["epoch"]) == [1, 2, 3]  # each epoch once, replayed or not
    preds = pd.read_csv(store.artifacts_dir("t", "tr1") / "test_predictions.csv")
    fold0 = pd.read_pickle(store.artifacts_dir("t", "tr1") / "tr1-f0" / prediction_cache("test"))
    assert sorted(preds["index"]) == sorted(fold0["index"])  # one row per test case


def test_a_round_without_pseudo_labels_is_the_last(
    tmp_path: Path, fundus_csv: Path, ray_session: None
) -> None:
    # the stand-in ensemble scores 0.2 or 0.8: nothing reaches 0.9 or 0.1
    reports: list[dict[str, Any]] = []
    runs = FakeRuns()
    _trial(tmp_path, fundus_csv, runs, reports, pseudo="{rounds: 2, high: 0.9, low: 0.1}").run()
    assert sorted(runs.calls) == ["tr1-r0-f0", "tr1-r0-f1", "tr1-r0-f2"]  # round 1 would repeat 0
    assert [(r["round"], r["epoch"]) for r in reports] == [(0, 1), (0, 2), (0, 3)]
    assert reports[-1]["finished"] == 1  # the trial completed with round 0
    m = ResultsStore(tmp_path / "store").metrics("t")
    total = m[m["name"] == "pseudo_total"]
    assert total[["round", "value"]].values.tolist() == [[1, 0.0]]  # why it ended: stored
    arts = ResultsStore(tmp_path / "store").artifacts_dir("t", "tr1")
    assert (arts / "test_predictions.csv").exists() and (arts / "test_predictions_r0.csv").exists()

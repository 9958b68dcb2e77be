"""One Tune trial: its fold runs (each its own Ray Train run), their aggregation, the test-split
fold ensemble and the pseudo-label rounds.

A trial without a `cv` section is a single run whose rows are the trial's. A cross-validated
trial starts its k fold runs together (Ray queues those that do not fit; `cv.parallel` limits
them) and reports to Tune, for every epoch, the **mean of the fold metrics** once every fold has
finished that epoch, with the pooled out-of-fold value of each validation metric
(``val_oof_<name>``). After the folds, each fold's best weights have predicted the test split;
their mean probability (`Task.ensemble`) is scored as ``test_<name>`` and written to
``test_predictions.csv``. With pseudo-label rounds the fold ensemble then labels the pool, the
confident cases join every fold's training part (never a validation fold), and the folds train
again. Stopping a trial (ASHA, failure, Ctrl-C) ends its fold runs with it: they are owned by it.

The trial writes its rows before Tune hears them, and on a resumed sweep it first rebuilds what
its finished epochs were from the store (`_replay`), so nothing a killed driver missed is lost.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from orchestrator.cv import Split
from orchestrator.folds import (
    DONE_FILE,
    FoldFailed,
    FoldRunner,
    RoundState,
    error_cause,
    fold_run_id,
    mean_metrics,
    objective_of,
    read_log_tail,
    write_failure,
)
from orchestrator.loop import prediction_cache
from orchestrator.plan import EndEvent, EpochEvent, RunSpec, SweepInfo

TEST_PREDICTIONS = "test_predictions.csv"
Report = Callable[[dict[str, Any]], None]


class Trial:
    """Runs one trial's rounds and fold runs; see the module docstring."""

    def __init__(
        self,
        task: Callable[[], Any],
        config: dict[str, Any],
        info: SweepInfo,
        trial_id: str,
        *,
        fit: Callable[[RunSpec], None],
        report: Report,
        split: Split | None,
        channel: Any,
        limit: int = 1,
        secret: bytes | None = None,
    ) -> None:
        from orchestrator.results import ResultsStore

        self._make_task, self._task = task, None
        self.config, self.info, self.trial_id = config, info, trial_id
        self.fit, self.report, self.split, self.channel = fit, report, split, channel
        self.limit, self.secret = limit, secret
        self.dir = Path(info.sweep_dir) / "artifacts" / trial_id
        self.store = ResultsStore(info.store_root)
        self.epochs = int(config["train"]["epochs"])
        pseudo = config.get("pseudo") or {}
        self.rounds = int(pseudo.get("rounds", 0)) if split is not None else 0
        self.next_pseudo: pd.DataFrame | None = None  # the labels the next round trains with
        self.pseudo = pseudo
        self.round_values: dict[int, list[float]] = {}
        self.best_epoch = 0
        self.started: dict[str, float] = {}
        self.created = time.time()

    @property
    def task(self) -> Any:
        """The task object, built on first use (its imports overlap the runs' start-up)."""
        if self._task is None:
            self._task = self._make_task()
        return self._task

    # --- the trial ---------------------------------------------------------------------------
    def run(self) -> None:
        r = 0
        while r <= self.rounds:  # a round without pseudo-labels lowers self.rounds
            if self._round(r if self.rounds else None, self.next_pseudo) is None:
                return  # diverged or stopped: the trial ends here
            r += 1

    def _specs(self, round_: int | None, pseudo: pd.DataFrame | None) -> list[RunSpec]:
        base = RunSpec(
            config=self.config,
            source=self.info.source,
            sweep=self.info.sweep,
            store_root=self.info.store_root,
            trial_id=self.trial_id,
            run_id=self.trial_id,
            metric=self.info.metric,
            mode=self.info.mode,
            objective=self.info.objective,
            cwd=self.info.cwd,
            artifacts_dir=str(self.dir),
            channel=self.channel,
            secret=self.secret,
            timings={"trial_started": self.created},
        )
        if self.split is None:
            return [base]
        predict = self.split.predict_splits(self.rounds)
        specs = []
        for i in range(self.split.folds):
            run_id = fold_run_id(self.trial_id, i, round_)
            specs.append(
                replace(
                    base,
                    run_id=run_id,
                    fold=i,
                    round=round_,
                    predict=predict,
                    frames=self.split.frames(i, pseudo),
                    send_val=self.split.folds > 1,
                    artifacts_dir=str(self.dir / run_id),
                )
            )
        return specs

    def _round(self, round_: int | None, pseudo: pd.DataFrame | None) -> RoundState | None:
        specs = self._specs(round_, pseudo)
        state = RoundState(runs=[s.run_id for s in specs])
        done = self._replay(specs, state)
        todo = [s for s in specs if s.run_id not in done]
        runner = FoldRunner(self.fit, self.limit)
        for spec in todo:
            self._write_run_row(spec, "running")
        runner.start(todo)
        self._collect(runner, state, specs, round_)
        if len(state.ends) < len(state.runs):  # a run ended without reporting its end: failed
            runner.join()
        self._drain(state, specs, round_)
        self._raise_failures(runner, specs)
        if any(e.status != "completed" for e in state.ends.values()):
            self._end_early(state, round_)
            return None
        self._finish_round(state, specs, round_)
        return state

    # --- events ------------------------------------------------------------------------------
    def _collect(
        self, runner: FoldRunner, state: RoundState, specs: list[RunSpec], round_: int | None
    ) -> None:
        import ray

        # Every run's end is in once its worker finished (Train's own teardown is not waited for)
        stopping = False
        while runner.alive() and len(state.ends) < len(state.runs):
            event = ray.get(self.channel.get.remote(1.0))
            if event is not None:
                self._on_event(event, state, specs, round_)
            if runner.errors and not stopping:  # a failed fold fails the trial: stop the others
                ray.get(self.channel.request_stop.remote())
                stopping = True

    def _drain(self, state: RoundState, specs: list[RunSpec], round_: int | None) -> None:
        import ray

        while (event := ray.get(self.channel.get.remote(0.0))) is not None:
            self._on_event(event, state, specs, round_)

    def _on_event(
        self, event: Any, state: RoundState, specs: list[RunSpec], round_: int | None
    ) -> None:
        if event.run_id not in state.runs:  # a late event of an earlier round
            return
        if isinstance(event, EpochEvent):
            state.epochs.setdefault(event.run_id, {})[event.epoch] = event.metrics
            state.nodes[event.run_id] = event.nodes
            if event.val_predictions is not None:
                state.val.setdefault(event.run_id, {})[event.epoch] = event.val_predictions
        elif isinstance(event, EndEvent):
            state.ends[event.run_id] = event
            spec = next(s for s in specs if s.run_id == event.run_id)
            self._write_run_row(spec, event.status, event=event)
            if event.status == "completed":
                self._mark_done(spec, event)
            else:
                import ray

                ray.get(self.channel.request_stop.remote())  # the others stop at their next epoch
        for epoch in state.complete_epochs():
            if epoch < self.epochs:  # the last epoch waits for the test ensemble
                self._report_epoch(state, epoch, round_)

    def _raise_failures(self, runner: FoldRunner, specs: list[RunSpec]) -> None:
        if not runner.errors:
            return
        run_id, err = next(iter(runner.errors.items()))
        spec = next(s for s in specs if s.run_id == run_id)
        line, tb = error_cause(err)
        log = read_log_tail(Path(spec.artifacts_dir))
        self._write_run_row(spec, "error", error=line, traceback=tb + "\n--- log ---\n" + log)
        write_failure(self.dir, run_id, line, tb, log)
        what = f"fold {spec.fold}" if spec.fold is not None else "the run"
        raise FoldFailed(f"{what} failed: {line}")

    # --- aggregation -------------------------------------------------------------------------
    def _report_epoch(
        self,
        state: RoundState,
        epoch: int,
        round_: int | None,
        extra: dict[str, float] | None = None,
        done: bool = False,
    ) -> None:
        state.reported.add(epoch)
        per_run = [state.epochs[r][epoch] for r in state.runs]
        metrics = mean_metrics(per_run) if len(per_run) > 1 else dict(per_run[0])
        for key in ("epoch", "objective", "best_epoch"):
            metrics.pop(key, None)
        if self.split is not None:
            metrics.update(self._pooled(state, epoch))
        metrics.update(extra or {})
        if self.split is not None:
            self._write_trial_rows(epoch, round_, metrics)
        r = round_ or 0
        values = self.round_values.setdefault(r, [])
        values.append(metrics.get(self.info.metric, math.nan))
        objective = self._objective()
        if values[-1] == objective:
            self.best_epoch = epoch
        # every report carries the nodes: a trial that fails later is stored with them
        nodes = [n for run in state.runs for n in state.nodes.get(run, [])]
        self.report(
            {
                **metrics,
                "nodes": json.dumps(nodes),
                "epoch": epoch,
                "round": r,
                "step": r * self.epochs + epoch,
                "objective": objective,
                "best_epoch": self.best_epoch,
                "finished": int(done),
                "diverged": 0,
            }
        )

    def _objective(self) -> float:
        """The trial's objective over its rounds so far (each round: best or last epoch)."""
        per_round = [
            objective_of(v, self.info.mode, self.info.objective)
            for _, v in sorted(self.round_values.items())
        ]
        reduce = str(self.pseudo.get("objective", "best")) if self.rounds else "best"
        return objective_of(per_round, self.info.mode, reduce)

    def _pooled(self, state: RoundState, epoch: int) -> dict[str, float]:
        """Validation metrics of all folds' predictions pooled (out-of-fold)."""
        frames = [state.val.get(r, {}).get(epoch) for r in state.runs]
        if len(frames) < 2 or any(f is None for f in frames):
            return {}
        pooled = pd.concat(frames, ignore_index=True)
        return {f"val_oof_{k}": float(v) for k, v in self.task.score("val", pooled).items()}

    def _write_trial_rows(self, epoch: int, round_: int | None, metrics: dict[str, float]) -> None:
        from orchestrator.results import metrics_rows

        ids = {"parent_run_id": "", "fold": None, "round": round_}
        rows = metrics_rows(self.info.sweep, self.trial_id, epoch, metrics, ids=ids)
        if rows:
            self.store.write_metrics(self.info.sweep, rows)

    # --- end of a round ----------------------------------------------------------------------
    def _finish_round(self, state: RoundState, specs: list[RunSpec], round_: int | None) -> None:
        if round_ is not None and round_ < self.rounds:
            self.next_pseudo = self._pseudo_labels(round_ + 1)
            if self.next_pseudo.empty:
                # Nothing confident to add: the next round would train on the same data with
                # the same seeds and repeat this one. The stored pseudo_total of 0 says why the
                # trial ends with this round.
                self.rounds = round_
        extra: dict[str, float] = {}
        if self.split is not None and self.split.has_test():
            extra = self._test_ensemble(specs, round_)
        last = self.epochs
        if last in state.reported:
            return
        done = round_ is None or round_ >= self.rounds
        self._report_epoch(state, last, round_, extra, done=done)

    def _test_ensemble(self, specs: list[RunSpec], round_: int | None) -> dict[str, float]:
        """Mean probability of the fold models on the test split, scored and written."""
        ensemble = self._ensemble(specs, "test")
        scores = self.task.score("test", ensemble)
        privacy = self._privacy()
        if round_ is not None:  # every round's, and test_predictions.csv is the last round's
            self.task.write_predictions(
                privacy(ensemble), self.dir / f"test_predictions_r{round_}.csv"
            )
        if round_ is None or round_ == self.rounds:
            self.task.write_predictions(privacy(ensemble), self.dir / TEST_PREDICTIONS)
        return {f"test_{k}": float(v) for k, v in scores.items()}

    def _ensemble(self, specs: list[RunSpec], split: str) -> pd.DataFrame:
        tables = [pd.read_pickle(Path(s.artifacts_dir) / prediction_cache(split)) for s in specs]
        return self.task.ensemble(tables)

    def _privacy(self) -> Callable[[pd.DataFrame], pd.DataFrame]:
        from orchestrator.privacy import table_filter

        return table_filter(self.config.get("privacy") or {}, self.secret, self.task.data_root())

    def _pseudo_labels(self, next_round: int) -> pd.DataFrame:
        """Pool cases the previous round's fold ensemble is confident about, with hard labels."""
        assert self.split is not None
        specs = self._specs(next_round - 1 if self.rounds else None, None)
        split = "test" if self.split.pool_is_test else "pool"
        preds = self.task.pseudo_labels(
            self._ensemble(specs, split), float(self.pseudo["high"]), float(self.pseudo["low"])
        )
        pool = self.split.pool_frame().set_index("case")
        rows = pool.loc[preds["case"]].reset_index()
        rows["label"] = preds["label"].to_numpy()
        counts = {f"pseudo_label{c}": float((rows["label"] == c).sum()) for c in (0, 1)}
        counts["pseudo_total"] = float(len(rows))
        self._write_trial_rows(0, next_round, counts)
        privacy = self._privacy()
        keep = [c for c in ("case", "label", "patient_id") if c in rows.columns]
        self.task.write_predictions(
            privacy(rows[keep]), self.dir / f"pseudo_labels_r{next_round}.csv"
        )
        return rows

    def _end_early(self, state: RoundState, round_: int | None) -> None:
        """A diverged (or stopped) run ends the trial: Tune hears it once, with the cause."""
        order = {"diverged": 0, "stopped": 1}
        bad = min(
            (e for e in state.ends.values() if e.status != "completed"),
            key=lambda e: order.get(e.status, 2),
        )
        self.report(
            {
                "epoch": bad.epoch,
                "round": round_ or 0,
                "objective": self._objective(),
                "best_epoch": self.best_epoch,
                "finished": 0,
                "diverged": int(bad.status == "diverged"),
                "step": (round_ or 0) * self.epochs + bad.epoch,
            }
        )

    # --- rows and resume ---------------------------------------------------------------------
    def _mark_done(self, spec: RunSpec, event: EndEvent) -> None:
        """A completed run is not trained again on resume."""
        from tasks.common.io import atomic_write_json

        atomic_write_json(
            Path(spec.artifacts_dir) / DONE_FILE,
            {"epoch": event.epoch, "best_epoch": event.best_epoch, "nodes": event.nodes},
        )

    def _replay(self, specs: list[RunSpec], state: RoundState) -> set[str]:
        """Rebuild the runs' finished epochs from the store (a resumed trial); return the runs
        that had completed."""
        import json

        metrics = self.store.metrics(self.info.sweep)
        done: set[str] = set()
        for spec in specs:
            mine = metrics[metrics["run_id"] == spec.run_id]
            for epoch, rows in mine.groupby("epoch"):
                state.epochs.setdefault(spec.run_id, {})[int(epoch)] = {  # type: ignore[arg-type]
                    (f"{s}_{n}" if s else n): float(v)
                    for s, n, v in zip(rows["split"], rows["name"], rows["value"], strict=True)
                }
            marker = Path(spec.artifacts_dir) / DONE_FILE
            if not marker.is_file():
                continue
            data = json.loads(marker.read_text())
            state.ends[spec.run_id] = EndEvent(
                spec.run_id,
                spec.fold,
                spec.round,
                "completed",
                int(data["epoch"]),
                best_epoch=int(data.get("best_epoch", 0)),
                nodes=data.get("nodes", []),
            )
            done.add(spec.run_id)
        return done

    def _write_run_row(
        self,
        spec: RunSpec,
        status: str,
        *,
        event: EndEvent | None = None,
        error: str = "",
        traceback: str = "",
    ) -> None:
        """The runs row of a fold run (a single run's row is the trial's, written by the driver)."""
        if spec.fold is None:
            return
        import json

        from orchestrator.privacy import redact

        now = time.time()
        start = self.started.setdefault(spec.run_id, now)
        row: dict[str, Any] = {
            "run_id": spec.run_id,
            "parent_run_id": spec.trial_id,
            "fold": spec.fold,
            "round": spec.round,
            "command": self.info.command,
            "task": self.info.task,
            "status": status,
            "metric": self.info.metric,
            "mode": self.info.mode,
            "config": json.dumps(self.config, sort_keys=True),
            "seed": int(self.config.get("seed", 0)),
            "host": self.info.host,
            "job_id": self.info.job_id,
            "start_time": start,
            "end_time": math.nan if status == "running" else now,
            "duration_s": math.nan if status == "running" else now - start,
            "error": redact(error or (event.reason if event else "")),
            "traceback": redact(traceback),
        }
        if event is not None:
            row.update(
                epochs=event.epoch,
                best_epoch=event.best_epoch or None,
                objective=event.best.get("objective", math.nan),
                nodes=json.dumps(event.nodes),
                checkpoint=_relative_best(Path(spec.artifacts_dir), Path(self.info.store_root)),
            )
        self.store.write_runs(self.info.sweep, [row])


def drop_checkpoints(sweep_dir: Path, trial_id: str | None = None, keep: int = 0) -> int:
    """Delete the resume checkpoints of completed runs (their best weights stay with their
    artifacts); all completed runs of the sweep, or those of one trial. Returns how many runs.

    `keep` > 0 (checkpoint.keep_completed) keeps each run's newest `keep` checkpoints instead:
    a run's Train controller ends with its trial, before it applies `num_to_keep` to the last
    report, so the older ones are deleted here."""
    import shutil

    artifacts, train = sweep_dir / "artifacts", sweep_dir / "train"
    dropped = 0
    # One pattern for every trial: pathlib caches a selector per distinct glob pattern (Python
    # 3.11), so a pattern naming the trial would keep one per trial in the driver.
    for marker in (artifacts / trial_id if trial_id else artifacts).glob(f"**/{DONE_FILE}"):
        folder = train / marker.parent.name
        if not folder.exists():
            continue
        if keep:  # names carry a sortable timestamp: checkpoint_YYYY-MM-DD_HH-MM-SS.ffffff
            saved = sorted(p for p in folder.glob("checkpoint_*") if p.is_dir())
            for old in saved[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        else:
            shutil.rmtree(folder, ignore_errors=True)
        dropped += 1
    return dropped


def _relative_best(directory: Path, root: Path) -> str:
    from orchestrator.loop import BEST_WEIGHTS

    path = directory / BEST_WEIGHTS
    try:
        return str(path.resolve().relative_to(root.resolve())) if path.is_file() else ""
    except ValueError:
        return str(path)

"""Optuna through Ray Tune: the study a sweep optimises, and the scheduler that prunes trials.

`StudySearch` is Ray's `OptunaSearch` with three corrections for how medsweep trials report:

* the intermediate value of each epoch is the task metric itself at that epoch (``step`` counts
  epochs across pseudo-label rounds), not the running objective, so optuna-dashboard shows real
  learning curves;
* a trial that did not finish (stopped by ASHA, diverged, or stopped with its sweep) reaches
  Optuna as PRUNED: Optuna keeps its last intermediate value, and TPE learns from it instead of
  from a truncated "complete" value; a trial that raised is FAIL;
* every Optuna trial carries the medsweep run id, sweep and artifacts folder as user attributes.

`TuneGridSampler` is Optuna's `GridSampler` for studies Tune drives.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch


class StudySearch(OptunaSearch):
    def __init__(
        self, *args: Any, task_metric: str, sweep: str, sweep_dir: str, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.task_metric, self.sweep, self.sweep_dir = task_metric, sweep, sweep_dir
        self._steps: dict[str, int] = {}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None or trial_id in self._completed_trials:
            return
        if trial_id not in self._steps:
            self._steps[trial_id] = 0
            for key, attr in self._attrs(trial_id).items():
                ot_trial.set_user_attr(key, attr)
        value: Any = result.get(self.task_metric)
        step = int(result.get("step", 0))
        if isinstance(value, float | int) and math.isfinite(value) and step > self._steps[trial_id]:
            ot_trial.report(float(value), step)  # a replayed epoch is not reported twice
            self._steps[trial_id] = step

    def _attrs(self, trial_id: str) -> dict[str, str]:
        return {
            "medsweep_run_id": trial_id,
            "medsweep_sweep": self.sweep,
            "medsweep_artifacts": f"{self.sweep_dir}/artifacts/{trial_id}",
        }

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        import optuna

        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        if result:  # Tune hands the last result to on_trial_complete only
            self.on_trial_result(trial_id, result)
        value = (result or {}).get(self.metric)
        finished = bool((result or {}).get("finished")) and _finite(value)
        if finished:
            state, values = optuna.trial.TrialState.COMPLETE, float(value)  # type: ignore[arg-type]
        else:
            state = optuna.trial.TrialState.FAIL if error else optuna.trial.TrialState.PRUNED
            values = None
        study: Any = self._ot_study
        study.tell(ot_trial, values, state=state)
        self._completed_trials.add(trial_id)
        self._steps.pop(trial_id, None)


def _finite(value: Any) -> bool:
    return isinstance(value, float | int) and math.isfinite(value)


def make_scheduler(kind: str, grace_period: int, reduction_factor: float, max_epochs: int) -> Any:
    """ASHA on the reported epoch (not Tune's iteration counter, which restarts on resume)."""
    if kind == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="epoch",
        max_t=max_epochs,
        grace_period=min(grace_period, max_epochs),
        reduction_factor=reduction_factor,
    )


class TuneGridSampler(optuna.samplers.GridSampler):
    """`GridSampler` without its end-of-grid `study.stop()`: that call only works inside
    `study.optimize` and raises under Tune's ask-and-tell, failing the trial that completed the
    grid. Tune ends a grid sweep itself (`num_samples` is the grid's size)."""

    def after_trial(self, *args: Any, **kwargs: Any) -> None:
        return None

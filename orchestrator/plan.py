"""Typed records passed between the engine's parts: what a sweep is (stored as sweep.json), what
one Ray Train run gets, and what its workers send back to their trial."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import pandas as pd

Command = Literal["run", "sweep"]
Mode = Literal["max", "min"]
Reduce = Literal["best", "last"]


@dataclass(frozen=True)
class SweepInfo:
    """Everything fixed for a sweep: written to ``<store>/<sweep>/sweep.json``."""

    sweep: str
    command: Command
    task: str
    metric: str
    mode: Mode
    objective: Reduce
    epochs: int
    store_root: str
    sweep_dir: str
    cwd: str
    space: dict[str, Any]
    config: dict[str, Any]  # the resolved base config (credentials redacted)
    source: str
    host: str
    user: str
    versions: dict[str, str]
    git_rev: str
    created: float
    folds: int | None = None  # k of a cross-validated sweep
    rounds: int = 0  # pseudo-label rounds after round 0
    split_digest: str | None = None  # hash of the stored fold assignment
    transductive: bool = False  # pseudo-labels drawn from the test split itself
    job_id: str = ""
    warnings: list[str] = field(default_factory=list)  # from `Task.sweep_warnings`

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SweepInfo:
        """Read a sweep.json, also one written by an older version (missing fields get
        neutral values)."""
        fallback: dict[str, Any] = {
            "command": data.get("kind", "sweep"),
            "task": "",
            "metric": "",
            "mode": "max",
            "objective": "best",
            "epochs": 0,
            "store_root": "",
            "sweep_dir": "",
            "cwd": "",
            "space": {},
            "config": {},
            "source": "",
            "host": "",
            "user": "",
            "versions": {},
            "git_rev": "",
            "created": 0.0,
        }
        known = set(cls.__dataclass_fields__)
        given = {k: v for k, v in data.items() if k in known and v is not None}
        return cls(**{**{k: v for k, v in fallback.items() if k in known}, **given})


@dataclass(frozen=True)
class RunSpec:
    """One Ray Train run: a trial's single run, or one fold of one round of a CV trial."""

    config: dict[str, Any]  # the trial's resolved config
    source: str
    sweep: str
    store_root: str
    trial_id: str
    run_id: str  # == trial_id for a trial with a single run
    metric: str
    mode: Mode
    objective: Reduce
    cwd: str
    artifacts_dir: str
    fold: int | None = None
    round: int | None = None
    frames: dict[str, pd.DataFrame] | None = None  # chosen by the engine (cv, test, pool)
    predict: tuple[str, ...] = ()  # splits the best weights predict after training
    send_val: bool = False  # send each epoch's validation predictions (pooled out-of-fold)
    channel: Any = None  # the trial's `TrialChannel` actor (None outside a trial)
    secret: bytes | None = field(default=None, repr=False)  # pseudonymisation key
    timings: dict[str, float] = field(default_factory=dict)  # trial start, run launch (epoch s)

    @property
    def parent_run_id(self) -> str:
        return "" if self.run_id == self.trial_id else self.trial_id


@dataclass(frozen=True)
class EpochEvent:
    """Sent by a run's rank 0 to its trial after every epoch."""

    run_id: str
    fold: int | None
    round: int | None
    epoch: int
    metrics: dict[str, float]
    val_predictions: pd.DataFrame | None = None
    nodes: list[dict[str, str]] = field(default_factory=list)  # the run's workers (node, ip, host)


@dataclass(frozen=True)
class EndEvent:
    """Sent when a run ends: normally, diverged, or stopped on the trial's request."""

    run_id: str
    fold: int | None
    round: int | None
    status: Literal["completed", "diverged", "stopped"]
    epoch: int
    reason: str = ""
    best_epoch: int = 0
    best: dict[str, float] = field(default_factory=dict)
    nodes: list[dict[str, str]] = field(default_factory=list)

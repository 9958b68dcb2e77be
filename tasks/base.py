"""The contract every task implements, and the config base classes tasks build on.

A task owns its config sections (typically `data`, `model`, `train`), its data, its model, one
epoch of training, its evaluation, per-case prediction and its epoch-boundary hooks. The
orchestrator owns everything else: workers, seeding, checkpoints, reporting, cross-validation,
pseudo-label rounds, sweeps and the results store.

Most tasks do not implement `Task` directly but the supervised template
(`tasks.common.template.SupervisedTask`), which owns loaders, optimiser and LR schedule, AMP,
gathering by sample index, DDP unwrapping and checkpoint state; the task then writes only its
data, model, parameter groups, training step, prediction step and metrics.

Per-case predictions are a `pandas.DataFrame` with one row per case: ``index`` (the position in
the split's case table), ``case`` (a stable id, e.g. the image path), the identifying columns of
the case table (``label``, ``patient_id`` where present) and the task's outputs (``score`` = the
probability of class 1 for classifiers).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from torch import nn
    from torch.utils.data import DataLoader


class StrictModel(BaseModel):
    """Config model base: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TrainConfig(StrictModel):
    """Settings every task's training has; tasks extend it with their own fields.

    The optimiser and the LR schedule are built by the supervised template from these fields, in
    one implementation for every task. The schedule is stepped once per optimiser step.
    """

    epochs: int = Field(10, ge=1, description="Epochs to train.")
    batch_size: int = Field(32, ge=1, description="Batch size per worker.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(1e-4, ge=0)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    scheduler: Literal["none", "cosine", "onecycle", "step"] = Field(
        "cosine",
        description="LR schedule: none (constant after warmup), cosine decay to 0, one-cycle, "
        "or step decay by step_gamma every step_size epochs.",
    )
    warmup_epochs: float = Field(0, ge=0, description="Linear LR warm-up (none/cosine/step).")
    step_size: int = Field(10, ge=1, description="step: epochs between LR decays.")
    step_gamma: float = Field(0.1, gt=0, le=1, description="step: LR factor per decay.")
    onecycle_pct: float = Field(0.3, gt=0, lt=1, description="onecycle: share of rising LR.")
    grad_clip: float | None = Field(None, gt=0, description="Clip the gradient norm to this.")
    max_loss: float | None = Field(
        None, gt=0, description="End the trial as diverged when an epoch's mean loss exceeds this."
    )
    amp: Literal["none", "bf16", "fp16"] = Field(
        "none", description="Mixed precision on CUDA; ignored on CPU."
    )
    loader_workers: int = Field(0, ge=0, description="DataLoader worker processes per worker.")

    @field_validator("scheduler", mode="before")
    @classmethod
    def _constant_is_none(cls, v: Any) -> Any:
        return "none" if v == "constant" else v  # the name before the template (stored configs)


class ArtifactRef(StrictModel):
    """A file from the best run of an earlier sweep (pretrain, then fine-tune from its best).

    The orchestrator resolves it before any trial starts and pins it: `path`, `run_id` and
    `sha256` are recorded in every run's resolved config, and a resumed sweep uses exactly
    that file (a changed file is refused).
    """

    sweep: str = Field(description="Name of the earlier sweep (or run) in the results store.")
    file: str = Field("backbone.pt", description="Artifact file of that sweep's best run.")
    store: str | None = Field(None, description="Its results store; default this one's.")
    path: str | None = Field(None, description="Filled in by the orchestrator.")
    run_id: str | None = Field(None, description="Filled in: the run the file came from.")
    sha256: str | None = Field(None, description="Filled in: the file's checksum.")


class TaskConfig(StrictModel):
    """Base of a task's config model: the task-specific top-level YAML sections."""

    train: TrainConfig = Field(default_factory=TrainConfig)


def _identity(x: Any) -> Any:
    return x


@dataclass
class RunContext:
    """What the orchestrator gives a task inside one Ray Train worker (or a test)."""

    run_id: str
    seed: int
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | str = "cpu"
    artifacts_dir: Path | None = None
    fold: int | None = None
    round: int | None = None
    # Case tables of this run chosen by the engine (cross-validation, test split, pseudo-labels):
    # "train", "val" and optionally "test" and "pool". None: the task splits its data itself.
    frames: dict[str, pd.DataFrame] | None = None
    prepare_model: Callable[[nn.Module], nn.Module] = field(default=_identity)
    prepare_loader: Callable[[DataLoader[Any]], DataLoader[Any]] = field(default=_identity)
    # Applied to every per-case table a task writes (pseudonymised ids, relative paths).
    privacy: Callable[[pd.DataFrame], pd.DataFrame] = field(default=_identity)

    @property
    def is_main(self) -> bool:
        """Rank 0 writes artifacts and checkpoints."""
        return self.rank == 0


class Hook:
    """Called around the fit and at epoch boundaries (unfreezing schedules, loss-weight switches).

    Subclasses override what they need. A hook with state overrides `state_dict` and
    `load_state_dict`; that state is saved in every checkpoint.
    """

    def on_fit_start(self, task: Task[Any]) -> None:
        """Before the first epoch (also after a resume)."""

    def on_epoch_start(self, task: Task[Any], epoch: int) -> None:
        """Before an epoch's training."""

    def on_epoch_end(self, task: Task[Any], epoch: int, metrics: dict[str, float]) -> None:
        """After an epoch's evaluation; may add metrics (e.g. ``train_alpha``)."""

    def on_fit_end(self, task: Task[Any]) -> None:
        """After the last epoch, also when training failed (called from a ``finally``)."""

    def state_dict(self) -> dict[str, Any] | None:
        """State to checkpoint; None for a stateless hook."""
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""


# Kept for type annotations in older code: every hook is a `Hook`.
EpochHook = Hook

C = TypeVar("C", bound=TaskConfig)


class Task(ABC, Generic[C]):
    """One task family. Subclasses set the class attributes and implement the abstract methods.

    Metric names reported by `train_epoch`/`evaluate` are `<split>_<name>` (`train_loss`,
    `val_auc`), which the results store splits into its `split` and `name` columns.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    config_model: ClassVar[type[TaskConfig]]
    default_metric: ClassVar[str] = "val_loss"
    default_mode: ClassVar[Literal["max", "min"]] = "min"
    synth_names: ClassVar[tuple[str, ...]] = ()
    # File name of `write_predictions` output (the extension says the format).
    predictions_file: ClassVar[str] = "predictions.csv"
    # False where a score is no probability (anomaly scores): pseudo-label rounds are refused
    pseudo_labelling: ClassVar[bool] = True

    def __init__(self, config: C) -> None:
        self.config = config
        self.notes: list[str] = []  # what check_data did (e.g. synthesised demo data)

    # --- driver side -------------------------------------------------------------------------
    def check_data(self) -> None:
        """Validate the inputs before any worker starts; raise DataError (exit 2) on bad input."""

    def sweep_warnings(self, experiment: dict[str, Any]) -> list[str]:
        """Warnings about how a sweep's settings interact with this task (e.g. a scheduler that
        compares trials before a loss-weight switch); stored with the sweep and printed."""
        return []

    def data_root(self) -> Path | None:
        """The folder written paths are made relative to (the manifest's folder)."""
        return None

    def data_summary(self) -> dict[str, Any]:
        """What `validate --check-data` prints: counts of images, labels, patients, sources."""
        return {}

    @classmethod
    def synthesize(cls, out: Path, n: int, size: int, seed: int) -> Path:
        """Write a synthetic dataset with a learnable signal; return its main file."""
        raise NotImplementedError(f"task {cls.name!r} has no synthetic data generator")

    # Synthetic data the task contract suite trains on: (number of cases, image size).
    tiny_synth: ClassVar[tuple[int, int]] = (48, 48)

    @classmethod
    def tiny_config(cls, data: Path) -> dict[str, Any]:
        """The task's config sections for a seconds-long CPU run on `synthesize(...)`'s output
        `data` (used by the task contract test suite, tests/tasks/test_contract.py)."""
        raise NotImplementedError(f"task {cls.name!r} has no tiny config for contract tests")

    def cases(self) -> pd.DataFrame | None:
        """The labelled case table the engine splits (cross-validation, test split).

        Columns: ``case`` (stable id), ``label`` (what folds are stratified by) and
        ``patient_id`` where known. None: this task cannot be cross-validated.
        """
        return None

    def read_cases(self, manifest: Path) -> pd.DataFrame:
        """A new case table in this task's input format (labels optional), for prediction."""
        raise NotImplementedError(f"task {self.name!r} cannot read a prediction manifest")

    def score(self, split: str, predictions: pd.DataFrame) -> dict[str, float]:
        """Metrics (names without the split prefix) of per-case predictions of `split`."""
        raise NotImplementedError(f"task {self.name!r} does not score predictions")

    @classmethod
    def ensemble(cls, predictions: Sequence[pd.DataFrame]) -> pd.DataFrame:
        """One prediction per case from several models' predictions (fold ensembles).

        Default: the mean of every float output column per ``case`` (mean probability).
        """
        import pandas as pd

        merged = pd.concat(list(predictions), ignore_index=True)
        ident = [c for c in merged.columns if c not in _float_outputs(merged)]
        means = merged.groupby("case", sort=False)[_float_outputs(merged)].mean()
        first = merged[ident].drop_duplicates("case").set_index("case")
        return first.join(means).reset_index()

    @classmethod
    def pseudo_labels(cls, predictions: pd.DataFrame, high: float, low: float) -> pd.DataFrame:
        """Hard labels for confident predictions: ``score >= high`` -> 1, ``<= low`` -> 0."""
        if "score" not in predictions.columns:
            raise NotImplementedError(f"task {cls.name!r} has no score to pseudo-label from")
        hi, lo = predictions["score"] >= high, predictions["score"] <= low
        out = predictions[hi | lo].copy()
        out["label"] = hi[hi | lo].astype(int).to_numpy()
        return out

    def write_predictions(self, predictions: pd.DataFrame, path: Path) -> Path:
        """Write per-case predictions in this task's format (default CSV) atomically."""
        from tasks.common.io import atomic_write_csv

        keep = [c for c in predictions.columns if not c.startswith("_")]
        return atomic_write_csv(predictions[keep], path)

    # --- worker side -------------------------------------------------------------------------
    @abstractmethod
    def setup(self, ctx: RunContext) -> None:
        """Build data loaders, model and optimiser on this worker."""

    @abstractmethod
    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch; return `train_*` metrics."""

    @abstractmethod
    def evaluate(self, epoch: int) -> dict[str, float]:
        """Evaluate on the validation split; every rank returns the same `val_*` metrics."""

    def setup_inference(self, ctx: RunContext) -> None:
        """Build only what prediction needs (the model), then `load_model_state` and `predict`."""
        raise NotImplementedError(f"task {self.name!r} cannot predict outside training")

    def predict(self, split: str | Path) -> pd.DataFrame:
        """Per-case predictions of a named split (`val`, `test`, `pool`) or a new manifest,
        gathered across DDP ranks exactly once per case."""
        raise NotImplementedError(f"task {self.name!r} does not predict per case")

    def hooks(self) -> Sequence[Hook]:
        """Fit and epoch-boundary hooks, called in order by the training loop."""
        return ()

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume training (model, optimiser, scheduler, hooks)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    def model_state(self) -> dict[str, Any]:
        """The model weights alone (the best epoch's are kept for prediction)."""
        raise NotImplementedError(f"task {self.name!r} has no model weights to keep")

    def load_model_state(self, state: dict[str, Any]) -> None:
        """Load what `model_state` returned."""
        raise NotImplementedError(f"task {self.name!r} has no model weights to load")

    def save_artifacts(self, directory: Path) -> list[Path]:
        """Write the best epoch's artifacts (per-case predictions, plots) on rank 0."""
        return []


def _float_outputs(frame: pd.DataFrame) -> list[str]:
    """Float columns that are model outputs (not the identifying columns)."""
    skip = {"index", "label", "line"}
    return [
        c
        for c in frame.columns
        if c not in skip and frame[c].dtype.kind == "f" and not c.startswith("_")
    ]

"""The contract every task implements, and the config base classes tasks build on.

A task owns its config sections (typically `data`, `model`, `train`), its data, its model, one epoch
of training, its evaluation and its epoch-boundary hooks. The orchestrator owns everything else:
workers, seeding, checkpoints, reporting, sweeps and the results store.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader


class StrictModel(BaseModel):
    """Config model base: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TrainConfig(StrictModel):
    """Settings every task's training has; tasks extend it with their own fields."""

    epochs: int = Field(10, ge=1, description="Epochs to train.")
    batch_size: int = Field(32, ge=1, description="Batch size per worker.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(1e-4, ge=0)
    amp: Literal["none", "bf16", "fp16"] = Field(
        "none", description="Mixed precision on CUDA; ignored on CPU."
    )
    loader_workers: int = Field(0, ge=0, description="DataLoader worker processes per worker.")


class ArtifactRef(StrictModel):
    """A file from the best run of an earlier sweep (pretrain, then fine-tune from its best).

    The orchestrator resolves `path` before any trial starts and stores it with the run, so the
    lineage of every fine-tuned model is in its resolved config.
    """

    sweep: str = Field(description="Name of the earlier sweep (or run) in the results store.")
    file: str = Field("backbone.pt", description="Artifact file of that sweep's best run.")
    store: str | None = Field(None, description="Its results store; default this one's.")
    path: str | None = Field(None, description="Filled in by the orchestrator.")


class TaskConfig(StrictModel):
    """Base of a task's config model: the task-specific top-level YAML sections."""

    train: TrainConfig = Field(default_factory=TrainConfig)


@dataclass
class RunContext:
    """What the orchestrator gives a task inside one Ray Train worker."""

    run_id: str
    seed: int
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | str = "cpu"
    artifacts_dir: Path | None = None
    fold: int | None = None
    prepare_model: Callable[[nn.Module], nn.Module] = field(default=lambda m: m)
    prepare_loader: Callable[[DataLoader[Any]], DataLoader[Any]] = field(default=lambda d: d)

    @property
    def is_main(self) -> bool:
        """Rank 0 writes artifacts and checkpoints."""
        return self.rank == 0


class EpochHook(Protocol):
    """Called at epoch boundaries (unfreezing schedules, loss-weight switches, ...)."""

    def on_epoch_start(self, task: Task[Any], epoch: int) -> None: ...

    def on_epoch_end(self, task: Task[Any], epoch: int, metrics: dict[str, float]) -> None: ...


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

    def __init__(self, config: C) -> None:
        self.config = config

    # --- driver side -------------------------------------------------------------------------
    def check_data(self) -> None:
        """Validate the inputs before any worker starts; raise DataError (exit 2) on bad input."""

    @classmethod
    def synthesize(cls, out: Path, n: int, size: int, seed: int) -> Path:
        """Write a synthetic dataset with a learnable signal; return its main file."""
        raise NotImplementedError(f"task {cls.name!r} has no synthetic data generator")

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

    def hooks(self) -> Sequence[EpochHook]:
        """Epoch-boundary hooks, called in order by the training loop."""
        return ()

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume training (model, optimiser, scheduler)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    def save_artifacts(self, directory: Path) -> list[Path]:
        """Write end-of-run artifacts (per-case predictions, plots) on rank 0; return the files."""
        return []

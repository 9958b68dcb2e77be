"""The supervised-task template: everything a training task needs except its own science.

A task built on `SupervisedTask` writes only:

* its data: `cases` / `default_frames` (which cases train and validate when the engine does not
  choose), `read_cases` (a new manifest) and `dataset(frame, train)`;
* its model: `build_model`, optionally `param_groups` and `build_hooks` (unfreezing schedules,
  loss-weight switches);
* `train_step(batch) -> {"loss": ..., other scalars}` and `predict_step(batch) -> per-case
  outputs`;
* `score(split, predictions) -> metrics`.

The template owns device placement, loaders (distributed samplers, ``set_epoch``), the optimiser
and LR schedule (`TrainConfig`), the AMP step, loss averaging across ranks, prediction gathered by
sample index, DDP (re)wrapping and unwrapping, and checkpoint state including stateful hooks.

Dataset items are tuples whose **last element is the item's position** in the split's case table
(an ``int``); the template uses it to count samples, to gather predictions across DDP ranks
exactly once per case, and to join each prediction with its case's identifying columns.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from tasks.base import C, Hook, RunContext, Task
from tasks.common.schedules import ScaledLambdaLR, lr_factor
from tasks.common.torch_utils import (
    autocast,
    build_optimizer,
    gather_arrays,
    gather_frame,
    make_grad_scaler,
    optimizer_step,
    to_device,
)


class Diverged(RuntimeError):
    """Training produced a non-finite (or, with `train.max_loss`, an exploding) loss or metric."""

    def __init__(self, epoch: int, what: str) -> None:
        self.epoch, self.what = epoch, what
        super().__init__(f"diverged at epoch {epoch}: {what}")


def check_finite(epoch: int, metrics: dict[str, float], max_loss: float | None = None) -> None:
    """Raise `Diverged` on a non-finite training metric or loss, or a loss above `max_loss`.

    Other validation metrics may be undefined without anything having diverged (an AUC of a
    validation fold with one class is NaN) and are left alone.
    """
    bad = [
        k
        for k, v in metrics.items()
        if not np.isfinite(v) and (k.startswith("train_") or k.endswith("loss"))
    ]
    if bad:
        raise Diverged(epoch, f"non-finite {', '.join(sorted(bad))}")
    loss = metrics.get("train_loss")
    if max_loss is not None and loss is not None and loss > max_loss:
        raise Diverged(epoch, f"train_loss {loss:.4g} exceeds train.max_loss {max_loss:g}")


class SupervisedTask(Task[C]):
    """Template base class; see the module docstring for what a subclass writes."""

    # Columns of a case table copied into predictions (those present).
    case_columns: ClassVar[tuple[str, ...]] = ("case", "label", "patient_id")
    eval_batch_factor: ClassVar[int] = 2

    # --- what a task writes ----------------------------------------------------------------
    @abstractmethod
    def default_frames(self) -> dict[str, pd.DataFrame]:
        """The ``train`` and ``val`` case tables when the engine gives none (no CV)."""

    @abstractmethod
    def dataset(self, frame: pd.DataFrame, train: bool) -> Dataset[Any]:
        """A dataset over the rows of `frame`; items end with the row position."""

    @abstractmethod
    def build_model(self) -> nn.Module:
        """The model, on the CPU; the template moves and wraps it."""

    @abstractmethod
    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        """Forward and loss of one batch: ``{"loss": ..., "<name>": ...}`` scalar tensors; each
        is averaged over the epoch (weighted by batch size) and reported as ``train_<name>``."""

    @abstractmethod
    def predict_step(self, batch: Any) -> dict[str, Any]:
        """Per-case outputs of one batch: tensors with a leading batch axis, or lists."""

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Optimiser param groups (keys ``lr_scale`` / ``fixed_lr`` are honoured)."""
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    def build_hooks(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> list[Hook]:
        """Hooks built once the optimiser exists and before the model is wrapped for DDP."""
        return []

    def collate_fn(self) -> Callable[[list[Any]], Any] | None:
        return None

    def train_mode(self) -> None:
        """Put the model in training mode (a schedule may keep frozen parts in eval mode)."""
        self.model.train()

    def extra_state(self) -> dict[str, Any]:
        """Task state beyond model, optimiser, LR, scaler and hooks (rarely needed)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what `extra_state` returned."""

    def extra_artifacts(self, directory: Path) -> list[Path]:
        """Artifacts beyond the validation predictions (plots, metric JSON) of the best epoch."""
        return []

    # --- setup -------------------------------------------------------------------------------
    def setup(self, ctx: RunContext) -> None:
        cfg = self.config.train
        self.ctx, self.device = ctx, torch.device(ctx.device)
        self.frames = ctx.frames if ctx.frames is not None else self.default_frames()
        self._loaders: dict[str, tuple[pd.DataFrame, DataLoader[Any]]] = {}
        self.train_loader = self._make_loader(self.frames["train"], train=True)
        self.bare = self.build_model().to(self.device)
        self.optimizer = build_optimizer(self.param_groups(self.bare), cfg)
        self._hooks = list(self.build_hooks(self.bare, self.optimizer))
        self.wrap()
        steps = len(self.train_loader)
        factor = partial(
            lr_factor,
            kind=cfg.scheduler,
            total_steps=cfg.epochs * steps,
            steps_per_epoch=steps,
            warmup_steps=round(cfg.warmup_epochs * steps),
            step_size=cfg.step_size,
            gamma=cfg.step_gamma,
            pct=cfg.onecycle_pct,
        )
        self.lr = ScaledLambdaLR(self.optimizer, factor, base_lr=cfg.lr)
        self.scaler = make_grad_scaler(self.device, cfg.amp)
        self.last_val: pd.DataFrame | None = None
        self.first_step_at: float | None = None  # start-up benchmarks read it

    def setup_inference(self, ctx: RunContext) -> None:
        """Only the model, for predicting stored runs (`medsweep predict`): no training data."""
        self.ctx, self.device = ctx, torch.device(ctx.device)
        self.frames = dict(ctx.frames or {})
        self._loaders = {}
        self.bare = self.build_model().to(self.device)
        self.model = self.bare
        self.last_val = None

    def wrap(self) -> None:
        """(Re)wrap for DDP: it only reduces gradients of parameters trainable at wrap time."""
        self.model = self.ctx.prepare_model(self.bare)

    def _make_loader(self, frame: pd.DataFrame, train: bool) -> DataLoader[Any]:
        cfg = self.config.train
        ds = self.dataset(frame, train)
        bs = cfg.batch_size if train else cfg.batch_size * self.eval_batch_factor
        loader: DataLoader[Any] = DataLoader(
            ds,
            batch_size=bs,
            shuffle=train,
            num_workers=cfg.loader_workers,
            persistent_workers=cfg.loader_workers > 0,
            pin_memory=self.device.type == "cuda",
            collate_fn=self.collate_fn(),
            # a last batch of one would break BatchNorm in training
            drop_last=train and len(ds) > cfg.batch_size,  # type: ignore[arg-type]
        )
        return self.ctx.prepare_loader(loader)

    def _split(self, split: str | Path) -> tuple[pd.DataFrame, DataLoader[Any]]:
        key = str(split)
        if key not in self._loaders:
            if isinstance(split, Path):
                frame = self.read_cases(split)
            elif split in self.frames:
                frame = self.frames[split]
            else:
                raise KeyError(f"no split {split!r} in this run; it has {sorted(self.frames)}")
            self._loaders[key] = (frame, self._make_loader(frame, train=False))
        return self._loaders[key]

    # --- training ----------------------------------------------------------------------------
    def hooks(self) -> Sequence[Hook]:
        return self._hooks

    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.config.train
        self.train_mode()
        sampler = getattr(self.train_loader, "sampler", None)
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)  # reshuffle shards differently every epoch under DDP
        sums: dict[str, torch.Tensor] = {}
        count = 0
        for batch in self.train_loader:
            batch = to_device(batch, self.device)
            n = len(batch[-1])
            with autocast(self.device, cfg.amp):
                out = self.train_step(batch)
            optimizer_step(out["loss"], self.optimizer, self.scaler, self.lr, cfg.grad_clip)
            if self.first_step_at is None:
                self.first_step_at = time.time()
            for key, value in out.items():
                weighted = value.detach().float() * n
                sums[key] = sums[key] + weighted if key in sums else weighted
            count += n
        return {**self._epoch_means(sums, count), "train_lr": self.lr.get_last_lr()[0]}

    def _epoch_means(self, sums: dict[str, torch.Tensor], count: int) -> dict[str, float]:
        """Per-key means over every sample of every rank (one device sync per epoch)."""
        keys = sorted(sums)
        local = torch.stack([sums[k] for k in keys]).cpu().numpy() if keys else np.zeros(0)
        totals, counts = gather_arrays(local[None, :], np.array([count]))
        mean = totals.sum(axis=0) / max(1, int(counts.sum()))
        return {f"train_{k}": float(v) for k, v in zip(keys, mean, strict=True)}

    # --- prediction and evaluation -----------------------------------------------------------
    @torch.no_grad()
    def predict(self, split: str | Path) -> pd.DataFrame:
        frame, loader = self._split(split)
        self.bare.eval()
        parts = []
        for batch in loader:
            batch = to_device(batch, self.device)
            with autocast(self.device, self.config.train.amp):
                out = self.predict_step(batch)
            parts.append(_outputs_frame(batch[-1], out))
        local = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"index": []})
        preds = gather_frame(local)
        ident = [c for c in self.case_columns if c in frame.columns]
        cases = frame.iloc[preds["index"].to_numpy()][ident].reset_index(drop=True)
        return pd.concat([preds[["index"]], cases, preds.drop(columns="index")], axis=1)

    def evaluate(self, epoch: int) -> dict[str, float]:
        self.last_val = self.predict("val")
        return {f"val_{k}": float(v) for k, v in self.score("val", self.last_val).items()}

    # --- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.bare.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr": self.lr.state_dict(),
            "scaler": self.scaler.state_dict(),
            "hooks": [h.state_dict() for h in self._hooks],
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bare.load_state_dict(state["model"])
        # hooks first: an unfreezing schedule re-creates the param groups the optimiser expects
        for hook, hook_state in zip(self._hooks, state.get("hooks", []), strict=False):
            if hook_state is not None:
                hook.load_state_dict(hook_state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr.load_state_dict(state["lr"])
        self.scaler.load_state_dict(state["scaler"])
        self.load_extra_state(state.get("extra", {}))

    def model_state(self) -> dict[str, Any]:
        return {k: v.detach().cpu().clone() for k, v in self.bare.state_dict().items()}

    def load_model_state(self, state: dict[str, Any]) -> None:
        self.bare.load_state_dict(state)

    def save_artifacts(self, directory: Path) -> list[Path]:
        """The best epoch's validation predictions, plus the task's extra artifacts."""
        written = []
        if self.last_val is not None:
            path = directory / f"val_{self.predictions_file}"
            written.append(self.write_predictions(self.ctx.privacy(self.last_val), path))
        return written + self.extra_artifacts(directory)


def _outputs_frame(index: torch.Tensor, outputs: dict[str, Any]) -> pd.DataFrame:
    """One batch of per-case outputs as a table keyed by case position."""
    columns: dict[str, Any] = {"index": index.cpu().numpy().astype(np.int64)}
    n = len(columns["index"])
    for key, value in outputs.items():
        if isinstance(value, torch.Tensor):
            value = (
                value.detach().float().cpu().numpy()
                if value.is_floating_point()
                else (value.detach().cpu().numpy())
            )
            columns[key] = value if value.ndim == 1 else list(value)
        else:
            columns[key] = list(value)
        if len(columns[key]) != n:
            raise ValueError(f"predict_step output {key!r} has {len(columns[key])} rows, not {n}")
    return pd.DataFrame(columns)

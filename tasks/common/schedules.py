"""Training schedules driven at epoch boundaries or per optimiser step.

`UnfreezeSchedule` is seed 000's "next step": start with a frozen (e.g. SimSiam-pretrained)
backbone and unfreeze its stages one by one from downstream to upstream, every K epochs or when
the validation metric stops improving. Each unfrozen stage becomes its own optimiser param group
(with an ``lr_scale``), so per-stage learning-rate multipliers work and optimiser state is
created only for parameters that actually train.

Torch LR schedulers fix their per-group base LRs at construction and ignore groups added later;
use `ScaledLambdaLR` instead, which sets every group's LR (``base_lr * factor(step) *
group["lr_scale"]``) on each step, groups added later included.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic import Field, field_validator
from torch import nn
from torch.optim import Optimizer

from tasks.base import Hook, StrictModel, Task

log = logging.getLogger(__name__)


class UnfreezeConfig(StrictModel):
    """Gradual unfreezing of backbone stages (all searchable)."""

    enabled: bool = Field(True, description="False: the whole backbone trains from epoch 1.")
    order: list[str] | None = Field(
        None,
        description="Stages to unfreeze, in this order; default downstream -> upstream. "
        "Stages not listed stay frozen for the whole run.",
    )
    mode: Literal["interval", "plateau"] = Field(
        "interval", description="interval: every `every` epochs; plateau: after `patience`."
    )
    every: int = Field(50, ge=1, description="interval: next stage on epochs K+1, 2K+1, ...")
    patience: int = Field(
        5, ge=1, description="plateau: next stage after P epochs without a new best `metric`."
    )
    metric: str = Field("val_mAP", description="plateau: the epoch metric watched.")
    metric_mode: Literal["max", "min"] = Field("max", description="plateau: better is max/min.")
    lr_mult: float = Field(
        1.0,
        gt=0,
        description="LR of the n-th unfrozen stage = base LR * lr_mult**n (n = 1 for the "
        "first), so lr_mult < 1 gives upstream stages smaller LRs.",
    )
    start_frozen: bool = Field(
        True,
        description="True: every stage starts frozen. False: the first stage of `order` trains "
        "from epoch 1 (no fully-frozen phase); the rest follow the schedule.",
    )

    @field_validator("order")
    @classmethod
    def _unique(cls, order: list[str] | None) -> list[str] | None:
        if order is not None and len(set(order)) != len(order):
            raise ValueError(f"stage names in `order` must be unique, got {order}")
        return order


def _params(modules: Sequence[nn.Module]) -> list[nn.Parameter]:
    """Parameters of `modules`, each once, in registration order."""
    seen: dict[int, nn.Parameter] = {}
    for m in modules:
        for p in m.parameters():
            seen.setdefault(id(p), p)
    return list(seen.values())


class UnfreezeSchedule(Hook):
    """An `EpochHook` that unfreezes backbone stages; see `UnfreezeConfig` for the options.

    Build it right after the optimiser (over all model parameters) and before wrapping the
    model for DDP: it freezes the stages and removes their parameters from the optimiser's
    existing groups. Then:

    - call `train_mode(model)` instead of ``model.train()`` (frozen stages stay in eval mode:
      BatchNorm statistics and dropout of frozen weights do not change);
    - step LRs with `ScaledLambdaLR` (or `apply_lr_factor`);
    - under DDP pass `on_change` that re-wraps the bare model (``ctx.prepare_model``): DDP
      only reduces gradients of parameters that required grad when the wrapper was built, so
      without it the ranks' unfrozen weights silently drift apart. It is called whenever
      stages were unfrozen (by `on_epoch_start` or `load_state_dict`, not by the constructor);
    - on resume call `load_state_dict` *before* ``optimizer.load_state_dict`` so the param
      groups exist again.

    In ``on_epoch_end`` it adds ``train_unfrozen`` (number of trainable stages) to the metrics.
    """

    def __init__(
        self,
        stages: Mapping[str, Sequence[nn.Module]],
        optimizer: Optimizer,
        config: UnfreezeConfig,
        *,
        on_change: Callable[[list[str]], None] | None = None,
    ) -> None:
        if not stages:
            raise ValueError("the model has no stages to unfreeze")
        self.stages = {name: list(mods) for name, mods in stages.items()}
        self.optimizer, self.config, self.on_change = optimizer, config, on_change
        self.order = list(config.order) if config.order is not None else list(self.stages)[::-1]
        unknown = [n for n in self.order if n not in self.stages]
        if unknown:
            raise ValueError(
                f"unknown stage name(s) {unknown} in unfreeze order; valid: {list(self.stages)}"
            )
        self.unfrozen: list[str] = []
        self.history: dict[int, list[str]] = {}
        self.best = math.nan
        self.bad_epochs = 0
        self.pending = False
        for group in optimizer.param_groups:
            group.setdefault("lr_scale", 1.0)
        if config.enabled:
            self._freeze_all()
            if not config.start_frozen and self.order:
                self._unfreeze_next()

    # --- state ---------------------------------------------------------------------------------
    @property
    def trainable_stages(self) -> list[str]:
        """Names of the stages that train now, in unfreezing order (all when disabled)."""
        return list(self.unfrozen) if self.config.enabled else list(self.stages)

    @property
    def frozen_stages(self) -> list[str]:
        trainable = set(self.trainable_stages)
        return [n for n in self.stages if n not in trainable]

    def _freeze_all(self) -> None:
        frozen = {id(p) for mods in self.stages.values() for p in _params(mods)}
        for group in self.optimizer.param_groups:
            group["params"] = [p for p in group["params"] if id(p) not in frozen]
        for mods in self.stages.values():
            for p in _params(mods):
                p.requires_grad_(False)
                self.optimizer.state.pop(p, None)

    @property
    def exhausted(self) -> bool:
        """True when every stage of `order` is unfrozen."""
        return len(self.unfrozen) >= len(self.order)

    def _unfreeze_next(self) -> str:
        name = self.order[len(self.unfrozen)]
        params = _params(self.stages[name])
        for p in params:
            p.requires_grad_(True)
        self.unfrozen.append(name)
        scale = self.config.lr_mult ** len(self.unfrozen)
        first = self.optimizer.param_groups[0]
        current = first["lr"] / first.get("lr_scale", 1.0)  # base LR times today's factor
        self.optimizer.add_param_group(
            {"params": params, "lr": current * scale, "lr_scale": scale, "stage": name}
        )
        return name

    def train_mode(self, model: nn.Module) -> None:
        """``model.train()``, then frozen stages back to eval mode."""
        model.train()
        for name in self.frozen_stages:
            for m in self.stages[name]:
                m.eval()

    # --- EpochHook -----------------------------------------------------------------------------
    def on_epoch_start(self, task: Task[Any] | None, epoch: int) -> None:
        added: list[str] = []
        if self.config.enabled:
            due = len(self.unfrozen) + int(self.pending)
            if self.config.mode == "interval":
                due = (epoch - 1) // self.config.every + (0 if self.config.start_frozen else 1)
            while len(self.unfrozen) < due and not self.exhausted:
                added.append(self._unfreeze_next())
            self.pending = False
        if added:
            log.info("epoch %d: unfroze %s; trainable: %s", epoch, added, self.unfrozen)
            if self.on_change is not None:
                self.on_change(added)
        self.history[epoch] = self.trainable_stages

    def on_epoch_end(self, task: Task[Any] | None, epoch: int, metrics: dict[str, float]) -> None:
        metrics["train_unfrozen"] = float(len(self.trainable_stages))
        if not self.config.enabled or self.config.mode != "plateau":
            return
        if self.config.metric not in metrics:
            raise ValueError(
                f"plateau unfreezing watches {self.config.metric!r}, which is not among the "
                f"epoch metrics {sorted(metrics)}"
            )
        value = metrics[self.config.metric]
        better = not math.isnan(value) and (
            math.isnan(self.best)
            or (value > self.best if self.config.metric_mode == "max" else value < self.best)
        )
        if better:
            self.best, self.bad_epochs = value, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs >= self.config.patience and not self.exhausted:
            self.pending, self.bad_epochs = True, 0

    # --- checkpointing -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "unfrozen": list(self.unfrozen),
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "pending": self.pending,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Re-create the saved unfrozen stages (and their param groups, in the saved order)."""
        saved = list(state["unfrozen"])
        if saved[: len(self.unfrozen)] != self.unfrozen or saved != self.order[: len(saved)]:
            raise ValueError(f"checkpoint unfroze {saved}, incompatible with order {self.order}")
        added = [self._unfreeze_next() for _ in range(len(saved) - len(self.unfrozen))]
        self.best, self.bad_epochs = float(state["best"]), int(state["bad_epochs"])
        self.pending = bool(state["pending"])
        if added and self.on_change is not None:
            self.on_change(added)


# --------------------------------------------------------------------------------------------
# Learning rates: one factor function for every schedule, driving groups added later too
# --------------------------------------------------------------------------------------------
def warmup_cosine(step: int, total_steps: int, warmup_steps: int = 0) -> float:
    """LR factor: linear warm-up to 1, then cosine decay to 0 at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def onecycle(
    step: int, total_steps: int, pct: float = 0.3, div: float = 25.0, final_div: float = 1e4
) -> float:
    """torch's OneCycleLR (cosine) as a factor of the peak LR: up from 1/div over `pct` of the
    steps, then down to 1/(div*final_div)."""
    up = max(1, round(pct * total_steps))
    lo, end = 1.0 / div, 1.0 / (div * final_div)
    if step < up:
        return lo + (1 - lo) * (1 - math.cos(math.pi * step / up)) / 2
    progress = min(1.0, (step - up) / max(1, total_steps - up))
    return end + (1 - end) * (1 + math.cos(math.pi * progress)) / 2


def lr_factor(
    step: int,
    *,
    kind: str,
    total_steps: int,
    steps_per_epoch: int,
    warmup_steps: int = 0,
    step_size: int = 10,
    gamma: float = 0.1,
    pct: float = 0.3,
) -> float:
    """The LR factor at optimiser step `step` for a `TrainConfig.scheduler` kind."""
    if kind == "onecycle":
        return onecycle(step, total_steps, pct)
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "cosine":
        return warmup_cosine(step, total_steps, warmup_steps)
    if kind == "step":
        return float(gamma ** (step // max(1, steps_per_epoch * step_size)))
    return 1.0


def apply_lr_factor(optimizer: Optimizer, base_lr: float, factor: float) -> None:
    """Every group's LR = base_lr * factor * group["lr_scale"] (default scale 1); groups marked
    ``fixed_lr`` keep base_lr * lr_scale (e.g. SimSiam's predictor)."""
    for group in optimizer.param_groups:
        f = 1.0 if group.get("fixed_lr") else factor
        group["lr"] = base_lr * f * group.get("lr_scale", 1.0)


class ScaledLambdaLR:
    """Like ``LambdaLR`` with one lambda, but it also drives param groups added later.

    Call `step()` once per optimiser step; `state_dict`/`load_state_dict` for checkpoints.
    A group's ``lr_scale`` key (set by `UnfreezeSchedule`) multiplies its LR.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        lr_lambda: Callable[[int], float],
        base_lr: float | None = None,
    ) -> None:
        self.optimizer, self.lr_lambda = optimizer, lr_lambda
        first = optimizer.param_groups[0]
        self.base_lr = base_lr if base_lr is not None else first["lr"] / first.get("lr_scale", 1)
        self.last_step = 0
        self._apply()

    def _apply(self) -> None:
        apply_lr_factor(self.optimizer, self.base_lr, self.lr_lambda(self.last_step))

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step, "base_lr": self.base_lr}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.last_step, self.base_lr = int(state["last_step"]), float(state["base_lr"])
        self._apply()


# --------------------------------------------------------------------------------------------
# Values that change over epochs (loss weights): step switches and ramps
# --------------------------------------------------------------------------------------------
class ValueScheduleConfig(StrictModel):
    """A value over epochs: `start` before the switch point, `end` from it on (seed 003's alpha).

    The switch epoch s is `switch` * epochs when `switch` < 1 (a fraction, seed 003: 1/2), else
    the epoch itself. `shape` step switches at s; linear and cosine ramp from `start` at
    epoch 1 to `end` at epoch s.
    """

    start: float = Field(0.9, description="Value before the switch (alpha_high).")
    end: float = Field(0.1, description="Value from the switch on (alpha_low).")
    switch: float = Field(
        0.5, gt=0, description="Switch point: a fraction of the epochs (< 1) or an epoch (>= 1)."
    )
    shape: Literal["step", "linear", "cosine"] = "step"


def switch_epoch(cfg: ValueScheduleConfig, epochs: int) -> float:
    """The epoch n from which the value is `end` (seed 003, eq. 5: n >= E/2)."""
    return cfg.switch * epochs if cfg.switch < 1 else cfg.switch


def scheduled_value(cfg: ValueScheduleConfig, epoch: int, epochs: int) -> float:
    """The value in force at `epoch` (1-based)."""
    s = switch_epoch(cfg, epochs)
    if epoch >= s:
        return cfg.end
    if cfg.shape == "step" or s <= 1:
        return cfg.start
    t = (epoch - 1) / (s - 1)
    if cfg.shape == "cosine":
        t = (1 - math.cos(math.pi * t)) / 2
    return cfg.start + (cfg.end - cfg.start) * t

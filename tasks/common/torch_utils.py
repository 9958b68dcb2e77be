"""Small torch helpers shared by tasks: seeding, mixed precision, optimisers, gathering."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from tasks.base import TrainConfig

# Every task normalises inputs alike, so a backbone pretrained by one task (SimSiam) sees the
# same input statistics when another (detection) fine-tunes it.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def autocast(device: torch.device | str, amp: str) -> Iterator[None]:
    """bf16/fp16 autocast on CUDA; a no-op on CPU, where it would only slow small models down."""
    device = torch.device(device)
    if amp == "none" or device.type != "cuda":
        yield
        return
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    with torch.autocast(device_type="cuda", dtype=dtype):
        yield


def make_grad_scaler(device: torch.device | str, amp: str) -> torch.amp.GradScaler:
    """fp16 needs loss scaling; bf16 and fp32 do not (the scaler is then disabled)."""
    enabled = amp == "fp16" and torch.device(device).type == "cuda"
    return torch.amp.GradScaler("cuda", enabled=enabled)


def optimizer_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    scheduler: Any | None = None,
) -> None:
    """One (possibly loss-scaled) optimiser step, then the per-step LR schedule if any."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    if scheduler is not None:
        scheduler.step()


def build_optimizer(params: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay to zero, stepped once per optimiser step."""
    from functools import partial

    from tasks.common.schedules import warmup_cosine

    factor = partial(warmup_cosine, total_steps=total_steps, warmup_steps=warmup_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def gather_arrays(*arrays: np.ndarray) -> list[np.ndarray]:
    """Concatenate per-rank arrays on every rank (identity without a process group)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(arrays)
    gathered: list[Sequence[np.ndarray] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, list(arrays))
    return [np.concatenate([g[i] for g in gathered if g is not None]) for i in range(len(arrays))]


def unique_by_index(index: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    """Drop the duplicates a DistributedSampler pads with, ordered by sample index."""
    _, first = np.unique(index, return_index=True)
    return [index[first], *(a[first] for a in arrays)]


def gather_objects(items: list[Any]) -> list[Any]:
    """Concatenate per-rank Python lists on every rank (identity without a process group)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return items
    gathered: list[list[Any] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, items)
    return [x for part in gathered if part is not None for x in part]

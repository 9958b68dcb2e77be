"""Small torch helpers shared by tasks: seeding and RNG state, mixed precision, optimisers,
moving batches, and gathering per-rank results."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist

from tasks.base import TrainConfig

if TYPE_CHECKING:
    import pandas as pd

# Every task normalises inputs alike, so a backbone pretrained by one task (SimSiam) sees the
# same input statistics when another (detection) fine-tunes it.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) RNG states, for checkpoints."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned (CUDA states only where the device count matches)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def describe_device(device: torch.device | str) -> dict[str, str]:
    """{"device": "cuda:0", "gpu": "NVIDIA H200"} (no "gpu" on a CPU): what a run trained on."""
    device = torch.device(device)
    out = {"device": str(device)}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


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
    grad_clip: float | None = None,
) -> None:
    """One (possibly loss-scaled, clipped) optimiser step, then the per-step LR schedule."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip is not None:
        scaler.unscale_(optimizer)
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(optimizer)
    scaler.update()
    if scheduler is not None:
        scheduler.step()


def build_optimizer(groups: Iterable[Any], cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, Adam or SGD over parameters or param-group dicts, from `TrainConfig`."""
    params = list(groups)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def to_device(batch: Any, device: torch.device) -> Any:
    """Tensors of a (nested) batch moved to `device`; other values unchanged."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_arrays(*arrays: np.ndarray) -> list[np.ndarray]:
    """Concatenate per-rank arrays on every rank (identity without a process group)."""
    if not distributed():
        return list(arrays)
    gathered: list[Sequence[np.ndarray] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, list(arrays))
    return [np.concatenate([g[i] for g in gathered if g is not None]) for i in range(len(arrays))]


def gather_objects(items: list[Any]) -> list[Any]:
    """Concatenate per-rank Python lists on every rank (identity without a process group)."""
    if not distributed():
        return items
    gathered: list[list[Any] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, items)
    return [x for part in gathered if part is not None for x in part]


def gather_frame(frame: pd.DataFrame, key: str = "index") -> pd.DataFrame:
    """Per-rank prediction tables -> one table on every rank, each `key` exactly once, sorted.

    A DistributedSampler pads the last shard with repeated samples; they carry the same index,
    so keeping the first row per index removes them (never by comparing outputs).
    """
    import pandas as pd

    parts = gather_objects([frame]) if distributed() else [frame]
    merged = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    merged = merged.drop_duplicates(key, keep="first")
    return merged.sort_values(key, kind="stable").reset_index(drop=True)

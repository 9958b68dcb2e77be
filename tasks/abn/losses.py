"""Seed 003's losses: ABN cross-entropies, attention-map supervision and their two combinations.

With ``X_i`` an input slice, ``M`` the attention map and ``M'`` the lung mask:

- eq. (1) ``L_abn = L_att + L_per`` (cross-entropy of the attention and perception branches);
- eq. (2) ``L_map = ||M' - M||_2``, the L2 (Frobenius) norm of the difference per slice;
- eq. (3) baseline ``L_n = L_abn + gamma * L_map``;
- eq. (4) proposed ``L_d = (1 - alpha) * L_per + alpha * (L_map + L_att)``, with alpha switched
  from 0.9 to 0.1 half-way through training (eq. 5; the switch lives in the training schedule).

All losses are batch means and computed in float32 (safe under autocast).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from tasks.abn.model import ABNOutput

__all__ = ["abn_parts", "combine", "map_loss", "slice_probability"]

MapKind = Literal["l2", "mse"]
CombineMode = Literal["baseline", "dynamic"]


def map_loss(mask: Tensor, attention: Tensor, kind: MapKind = "l2") -> Tensor:
    """Attention-map supervision ``L_map`` (seed eq. 2), averaged over the batch.

    Args:
        mask: lung masks ``M'``, ``[B, 1, H, W]``, 0/1 float; resized to the attention map's size
            with area interpolation (the fraction of lung in each attention cell).
        attention: attention maps ``M``, ``[B, 1, h, w]``, in [0, 1].
        kind: ``"l2"``: per-sample L2 (Frobenius) norm ``||M' - M||_2``, then the batch mean
            (the seed's definition, the default); ``"mse"``: mean squared error over all cells.

    Raises:
        ValueError: shapes that do not fit ``[B, 1, *, *]`` with equal B, or an unknown kind.
    """
    if mask.ndim != 4 or attention.ndim != 4 or mask.shape[:2] != attention.shape[:2]:
        raise ValueError(
            f"mask and attention must both be [B, 1, H, W] with the same B, got "
            f"{tuple(mask.shape)} and {tuple(attention.shape)}"
        )
    if attention.shape[1] != 1:
        raise ValueError(f"attention must have 1 channel, got {attention.shape[1]}")
    target = mask.float()
    if target.shape[-2:] != attention.shape[-2:]:
        target = F.interpolate(target, size=attention.shape[-2:], mode="area")
    diff = target - attention.float()
    if kind == "l2":
        return torch.linalg.vector_norm(diff.flatten(1), dim=1).mean()
    if kind == "mse":
        return diff.pow(2).mean()
    raise ValueError(f"unknown map loss kind {kind!r}; expected 'l2' or 'mse'")


def abn_parts(
    out: ABNOutput, target: Tensor, mask: Tensor | None, map_kind: MapKind = "l2"
) -> dict[str, Tensor]:
    """The three loss terms of one batch.

    Args:
        out: the model's output.
        target: class indices ``[B]`` (int64).
        mask: lung masks ``[B, 1, H, W]`` or None (no map supervision: ``map`` is 0).
        map_kind: see `map_loss`.

    Returns:
        ``{"att": CE(att_logits), "per": CE(per_logits), "map": L_map}``, scalar tensors.
    """
    att = F.cross_entropy(out.att_logits.float(), target)
    per = F.cross_entropy(out.per_logits.float(), target)
    if mask is None:
        lmap = torch.zeros((), device=per.device, dtype=per.dtype)
    else:
        lmap = map_loss(mask, out.attention, map_kind)
    return {"att": att, "per": per, "map": lmap}


def combine(parts: dict[str, Tensor], mode: CombineMode, gamma: float, alpha: float) -> Tensor:
    """Total loss from `abn_parts`.

    Args:
        parts: ``att``, ``per`` and ``map`` terms.
        mode: ``"baseline"``: ``L_att + L_per + gamma * L_map`` (eq. 1, 3; alpha unused);
            ``"dynamic"``: ``(1 - alpha) * L_per + alpha * (L_map + L_att)`` (eq. 4; gamma
            unused).
        gamma: the baseline's map-loss scale.
        alpha: the dynamic weight in [0, 1] (0.9 then 0.1 in the seed).

    Raises:
        ValueError: unknown mode, or alpha outside [0, 1] in dynamic mode.
    """
    att, per, lmap = parts["att"], parts["per"], parts["map"]
    if mode == "baseline":
        return att + per + gamma * lmap
    if mode == "dynamic":
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        return (1.0 - alpha) * per + alpha * (lmap + att)
    raise ValueError(f"unknown loss mode {mode!r}; expected 'baseline' or 'dynamic'")


def slice_probability(out: ABNOutput) -> Tensor:
    """Probability of class 1 (COVID-19) per slice: softmax of the perception logits, ``[B]``."""
    return torch.softmax(out.per_logits.float(), dim=1)[:, 1]

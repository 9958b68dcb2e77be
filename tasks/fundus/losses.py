"""Losses of the glaucoma classifier: smoothed binary targets and the (alpha-balanced) focal loss.

Seed 002 smooths asymmetrically: glaucoma -> ``1 * (1 - alpha)``, non-glaucoma -> ``alpha / 2``
(so the two targets are not symmetric around 0.5). The standard symmetric form,
``y * (1 - alpha) + alpha / 2``, is offered too: glaucoma -> ``1 - alpha / 2``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["focal_bce", "smooth_targets"]


def smooth_targets(
    y: torch.Tensor, alpha: float, form: Literal["seed", "symmetric"] = "seed"
) -> torch.Tensor:
    """Soft targets of 0/1 labels ``y`` (see the module docstring for the two forms)."""
    if form == "seed":
        return y * (1 - alpha) + (1 - y) * (alpha / 2)
    if form == "symmetric":
        return y * (1 - alpha) + alpha / 2
    raise ValueError(f"unknown smoothing form {form!r}; expected 'seed' or 'symmetric'")


def focal_bce(
    logits: torch.Tensor, target: torch.Tensor, gamma: float, alpha: float | None = None
) -> torch.Tensor:
    """Mean binary focal loss on (soft) targets; ``gamma = 0`` and no alpha is plain BCE.

    Per case ``w * BCE(p, t)`` with ``w = (1 - p_t) ** gamma``, ``p_t = p t + (1 - p)(1 - t)``
    and, with ``alpha``, also ``alpha t + (1 - alpha)(1 - t)`` (Lin et al. 2017: ``alpha``
    weights the positive class, glaucoma).
    """
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    weight = (1 - p_t) ** gamma
    if alpha is not None:
        weight = weight * (alpha * target + (1 - alpha) * (1 - target))
    return (weight * bce).mean()

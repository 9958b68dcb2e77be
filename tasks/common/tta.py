"""Test-time augmentation (TTA) by flips, shared by every image-classification task.

Seed 002 predicts each test image several times (original, horizontally and vertically flipped)
and averages the predictions. We average **probabilities** (after sigmoid/softmax), never logits:
the mean of logits is dominated by one over-confident view (a logit of +12 outweighs two views at
-2 each), while the mean of probabilities is a vote weighted by confidence that stays in [0, 1]
and is what "average the predicted values" means in the seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

__all__ = ["FLIPS", "average_probabilities", "predict_tta", "tta_views"]

# Dimensions flipped for an NCHW batch: "h" mirrors left-right (width), "v" up-down (height).
FLIPS: dict[str, tuple[int, ...]] = {"h": (3,), "v": (2,), "hv": (2, 3)}


def _check_flips(flips: Sequence[str]) -> None:
    if isinstance(flips, str):  # "hv" would silently become "h" and "v"
        raise ValueError(f"flips must be a sequence of names, not the string {flips!r}")
    unknown = [f for f in flips if f not in FLIPS]
    if unknown:
        raise ValueError(f"unknown flip(s) {unknown}; expected some of {sorted(FLIPS)}")


def tta_views(x: Tensor, flips: Sequence[str]) -> list[Tensor]:
    """The views of an NCHW batch to predict: the identity first, then one per flip name.

    Args:
        x: images ``(N, C, H, W)``.
        flips: names from :data:`FLIPS` (``"h"``, ``"v"``, ``"hv"``); duplicates are kept.

    Returns:
        ``[x, flip(x, f1), flip(x, f2), ...]``.

    Raises:
        ValueError: ``x`` is not 4-D or a flip name is unknown.
    """
    if x.ndim != 4:
        raise ValueError(f"expected an NCHW batch, got shape {tuple(x.shape)}")
    _check_flips(flips)
    return [x, *(torch.flip(x, dims=FLIPS[f]) for f in flips)]


def average_probabilities(prob_list: Sequence[Tensor]) -> Tensor:
    """Element-wise mean of probability tensors of one shape (one per TTA view).

    Raises:
        ValueError: the list is empty, shapes differ, or a value lies outside [0, 1] (a sign
            that logits were passed by mistake).
    """
    if len(prob_list) == 0:
        raise ValueError("no predictions to average")
    shape = prob_list[0].shape
    if any(p.shape != shape for p in prob_list):
        raise ValueError(f"prediction shapes differ: {[tuple(p.shape) for p in prob_list]}")
    stacked = torch.stack([p.float() for p in prob_list])
    if stacked.numel() and (stacked.min() < 0 or stacked.max() > 1):
        raise ValueError("values outside [0, 1]: average probabilities, not logits")
    return stacked.mean(dim=0)


def predict_tta(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    flips: Sequence[str],
    activation: Literal["sigmoid", "softmax"],
) -> Tensor:
    """Probabilities of ``fn`` (a model returning logits) averaged over the identity and flips.

    Args:
        fn: maps an NCHW batch to logits ``(N, ...)``; softmax is taken over dimension 1.
        x: images ``(N, C, H, W)``.
        flips: flip names from :data:`FLIPS`; empty means no TTA (plain probabilities).
        activation: ``"sigmoid"`` for binary/multi-label logits, ``"softmax"`` for classes.

    Returns:
        The mean probability over the views, shaped like ``fn(x)``.
    """
    if activation not in ("sigmoid", "softmax"):
        raise ValueError(f"activation must be 'sigmoid' or 'softmax', got {activation!r}")
    probs = []
    for view in tta_views(x, flips):
        logits = fn(view).float()
        probs.append(torch.sigmoid(logits) if activation == "sigmoid" else logits.softmax(dim=1))
    return average_probabilities(probs)

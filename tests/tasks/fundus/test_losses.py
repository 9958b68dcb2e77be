"""Seed 002's label smoothing, its symmetric form and the focal loss, by hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tasks.fundus.losses import focal_bce, smooth_targets

Y = torch.tensor([1.0, 0.0])


def test_seed_smoothing_glaucoma_one_minus_alpha_normal_alpha_half() -> None:
    assert smooth_targets(Y, 0.1).tolist() == pytest.approx([0.9, 0.05])
    assert smooth_targets(Y, 0.15, "seed").tolist() == pytest.approx([0.85, 0.075])
    assert smooth_targets(Y, 0.0).tolist() == [1.0, 0.0]


def test_symmetric_smoothing_moves_both_by_alpha_half() -> None:
    assert smooth_targets(Y, 0.1, "symmetric").tolist() == pytest.approx([0.95, 0.05])
    with pytest.raises(ValueError, match="unknown smoothing"):
        smooth_targets(Y, 0.1, "other")  # type: ignore[arg-type]


def _bce(p: float, t: float) -> float:
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def test_focal_loss_by_hand() -> None:
    logits = torch.tensor([0.0, 2.0])  # p = 0.5 and sigmoid(2) = 0.8808
    target = torch.tensor([1.0, 0.0])
    p2 = 1 / (1 + math.exp(-2.0))
    # gamma 2: (1 - p_t)^2 * BCE; p_t = 0.5 for the first case, 1 - p2 for the second
    expected = (0.25 * _bce(0.5, 1.0) + p2**2 * _bce(p2, 0.0)) / 2
    assert focal_bce(logits, target, gamma=2.0).item() == pytest.approx(expected, rel=1e-5)
    # alpha 0.25 weights glaucoma by 0.25 and non-glaucoma by 0.75
    weighted = (0.25 * 0.25 * _bce(0.5, 1.0) + 0.75 * p2**2 * _bce(p2, 0.0)) / 2
    got = focal_bce(logits, target, gamma=2.0, alpha=0.25).item()
    assert got == pytest.approx(weighted, rel=1e-5)


def test_focal_loss_without_focusing_is_bce_and_down_weights_easy_cases() -> None:
    logits = torch.tensor([3.0, -1.0, 0.5])
    target = smooth_targets(torch.tensor([1.0, 0.0, 1.0]), 0.1)
    plain = F.binary_cross_entropy_with_logits(logits, target)
    assert focal_bce(logits, target, gamma=0.0).item() == pytest.approx(plain.item(), rel=1e-6)
    assert focal_bce(logits, target, gamma=2.0).item() < plain.item()

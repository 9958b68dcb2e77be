"""Seed 003 losses against values computed by hand on tiny tensors."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch

from tasks.abn.losses import abn_parts, combine, map_loss, slice_probability
from tasks.abn.model import ABNOutput


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny tensors: OpenMP threads only contend on the shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _out(per: list[list[float]], att: list[list[float]], attention: torch.Tensor) -> ABNOutput:
    b = attention.shape[0]
    return ABNOutput(
        torch.tensor(per), torch.tensor(att), attention, torch.zeros(b, 2, *attention.shape[-2:])
    )


def test_l2_map_loss_is_the_per_sample_frobenius_norm_averaged() -> None:
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]], [[[1.0, 1.0], [0.0, 0.0]]]])
    attention = torch.tensor([[[[0.5, 0.5], [0.5, 0.5]]], [[[1.0, 1.0], [0.0, 0.0]]]])
    # Sample 1: four differences of 0.5 -> sqrt(4 * 0.25) = 1; sample 2: identical -> 0.
    assert map_loss(mask, attention).item() == pytest.approx(0.5)
    assert map_loss(mask, attention, "l2").item() == pytest.approx(0.5)
    # MSE over all 8 cells: 4 * 0.25 / 8.
    assert map_loss(mask, attention, "mse").item() == pytest.approx(0.125)


def test_mask_is_area_resized_to_the_attention_map() -> None:
    mask = torch.zeros(1, 1, 4, 4)
    mask[0, 0, :2, :2] = 1.0  # the top-left cell is all lung
    mask[0, 0, 3, 3] = 1.0  # a quarter of the bottom-right cell
    attention = torch.zeros(1, 1, 2, 2)
    # Resized mask [[1, 0], [0, 0.25]] -> sqrt(1 + 0.0625).
    assert map_loss(mask, attention).item() == pytest.approx(math.sqrt(1.0625))
    assert map_loss(mask, attention, "mse").item() == pytest.approx(1.0625 / 4)


def test_map_loss_gradient_is_finite_at_a_perfect_match() -> None:
    attention = torch.ones(1, 1, 2, 2, requires_grad=True)
    map_loss(torch.ones(1, 1, 2, 2), attention).backward()
    assert attention.grad is not None and torch.isfinite(attention.grad).all()


def test_map_loss_rejects_bad_shapes_and_kinds() -> None:
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
        map_loss(torch.zeros(2, 1, 4, 4), torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="1 channel"):
        map_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 2, 2))
    with pytest.raises(ValueError, match="unknown map loss"):
        map_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), "l1")  # type: ignore[arg-type]


def test_abn_parts_cross_entropies_and_map() -> None:
    attention = torch.full((1, 1, 2, 2), 0.5)
    out = _out([[0.0, 0.0]], [[math.log(3.0), 0.0]], attention)
    target = torch.tensor([0])
    parts = abn_parts(out, target, None)
    assert parts["per"].item() == pytest.approx(math.log(2.0))  # uniform softmax
    assert parts["att"].item() == pytest.approx(math.log(4.0 / 3.0))  # softmax [3/4, 1/4]
    assert parts["map"].item() == 0.0
    parts = abn_parts(out, target, torch.ones(1, 1, 2, 2))
    assert parts["map"].item() == pytest.approx(1.0)  # sqrt(4 * 0.25)
    assert abn_parts(out, target, torch.ones(1, 1, 2, 2), "mse")["map"].item() == pytest.approx(
        0.25
    )


def test_abn_parts_are_float32_under_half_precision_outputs() -> None:
    out = ABNOutput(
        torch.zeros(2, 2, dtype=torch.float16),
        torch.zeros(2, 2, dtype=torch.bfloat16),
        torch.full((2, 1, 2, 2), 0.5, dtype=torch.float16),
        torch.zeros(2, 2, 2, 2),
    )
    parts = abn_parts(out, torch.tensor([0, 1]), torch.ones(2, 1, 4, 4))
    assert all(v.dtype == torch.float32 for v in parts.values())


def test_combine_baseline_and_dynamic() -> None:
    parts = {"att": torch.tensor(1.0), "per": torch.tensor(2.0), "map": torch.tensor(3.0)}
    # eq. (1), (3): L_att + L_per + gamma * L_map; alpha plays no part.
    assert combine(parts, "baseline", gamma=0.5, alpha=0.9).item() == pytest.approx(4.5)
    assert combine(parts, "baseline", gamma=0.5, alpha=0.1).item() == pytest.approx(4.5)
    # eq. (4): (1 - alpha) L_per + alpha (L_map + L_att); gamma plays no part.
    assert combine(parts, "dynamic", gamma=0.5, alpha=0.9).item() == pytest.approx(3.8)
    assert combine(parts, "dynamic", gamma=7.0, alpha=0.1).item() == pytest.approx(2.2)
    with pytest.raises(ValueError, match="alpha"):
        combine(parts, "dynamic", gamma=1.0, alpha=1.5)
    with pytest.raises(ValueError, match="unknown loss mode"):
        combine(parts, "static", gamma=1.0, alpha=0.5)  # type: ignore[arg-type]


def test_slice_probability_is_the_class_1_softmax_of_the_perception_branch() -> None:
    out = _out(
        [[0.0, math.log(3.0)], [5.0, 5.0]], [[9.0, -9.0], [9.0, -9.0]], torch.zeros(2, 1, 1, 1)
    )
    torch.testing.assert_close(slice_probability(out), torch.tensor([0.75, 0.5]))

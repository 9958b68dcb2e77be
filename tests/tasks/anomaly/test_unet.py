"""tasks.anomaly.unet: shapes, the std floor, the Gaussian NLL against hand values, z-scores."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch

from tasks.anomaly.unet import UNet, gaussian_nll, zscore


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny tensors: OpenMP threads only contend on the shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("up", ["bilinear", "transposed"])
@pytest.mark.parametrize("hw", [(32, 32), (30, 34)])
def test_shapes_and_positive_std(up: str, hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = UNet(levels=3, width=4, std_floor=0.05, up=up)  # type: ignore[arg-type]
    mean, std = model(torch.randn(2, 1, *hw))
    assert mean.shape == std.shape == (2, 1, *hw)
    assert (std >= 0.05).all()


def test_std_floor_is_the_lower_bound() -> None:
    model = UNet(levels=2, width=4, std_floor=0.1)
    model.head.bias = torch.nn.Parameter(torch.tensor([0.0, -100.0]))  # raw std -> -inf
    _, std = model(torch.randn(1, 1, 16, 16))
    assert torch.allclose(std, torch.full_like(std, 0.1))
    with pytest.raises(ValueError, match="std_floor"):
        UNet(std_floor=0.0)


def test_gaussian_nll_hand_values() -> None:
    # mean 1, std 2, target 3: 0.5 log(2 pi) + log 2 + 0.5 * ((3 - 1) / 2)^2 = 2.11208571
    mean = torch.tensor([[1.0, 0.0]])
    std = torch.tensor([[2.0, 0.5]])
    target = torch.tensor([[3.0, 0.0]])
    first = 0.5 * math.log(2 * math.pi) + math.log(2.0) + 0.5
    second = 0.5 * math.log(2 * math.pi) + math.log(0.5)  # exact prediction: no squared term
    assert first == pytest.approx(2.11208571)
    mask = torch.tensor([[True, False]])
    assert gaussian_nll(mean, std, target, mask).item() == pytest.approx(first, rel=1e-6)
    assert gaussian_nll(mean, std, target).item() == pytest.approx((first + second) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="no pixel"):
        gaussian_nll(mean, std, target, torch.zeros(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="shapes differ"):
        gaussian_nll(mean, std, target[:, :1])


def test_zscore() -> None:
    z = zscore(torch.tensor([1.0, 2.0]), torch.tensor([0.5, 2.0]), torch.tensor([2.5, 0.0]))
    assert z.tolist() == [3.0, -1.0]


def test_learns_larger_std_where_the_target_is_noisier() -> None:
    # Input: 0 on the left half, 1 on the right; target noise has std 0.1 left and 1.0 right.
    torch.manual_seed(1)
    x = torch.zeros(8, 1, 16, 16)
    x[..., 8:] = 1.0
    noise_std = 0.1 + 0.9 * x
    model = UNet(levels=2, width=8)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        mean, std = model(x)
        loss = gaussian_nll(mean, std, torch.randn_like(x) * noise_std)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # Train-mode output (batch statistics): 30 steps are too few for BN's running averages.
    assert losses[-1] < losses[0] - 0.3
    assert std[..., 2:-2, 10:14].mean() > 2 * std[..., 2:-2, 2:6].mean()

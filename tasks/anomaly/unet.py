"""A small 2-D U-Net that predicts the normal PET value and its uncertainty from CT (seed 001).

Seed 001 trains a U-Net on normal FDG-PET/CT cases only: from the CT slice it predicts, per
pixel, the expected SUV and its standard error under normal anatomy. Trained with the Gaussian
negative log-likelihood, the predicted std learns where normal uptake varies (heart, kidneys,
per-patient gain). At test time ``zscore(mean, std, pet)`` measures how far the observed PET lies
above what the CT explains; seed 001 thresholds it at 3.0 and takes connected components as
candidates (:mod:`tasks.common.froc`).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["UNet", "gaussian_nll", "zscore"]

Up = Literal["bilinear", "transposed"]


def _block(cin: int, cout: int) -> nn.Sequential:
    """(conv3x3 - BN - ReLU) x 2."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _UpBlock(nn.Module):
    """Upsample the coarse map to the skip's size, concatenate, conv block."""

    def __init__(self, cin: int, cskip: int, cout: int, up: Up) -> None:
        super().__init__()
        self.up_mode = up
        self.up = nn.ConvTranspose2d(cin, cin, 2, stride=2) if up == "transposed" else None
        self.block = _block(cin + cskip, cout)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        size = skip.shape[-2:]
        if self.up is not None:
            x = self.up(x)
            # Odd sizes: the transposed conv undershoots by a pixel; pad right/bottom.
            x = F.pad(x, (0, size[1] - x.shape[-1], 0, size[0] - x.shape[-2]))
        else:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.block(torch.cat([x, skip], dim=1))


class UNet(nn.Module):
    """U-Net mapping an image (CT) to the per-pixel mean and std of another (PET).

    Args:
        in_channels: input channels (1 for a CT slice).
        levels: resolution levels including the bottleneck (``levels - 1`` poolings).
        width: channels at the first level, doubled per level.
        std_floor: added to ``softplus(raw)``: the smallest std the model can claim, so the NLL
            and the z-score stay finite on flat regions.
        up: ``"bilinear"`` interpolation or ``"transposed"`` convolution for upsampling.

    ``forward(x)`` returns ``(mean, std)``, each [B, 1, H, W]. Any H, W work; sizes divisible by
    ``2**(levels - 1)`` avoid rounding at the poolings.
    """

    def __init__(
        self,
        in_channels: int = 1,
        levels: int = 4,
        width: int = 32,
        std_floor: float = 1e-2,
        up: Up = "bilinear",
    ) -> None:
        super().__init__()
        if levels < 1 or width < 1 or in_channels < 1:
            raise ValueError(f"levels, width, in_channels must be >= 1: {levels}, {width}")
        if not std_floor > 0:
            raise ValueError(f"std_floor must be > 0, got {std_floor}")
        if up not in ("bilinear", "transposed"):
            raise ValueError(f"up must be 'bilinear' or 'transposed', got {up!r}")
        self.std_floor = std_floor
        widths = [width * 2**i for i in range(levels)]
        self.down = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.down.append(_block(cin, w))
            cin = w
        self.ups = nn.ModuleList(
            _UpBlock(widths[i + 1], widths[i], widths[i], up) for i in reversed(range(levels - 1))
        )
        self.head = nn.Conv2d(widths[0], 2, 1)
        # Start at std ~ 1 (softplus(0.55) ~ 1): a neutral scale for standardised targets.
        nn.init.zeros_(self.head.weight)
        self.head.bias = nn.Parameter(torch.tensor([0.0, math.log(math.e - 1.0)]))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, std)``, each [B, 1, H, W]; ``std >= std_floor``."""
        skips: list[Tensor] = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for up, skip in zip(self.ups, reversed(skips[:-1]), strict=True):
            x = up(x, skip)
        out = self.head(x)
        return out[:, :1], F.softplus(out[:, 1:]) + self.std_floor


def gaussian_nll(mean: Tensor, std: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean Gaussian negative log-likelihood per pixel (nats), over ``mask`` where given.

    ``0.5 * log(2 pi) + log(std) + 0.5 * ((target - mean) / std)**2``, via
    ``torch.nn.functional.gaussian_nll_loss`` on the variance with ``full=True``.

    Args:
        mean, std, target: tensors of one shape (std > 0).
        mask: optional bool/0-1 tensor of that shape (e.g. the body): only those pixels count.

    Raises:
        ValueError: shapes differ, or the mask selects no pixel.
    """
    if not (mean.shape == std.shape == target.shape):
        raise ValueError(f"shapes differ: {mean.shape}, {std.shape}, {target.shape}")
    # eps well below std_floor**2, so the library's variance clamp never changes the value.
    nll = F.gaussian_nll_loss(mean, target, std**2, full=True, eps=1e-12, reduction="none")
    if mask is None:
        return nll.mean()
    if mask.shape != nll.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} differs from {tuple(nll.shape)}")
    weight = mask.to(nll.dtype)
    total = weight.sum()
    if total == 0:
        raise ValueError("mask selects no pixel")
    return (nll * weight).sum() / total


def zscore(mean: Tensor, std: Tensor, target: Tensor) -> Tensor:
    """``(target - mean) / std``: how unusual the observed value is under the predicted normal."""
    return (target - mean) / std

"""A small multi-scale Glow (Kingma & Dhariwal 2018) for likelihood-based anomaly detection.

Seed 001 scores chest X-rays by their likelihood under a Glow trained on normal images only
(ROC-AUC 0.783) and shows radiologists "anomaly emphasis" images. The model follows the reference
code (openai/glow): per level a squeeze (2x2 space-to-depth), ``depth`` flow steps of ActNorm ->
invertible 1x1 convolution -> affine coupling, then a split whose removed half gets a learned
Gaussian prior conditioned on the kept half; the last level ends in a learned per-channel prior.

Conventions:

* ``forward(x)`` works on preprocessed input (see :func:`preprocess`): ``x`` in about
  [-0.5, 0.5]. ``logdet`` and ``log_p`` are per image, in nats; ``log_prob(x) = log_p + logdet``
  is the log-density of ``x`` in that continuous space. Add the constant returned by
  :func:`preprocess` to get the discrete log-likelihood of the 8-bit image (what bits/dim report).
* ``z_list`` holds the raw split-off latents (level 0 first) and the top latent last;
  ``reverse(z_list)`` inverts ``forward`` exactly (up to rounding).
* ActNorm initialises itself from the first batch it sees (data-dependent init). Under DDP run one
  forward pass on every rank's data *before* wrapping the model, or load a checkpoint, otherwise
  the ranks start from different ActNorm parameters.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "ActNorm",
    "AffineCoupling",
    "FlowStep",
    "Glow",
    "InvConv2d",
    "ZeroConv2d",
    "bits_per_dim",
    "gaussian_log_density",
    "preprocess",
]

_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_density(z: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """Elementwise ``log N(z; mean, exp(log_std)^2)`` (same shape as ``z``)."""
    return -0.5 * (_LOG_2PI + 2.0 * log_std + (z - mean) ** 2 * torch.exp(-2.0 * log_std))


class ActNorm(nn.Module):
    """Per-channel affine ``y = (x + loc) * exp(logs)`` with data-dependent initialisation.

    The first forward pass sets ``loc``/``logs`` so that the batch has zero mean and unit variance
    per channel. The ``initialized`` buffer is part of the state dict, so a loaded model is never
    re-initialised.
    """

    initialized: Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))
        self._ready = False  # cache of `initialized`, avoids a device sync on every call

    @property
    def ready(self) -> bool:
        """Whether the data-dependent initialisation has happened (or was loaded)."""
        if not self._ready:
            self._ready = bool(self.initialized.item())
        return self._ready

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set ``loc``/``logs`` from the batch ``x`` ([B, C, H, W])."""
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
        self.loc.copy_(-mean)
        self.logs.copy_(-torch.log(std + 1e-6))
        self.initialized.fill_(1)
        self._ready = True

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._ready = False  # the loaded buffer decides
        super()._load_from_state_dict(*args, **kwargs)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(y, logdet)``; logdet has shape [B]."""
        if not self.ready:
            self.initialize(x)
        logdet = x.shape[2] * x.shape[3] * self.logs.sum()
        return (x + self.loc) * torch.exp(self.logs), logdet.expand(x.shape[0])

    def reverse(self, y: Tensor) -> Tensor:
        """Inverse of :meth:`forward`."""
        return y * torch.exp(-self.logs) - self.loc


class InvConv2d(nn.Module):
    """Invertible 1x1 convolution, optionally LU-parametrised (``W = P L (U + diag(s))``).

    The LU form makes ``log|det W| = sum(log|s|)`` O(C) instead of an O(C^3) determinant; ``P`` and
    ``sign(s)`` are fixed buffers. Both forms start from a random rotation (``log|det W| = 0``).
    """

    p: Tensor
    sign_s: Tensor
    l_mask: Tensor
    eye: Tensor

    def __init__(self, channels: int, lu: bool = True) -> None:
        super().__init__()
        self.lu = lu
        w = torch.linalg.qr(torch.randn(channels, channels))[0]
        if not lu:
            self.weight = nn.Parameter(w)
            return
        p, lower, upper = torch.linalg.lu(w)
        s = torch.diagonal(upper)
        self.register_buffer("p", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("l_mask", torch.tril(torch.ones(channels, channels), -1))
        self.register_buffer("eye", torch.eye(channels))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(torch.abs(s)))

    def weight_and_logdet(self) -> tuple[Tensor, Tensor]:
        """The [C, C] weight and ``log|det W|`` (a scalar)."""
        if not self.lu:
            # float64 determinant: float32 slogdet drifts for larger C.
            logdet = torch.linalg.slogdet(self.weight.double())[1].to(self.weight.dtype)
            return self.weight, logdet
        lower = self.lower * self.l_mask + self.eye
        upper = self.upper * self.l_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.p @ lower @ upper, self.log_s.sum()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(y, logdet)``; logdet has shape [B]."""
        w, logdet = self.weight_and_logdet()
        y = F.conv2d(x, w[:, :, None, None])
        return y, (x.shape[2] * x.shape[3] * logdet).expand(x.shape[0])

    def reverse(self, y: Tensor) -> Tensor:
        """Inverse of :meth:`forward` (the inverse weight is computed in float64)."""
        w, _ = self.weight_and_logdet()
        w_inv = torch.linalg.inv(w.double()).to(w.dtype)
        return F.conv2d(y, w_inv[:, :, None, None])


class ZeroConv2d(nn.Module):
    """3x3 convolution initialised to output zeros, with the reference's learned log-scale."""

    def __init__(self, in_channels: int, out_channels: int, logscale_factor: float = 3.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        for param in self.conv.parameters():
            nn.init.zeros_(param)
        self.logs = nn.Parameter(torch.zeros(1, out_channels, 1, 1))
        self.logscale_factor = logscale_factor

    def forward(self, x: Tensor) -> Tensor:
        """``conv(x) * exp(logscale_factor * logs)``."""
        return self.conv(x) * torch.exp(self.logs * self.logscale_factor)


class AffineCoupling(nn.Module):
    """Affine coupling: the second half of the channels is shifted and scaled by a function of the
    first half. NN = conv3x3-ReLU-conv1x1-ReLU-ZeroConv3x3; ``scale = sigmoid(h + 2)`` as in the
    reference code (bounded in (0, 1), close to 0.88 at init, which keeps early training stable).
    """

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        half = channels // 2
        self.net = nn.Sequential(
            nn.Conv2d(half, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 1),
            nn.ReLU(inplace=True),
            ZeroConv2d(width, 2 * (channels - half)),
        )

    def _shift_logscale(self, xa: Tensor) -> tuple[Tensor, Tensor]:
        h = self.net(xa)
        # Interleaved split ("cross") as in openai/glow.
        return h[:, 0::2], F.logsigmoid(h[:, 1::2] + 2.0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(y, logdet)``; logdet has shape [B]."""
        xa, xb = x.chunk(2, dim=1)
        shift, log_scale = self._shift_logscale(xa)
        yb = (xb + shift) * torch.exp(log_scale)
        return torch.cat([xa, yb], dim=1), log_scale.flatten(1).sum(1)

    def reverse(self, y: Tensor) -> Tensor:
        """Inverse of :meth:`forward`."""
        ya, yb = y.chunk(2, dim=1)
        shift, log_scale = self._shift_logscale(ya)
        return torch.cat([ya, yb * torch.exp(-log_scale) - shift], dim=1)


class FlowStep(nn.Module):
    """One Glow step: ActNorm -> invertible 1x1 conv -> affine coupling."""

    def __init__(self, channels: int, width: int, lu: bool = True) -> None:
        super().__init__()
        self.actnorm = ActNorm(channels)
        self.invconv = InvConv2d(channels, lu=lu)
        self.coupling = AffineCoupling(channels, width)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(y, logdet)``; logdet has shape [B]."""
        x, ld1 = self.actnorm(x)
        x, ld2 = self.invconv(x)
        x, ld3 = self.coupling(x)
        return x, ld1 + ld2 + ld3

    def reverse(self, y: Tensor) -> Tensor:
        """Inverse of :meth:`forward`."""
        return self.actnorm.reverse(self.invconv.reverse(self.coupling.reverse(y)))


class Glow(nn.Module):
    """Multi-scale Glow: ``levels`` x (squeeze, ``depth`` flow steps, split with learned prior).

    Args:
        in_channels: image channels (1 for X-rays).
        levels: number of scales; image height and width must be divisible by ``2**levels``.
        depth: flow steps per level.
        width: hidden channels of the coupling networks.
        lu: LU-parametrised 1x1 convolutions.
        checkpointing: recompute each flow step in the backward pass instead of storing its
            activations (``torch.utils.checkpoint``): one extra forward pass per step for much
            less memory (256 px on CPU: +253 MiB instead of +927 MiB per step, see
            ``benchmarks/bench_glow.py``), so 256-512 px images fit.
    """

    def __init__(
        self,
        in_channels: int = 3,
        levels: int = 3,
        depth: int = 8,
        width: int = 128,
        lu: bool = True,
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if in_channels < 1 or levels < 1 or depth < 1 or width < 1:
            raise ValueError(
                "in_channels, levels, depth and width must be >= 1, got "
                f"{in_channels}, {levels}, {depth}, {width}"
            )
        self.in_channels, self.n_levels, self.checkpointing = in_channels, levels, checkpointing
        self.flows = nn.ModuleList()
        self.split_priors = nn.ModuleList()
        c = in_channels
        for level in range(levels):
            c *= 4
            self.flows.append(nn.ModuleList(FlowStep(c, width, lu) for _ in range(depth)))
            if level < levels - 1:
                # Mean and log-std of the split-off half, conditioned on the kept half.
                self.split_priors.append(ZeroConv2d(c // 2, c))
                c //= 2
        self.top_prior = nn.Parameter(torch.zeros(1, 2 * c, 1, 1))  # learned per-channel prior

    def _check(self, x: Tensor) -> None:
        k = 2**self.n_levels
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected [B, {self.in_channels}, H, W], got {tuple(x.shape)}")
        if x.shape[2] % k or x.shape[3] % k:
            raise ValueError(
                f"height and width must be divisible by 2**levels = {k}, got {tuple(x.shape[2:])}"
            )

    def _steps(self, level: int) -> list[FlowStep]:
        return [cast(FlowStep, s) for s in cast(nn.ModuleList, self.flows[level])]

    def _step(self, step: FlowStep, h: Tensor) -> tuple[Tensor, Tensor]:
        # The first call initialises ActNorm, which must not run inside a checkpointed region.
        if self.checkpointing and torch.is_grad_enabled() and step.actnorm.ready:
            out: tuple[Tensor, Tensor] = checkpoint(step, h, use_reentrant=False)
            return out
        return step(h)

    def _prior(self, level: int, h: Tensor) -> tuple[Tensor, Tensor]:
        if level < self.n_levels - 1:
            p = self.split_priors[level](h)
        else:
            p = self.top_prior.expand(h.shape[0], -1, h.shape[2], h.shape[3])
        return p[:, 0::2], p[:, 1::2]

    def encode(self, x: Tensor) -> tuple[list[Tensor], Tensor, list[Tensor]]:
        """``(z_list, logdet, log_p_terms)``: the elementwise prior log-densities of every latent.

        ``log_p_terms[i]`` has the shape of ``z_list[i]``; their sum per image is ``log_p``.
        """
        self._check(x)
        logdet = x.new_zeros(x.shape[0])
        zs: list[Tensor] = []
        terms: list[Tensor] = []
        h = x
        for level in range(self.n_levels):
            h = F.pixel_unshuffle(h, 2)
            for step in self._steps(level):
                h, ld = self._step(step, h)
                logdet = logdet + ld
            if level < self.n_levels - 1:
                h, z = h.chunk(2, dim=1)
            else:
                z = h
            mean, log_std = self._prior(level, h)
            zs.append(z)
            terms.append(gaussian_log_density(z, mean, log_std))
        return zs, logdet, terms

    def forward(self, x: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        """``(z_list, logdet, log_p)``; ``logdet`` and ``log_p`` have shape [B] (nats)."""
        zs, logdet, terms = self.encode(x)
        log_p = torch.stack([t.flatten(1).sum(1) for t in terms]).sum(0)
        return zs, logdet, log_p

    def reverse(self, z_list: list[Tensor]) -> Tensor:
        """Map latents (as returned by :meth:`forward`) back to an image."""
        if len(z_list) != self.n_levels:
            raise ValueError(f"expected {self.n_levels} latents, got {len(z_list)}")
        h = z_list[-1]
        for level in reversed(range(self.n_levels)):
            if level < self.n_levels - 1:
                h = torch.cat([h, z_list[level]], dim=1)
            for step in reversed(self._steps(level)):
                h = step.reverse(h)
            h = F.pixel_shuffle(h, 2)
        return h

    def log_prob(self, x: Tensor) -> Tensor:
        """Per-image log-density of ``x`` (continuous, nats): ``log_p + logdet``."""
        _, logdet, log_p = self(x)
        return log_p + logdet

    def pixel_nll_map(self, x: Tensor) -> Tensor:
        """Per-pixel share of the negative log-likelihood, [B, H, W]; sums to ``-log_prob(x)``.

        Decomposition: a latent of level ``l`` sits on a grid ``2**(l+1)`` times coarser than the
        image and describes that block of pixels (its squeeze footprint), so each latent's
        ``-log N(z)`` term is summed over channels and spread evenly over its block. The
        log-determinant has no spatial address in general (1x1 convs and ActNorm are global,
        couplings mix neighbours), so ``-logdet`` is spread uniformly over all pixels. The map is
        therefore exact in total and localised to the resolution of each level.
        """
        _, logdet, terms = self.encode(x)
        height, width = x.shape[2], x.shape[3]
        out = (-logdet / (height * width))[:, None, None].expand(-1, height, width)
        for term in terms:
            factor = height // term.shape[2]
            per_pos = -term.sum(dim=1, keepdim=True) / factor**2
            out = out + F.interpolate(per_pos, scale_factor=factor, mode="nearest")[:, 0]
        return out


def preprocess(x: Tensor, n_bits: int = 8, noise: bool = True) -> tuple[Tensor, Tensor]:
    """Dequantise 8-bit images for the flow: ``y = (x_k + u) / 2**n_bits - 0.5``.

    ``x_k`` is the image reduced to ``n_bits`` (``floor(x / 2**(8 - n_bits))``) and ``u`` is
    uniform noise in [0, 1) when ``noise`` (training: the continuous density then lower-bounds the
    discrete likelihood) or 0.5 otherwise (the bin centre: deterministic evaluation).

    Args:
        x: uint8 images (0..255) or floats in [0, 1] (``uint8 / 255``), any shape [B, ...].
        n_bits: bits kept per value (1..8).
        noise: add uniform dequantisation noise.

    Returns:
        ``(y, logdet)``: ``y`` as float32, and per image the log-determinant of the scaling,
        ``-D * n_bits * log 2`` with ``D`` the values per image; add it to the model's
        ``log_prob(y)`` for the discrete log-likelihood.
    """
    if not 1 <= n_bits <= 8:
        raise ValueError(f"n_bits must be in 1..8, got {n_bits}")
    if x.dtype == torch.uint8:
        levels = x.float()
    elif x.is_floating_point():
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise ValueError("float images must lie in [0, 1] (uint8 / 255)")
        levels = torch.round(x.float() * 255.0)
    else:
        raise ValueError(f"expected uint8 or float images, got {x.dtype}")
    bins = 2.0**n_bits
    levels = torch.floor(levels / 2.0 ** (8 - n_bits))
    u = torch.rand_like(levels) if noise else torch.full_like(levels, 0.5)
    y = (levels + u) / bins - 0.5
    dims = x[0].numel() if x.shape[0] else 0
    logdet = torch.full((x.shape[0],), -dims * math.log(bins), device=x.device)
    return y, logdet


def bits_per_dim(log_p_total: Tensor, n_pixels_per_image: int) -> Tensor:
    """Bits per dimension ``-log_p_total / (D log 2)`` from a log-likelihood in nats.

    ``n_pixels_per_image`` is ``D``, the number of values per image: ``C * H * W`` (every channel
    of every pixel counts; for grayscale this is the pixel count).
    """
    if n_pixels_per_image < 1:
        raise ValueError(f"n_pixels_per_image must be >= 1, got {n_pixels_per_image}")
    return -log_p_total / (n_pixels_per_image * math.log(2.0))

"""The SimSiam network (pooled timm encoder, projector, predictor) and its loss."""

from __future__ import annotations

import itertools
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn


# --------------------------------------------------------------------------------------------
def _mlp(sizes: list[int], last_bn: bool, last_bias: bool) -> nn.Sequential:
    """Linear-BN-ReLU blocks; the last Linear gets an optional affine-free BN (projector)."""
    layers: list[nn.Module] = []
    for i, (cin, cout) in enumerate(itertools.pairwise(sizes)):
        last = i == len(sizes) - 2
        layers.append(nn.Linear(cin, cout, bias=last and last_bias))
        if not last:
            layers += [nn.BatchNorm1d(cout), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(cout, affine=False))
    return nn.Sequential(*layers)


class SimSiam(nn.Module):
    """Pooled timm encoder, 3-layer projector (BN on every layer), 2-layer bottleneck predictor."""

    def __init__(self, backbone: str = "resnet18", proj_dim: int = 512, pred_dim: int = 128):
        super().__init__()
        import timm

        self.encoder = timm.create_model(backbone, num_classes=0, pretrained=False)
        width = cast(int, self.encoder.num_features)
        self.projector = _mlp([width, width, width, proj_dim], last_bn=True, last_bias=False)
        self.predictor = _mlp([proj_dim, pred_dim, proj_dim], last_bn=False, last_bias=True)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))

    def forward(
        self, x1: torch.Tensor, x2: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(p1, p2, z1, z2): predictions and projections of both views (z not detached)."""
        z1, z2 = self.project(x1), self.project(x2)
        return self.predictor(z1), self.predictor(z2), z1, z2


def simsiam_loss_per_sample(
    p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor
) -> torch.Tensor:
    """Per-image symmetric negative cosine similarity, stop-gradient on the targets z."""

    def d(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return -F.cosine_similarity(p.float(), z.detach().float(), dim=-1)

    return 0.5 * d(p1, z2) + 0.5 * d(p2, z1)


def simsiam_loss(
    p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor
) -> torch.Tensor:
    """The SimSiam loss of a batch (in [-1, 1])."""
    return simsiam_loss_per_sample(p1, p2, z1, z2).mean()


def normalized_std(z: torch.Tensor) -> float:
    """Mean per-channel std of L2-normalised outputs (the paper's collapse indicator)."""
    return float(F.normalize(z.float(), dim=1).std(dim=0).mean())

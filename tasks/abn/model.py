"""Attention Branch Network (Fukui et al., CVPR 2019) on a ResNet-like timm backbone (seed 003).

The backbone is cut after its stride-16 stage (``layer3`` for ResNets). From there:

- the **attention branch** runs a residual block at the stage-3 width, BN, a 1x1 conv to K
  (= number of classes) response channels with BN + ReLU, then a 1x1 conv K -> K whose global
  average pool gives the attention-branch logits (``maps`` are these K pre-pooling maps, i.e. the
  class activation maps of the branch), and the attention map
  ``M = sigmoid(BN(conv1x1_{K->1}(relu features)))``, shape ``[B, 1, h, w]`` at stride 16;
- the **perception branch** re-weights the features by ``(1 + M)`` (the residual attention
  mechanism of the paper, so M = 0 keeps the features), runs the backbone's last stage
  (``layer4``), global average pooling and a linear classifier.

The layout follows the authors' reference code (``att_layer4``, ``bn_att``, ``att_conv``,
``bn_att2``, ``att_conv2``, ``att_conv3``/``bn_att3``), except that M comes from a 1x1 conv as in
the paper's text, and the attention block is one residual block instead of a full stage.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from tasks.common.weights import load_backbone_weights

__all__ = ["ABNOutput", "AttentionBlock", "AttentionBranchNetwork"]


class ABNOutput(NamedTuple):
    """What `AttentionBranchNetwork.forward` returns (K = number of classes)."""

    per_logits: Tensor  # [B, K] perception-branch logits (the prediction)
    att_logits: Tensor  # [B, K] attention-branch logits
    attention: Tensor  # [B, 1, h, w] attention map M in [0, 1], stride 16
    maps: Tensor  # [B, K, h, w] per-class response maps of the attention branch


class AttentionBlock(nn.Module):
    """One residual block at the stage-3 width ``channels``.

    ``width == channels``: a basic block (two 3x3 convs). Otherwise a bottleneck (1x1 down to
    ``width``, 3x3, 1x1 back up), which keeps wide backbones (1024 channels for ResNet-50) cheap.
    """

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        if width == channels:
            layers: list[nn.Module] = [
                nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
                nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
            ]
        else:
            layers = [
                nn.Conv2d(channels, width, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, channels, 1, bias=False),
                nn.BatchNorm2d(channels),
            ]
        self.body = nn.Sequential(*layers)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(x + self.body(x))


def _has_tensors(m: nn.Module) -> bool:
    return next(m.parameters(), None) is not None or next(m.buffers(), None) is not None


def _split_stages(model: nn.Module, name: str) -> tuple[OrderedDict[str, list[str]], list[int]]:
    """Top-level child names per feature stage, and the stages' output channels.

    Raises:
        ValueError: the model is not ResNet-like (feature points must be top-level children, the
            last two at strides 16 and 32, nothing with parameters after the last).
    """
    info: Any = getattr(model, "feature_info", None)  # timm's list of dicts (untyped)
    if not info:
        raise ValueError(f"backbone {name!r} has no timm feature_info; cannot find its stages")
    points = [str(f["module"]) for f in info]
    reductions = [int(f["reduction"]) for f in info]
    children = OrderedDict(model.named_children())
    nested = [p for p in points if p not in children]
    if len(points) < 4 or reductions[-2:] != [16, 32]:
        raise ValueError(
            f"backbone {name!r} is not ResNet-like: ABN needs >= 4 feature stages ending at "
            f"strides 16 and 32, found strides {reductions}"
        )
    if nested:
        raise ValueError(
            f"backbone {name!r} is not ResNet-like: its feature stages {nested} are nested "
            "modules, and ABN splits the backbone between top-level stages (ResNet: layer3 | "
            "layer4)"
        )
    stages: OrderedDict[str, list[str]] = OrderedDict()
    pending: list[str] = []
    for child, module in children.items():
        pending.append(child)
        if child in points:
            first = not stages and not _has_tensors(module)
            stages["stem" if first else child] = pending
            pending = []
    trailing = [c for c in pending if _has_tensors(children[c])]
    if trailing:
        raise ValueError(
            f"backbone {name!r} has modules with weights after its last stage ({trailing}); "
            "ABN would drop them, so it supports only ResNet-like models without a head"
        )
    return stages, [int(f["num_chs"]) for f in info]


class AttentionBranchNetwork(nn.Module):
    """ABN classifier; see the module docstring for the architecture.

    Args:
        backbone: a ResNet-like timm model name (resnet10t, resnet18, resnet34, resnet50,
            resnext50_32x4d, resnest50d, ...), built without pretrained weights.
        num_classes: K, the number of classes (2 for COVID-19 vs typical pneumonia).
        in_chans: input channels (3 for grey slices repeated to RGB, 1 for raw grey).
        weights: optional local state-dict file (.pth/.pt/.safetensors) for the backbone, e.g.
            ImageNet or SimSiam weights; >= 90 % of the backbone's tensors must match by name
            and shape, else ValueError naming the file. Nothing is downloaded.
        att_channels: inner width of the attention block; default: the stage-3 width when it
            is <= 256 (basic block), else a quarter of it (bottleneck).

    Raises:
        ValueError: unsupported backbone (naming it and why), bad sizes, or a weights file that
            does not fit the backbone.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        num_classes: int = 2,
        in_chans: int = 3,
        weights: str | Path | None = None,
        att_channels: int | None = None,
    ) -> None:
        super().__init__()
        import timm

        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (softmax classifier), got {num_classes}")
        body = timm.create_model(
            backbone, pretrained=False, num_classes=0, global_pool="", in_chans=in_chans
        )
        stage_children, channels = _split_stages(body, backbone)
        self.backbone_name, self.num_classes = backbone, num_classes
        self.load_report = load_backbone_weights(body, weights) if weights else None

        names = list(stage_children)
        modules = OrderedDict(body.named_children())
        front = [c for s in names[:-1] for c in stage_children[s]]
        self.features = nn.Sequential(OrderedDict((c, modules[c]) for c in front))
        self.last_stage = nn.Sequential(
            OrderedDict((c, modules[c]) for c in stage_children[names[-1]])
        )
        self._stage_children = stage_children

        c3, c4 = channels[-2], channels[-1]
        width = att_channels if att_channels is not None else (c3 if c3 <= 256 else c3 // 4)
        if width < 1:
            raise ValueError(f"att_channels must be >= 1, got {width}")
        k = num_classes
        self.att_block = AttentionBlock(c3, width)
        self.att_bn = nn.BatchNorm2d(c3)
        self.att_conv = nn.Sequential(
            nn.Conv2d(c3, k, 1, bias=False), nn.BatchNorm2d(k), nn.ReLU(inplace=True)
        )
        self.att_class = nn.Conv2d(k, k, 1, bias=False)
        self.att_map = nn.Sequential(nn.Conv2d(k, 1, 1, bias=False), nn.BatchNorm2d(1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c4, k)

    def forward(self, x: Tensor) -> ABNOutput:
        feats = self.features(x)
        a = self.att_conv(self.att_bn(self.att_block(feats)))
        attention = torch.sigmoid(self.att_map(a))
        maps = self.att_class(a)
        att_logits = self.pool(maps).flatten(1)
        y = self.last_stage(feats * (1.0 + attention))
        per_logits = self.classifier(self.pool(y).flatten(1))
        return ABNOutput(per_logits, att_logits, attention, maps)

    def stages(self) -> dict[str, list[nn.Module]]:
        """Named backbone stages, upstream -> downstream (for `UnfreezeSchedule`).

        As `CenterNet.stages()`: one stage per timm feature point holding the modules since the
        previous one, only modules with tensors; a parameter-free first point (ResNet ``act1``)
        is called ``stem`` (ResNet: stem = conv1 + bn1, then layer1..layer4). The attention
        branch and the classifier are heads, not stages: they always train.
        """
        out: dict[str, list[nn.Module]] = {}
        for stage, children in self._stage_children.items():
            owner = self.last_stage if stage == next(reversed(self._stage_children)) else None
            mods = [(owner or self.features).get_submodule(c) for c in children]
            out[stage] = [m for m in mods if _has_tensors(m)]
        return out

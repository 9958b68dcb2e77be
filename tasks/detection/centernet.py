"""CenterNet ("Objects as Points", Zhou et al. 2019), hand-written and small, on any timm backbone.

The network predicts, at stride 4, a per-class centre heatmap, the box size and the sub-pixel
offset of each centre. Seed 000 also asks for separate detection and classification heads:
with ``class_agnostic=True`` the heatmap has one channel ("a lesion is here") and a separate head
gives per-location class logits, read at each heatmap peak.

Conventions: boxes are ``xyxy`` in input pixels, labels are 0-based, sizes (``wh``) are regressed
in output-map units (input pixels / ``stride``) as in the reference implementation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tasks.common.weights import load_backbone_weights
from tasks.detection.backbone import Backbone

__all__ = ["Backbone", "CenterNet", "load_backbone_weights"]

STRIDE = 4
MAX_OBJS = 64
HM_BIAS = -2.19  # the paper's prior: sigmoid(-2.19) ~= 0.1, so early focal loss stays stable


# --------------------------------------------------------------------------------------------
# Neck and heads
# --------------------------------------------------------------------------------------------
def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class Neck(nn.Module):
    """Deepest feature map -> stride 4: (conv3x3-BN-ReLU, bilinear x2) per step.

    With `skips`, a 1x1 projection of the backbone feature at each step's target stride is added
    after upsampling (an FPN-style merge; upsampling to the skip's exact size also makes input
    sizes that are not multiples of 32 work).
    """

    def __init__(
        self,
        channels: Sequence[int],
        reductions: Sequence[int],
        out_channels: Sequence[int] = (256, 128, 64),
        skips: bool = True,
    ) -> None:
        super().__init__()
        steps = math.log2(reductions[-1] / STRIDE)
        if steps < 1 or steps != int(steps) or int(steps) > len(out_channels):
            raise ValueError(
                f"backbone's last stride {reductions[-1]} must be 4 * 2**n with n in "
                f"1..{len(out_channels)}"
            )
        widths = list(out_channels)[len(out_channels) - int(steps) :]
        self.out_channels = widths[-1]
        self.blocks = nn.ModuleList(
            _conv_bn_relu(cin, cout)
            for cin, cout in zip([channels[-1], *widths[:-1]], widths, strict=True)
        )
        by_stride = {r: j for j, r in enumerate(reductions)}
        targets = [reductions[-1] // 2 ** (i + 1) for i in range(len(widths))]  # 16, 8, 4
        self.skip_index = [by_stride.get(r) if skips else None for r in targets]
        self.laterals = nn.ModuleDict(
            {
                str(i): nn.Conv2d(channels[j], widths[i], 1)
                for i, j in enumerate(self.skip_index)
                if j is not None
            }
        )

    def forward(self, feats: Sequence[Tensor], out_hw: tuple[int, int]) -> Tensor:
        """`out_hw`: the stride-4 output size (see `output_hw`), the last step's target."""
        x = feats[-1]
        for i, block in enumerate(self.blocks):
            x = block(x)
            j = self.skip_index[i]
            size = feats[j].shape[-2:] if j is not None else (x.shape[-2] * 2, x.shape[-1] * 2)
            size = out_hw if i == len(self.blocks) - 1 else size
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            if j is not None:
                lateral = self.laterals[str(i)](feats[j])
                if lateral.shape[-2:] != x.shape[-2:]:
                    lateral = F.interpolate(lateral, size=size, mode="bilinear")
                x = x + lateral
        return x


def output_hw(input_hw: tuple[int, int]) -> tuple[int, int]:
    """Size of the stride-4 output maps (and of `encode_targets`' maps) for an input size."""
    return math.ceil(input_hw[0] / STRIDE), math.ceil(input_hw[1] / STRIDE)


def _head(cin: int, mid: int, cout: int, bias: float = 0.0) -> nn.Sequential:
    head = nn.Sequential(
        nn.Conv2d(cin, mid, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(mid, cout, 1)
    )
    last = head[-1]
    assert isinstance(last, nn.Conv2d) and last.bias is not None
    nn.init.constant_(last.bias, bias)
    return head


class CenterNet(nn.Module):
    """Backbone + neck + heads; forward returns logits/regressions at stride 4.

    With (h, w) = ``output_hw((H, W))`` (ceil(H/4), ceil(W/4)), the output keys are: ``hm``
    (B, C, h, w) heatmap logits, C = 1 when `class_agnostic` else `num_classes`; ``wh`` and
    ``reg`` (B, 2, h, w); ``cls`` (B, num_classes, h, w) class logits, only when
    `class_agnostic`.
    """

    stride = STRIDE

    def __init__(
        self,
        backbone: str = "resnet18",
        num_classes: int = 4,
        *,
        pretrained: bool = False,
        weights: str | Path | None = None,
        head_conv: int = 64,
        class_agnostic: bool = False,
        skips: bool = True,
        neck_channels: Sequence[int] = (256, 128, 64),
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes, self.class_agnostic = num_classes, class_agnostic
        self.backbone = Backbone(backbone, pretrained=pretrained, weights=weights)
        self.neck = Neck(self.backbone.channels, self.backbone.reductions, neck_channels, skips)
        c = self.neck.out_channels
        self.heads = nn.ModuleDict(
            {
                "hm": _head(c, head_conv, 1 if class_agnostic else num_classes, HM_BIAS),
                "wh": _head(c, head_conv, 2),
                "reg": _head(c, head_conv, 2),
            }
        )
        if class_agnostic:
            self.heads["cls"] = _head(c, head_conv, num_classes)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        y = self.neck(self.backbone(x), output_hw((x.shape[-2], x.shape[-1])))
        return {name: head(y) for name, head in self.heads.items()}

    def stages(self) -> dict[str, list[nn.Module]]:
        """The backbone's stages (for `tasks.common.schedules.UnfreezeSchedule`)."""
        return self.backbone.stages()


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------
def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CornerNet's radius, exactly as in the CenterNet reference code (its known quirks included,
    so radii and hence results match published models)."""
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1**2 - 4 * c1)) / 2
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2**2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def draw_gaussian(heatmap: Tensor, cx: int, cy: int, radius: int) -> None:
    """Element-wise max of `heatmap` (H, W) and a gaussian (sigma = diameter / 6) peaking at 1."""
    d = torch.arange(-radius, radius + 1, dtype=heatmap.dtype)
    sigma = (2 * radius + 1) / 6
    g = torch.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (2 * sigma**2))
    h, w = heatmap.shape
    left, right = min(cx, radius), min(w - cx, radius + 1)
    top, bottom = min(cy, radius), min(h - cy, radius + 1)
    region = heatmap[cy - top : cy + bottom, cx - left : cx + right]
    patch = g[radius - top : radius + bottom, radius - left : radius + right]
    region.copy_(torch.maximum(region, patch))


def encode_targets(
    boxes_xyxy: Tensor,
    labels: Tensor,
    out_hw: tuple[int, int],
    num_classes: int,
    class_agnostic: bool = False,
    *,
    stride: int = STRIDE,
    max_objs: int = MAX_OBJS,
) -> dict[str, Tensor]:
    """Training targets of one image.

    Returns ``hm`` (C, H, W) gaussians (C = 1 when `class_agnostic`), and per object slot
    (padded to `max_objs`; extra objects are dropped): ``wh`` (M, 2) size in output units,
    ``reg`` (M, 2) centre offset, ``ind`` (M,) flat centre index ``y * W + x``, ``cls`` (M,)
    label, ``mask`` (M,) 1.0 for real objects. Empty (zero-area) boxes are skipped.
    """
    h, w = out_hw
    hm = torch.zeros(1 if class_agnostic else num_classes, h, w)
    wh, reg = torch.zeros(max_objs, 2), torch.zeros(max_objs, 2)
    ind, cls = torch.zeros(max_objs, dtype=torch.long), torch.zeros(max_objs, dtype=torch.long)
    mask = torch.zeros(max_objs)
    scaled = boxes_xyxy.detach().float().cpu().reshape(-1, 4) / stride
    scaled[:, 0::2] = scaled[:, 0::2].clamp(0, w)
    scaled[:, 1::2] = scaled[:, 1::2].clamp(0, h)
    k = 0
    for (x1, y1, x2, y2), label in zip(scaled.tolist(), labels.reshape(-1).tolist(), strict=True):
        bw, bh = x2 - x1, y2 - y1
        if bw <= 0 or bh <= 0 or k >= max_objs:
            continue
        if not 0 <= int(label) < num_classes:
            raise ValueError(f"label {label} outside 0..{num_classes - 1}")
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        ix, iy = min(int(cx), w - 1), min(int(cy), h - 1)
        radius = max(0, int(gaussian_radius(math.ceil(bh), math.ceil(bw))))
        draw_gaussian(hm[0 if class_agnostic else int(label)], ix, iy, radius)
        wh[k] = torch.tensor([bw, bh])
        reg[k] = torch.tensor([cx - ix, cy - iy])
        ind[k], cls[k], mask[k] = iy * w + ix, int(label), 1.0
        k += 1
    return {"hm": hm, "wh": wh, "reg": reg, "ind": ind, "cls": cls, "mask": mask}


def stack_targets(targets: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """Batch per-image target dicts (all keys stacked along a new first dimension)."""
    return {key: torch.stack([t[key] for t in targets]) for key in targets[0]}


def collate(
    batch: Sequence[tuple[Tensor, Mapping[str, Tensor]]],
) -> tuple[Tensor, dict[str, Tensor]]:
    """DataLoader `collate_fn` for ``(image, encode_targets(...))`` samples."""
    return torch.stack([x for x, _ in batch]), stack_targets([t for _, t in batch])


# --------------------------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------------------------
def focal_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Penalty-reduced pixel-wise focal loss (alpha=2, beta=4), normalised by the number of peaks.

    Computed from log-sigmoids, so it is finite for saturated logits (no clamping needed).
    """
    logits, target = logits.float(), target.float()
    p = torch.sigmoid(logits)
    pos = target.eq(1).float()
    pos_loss = F.logsigmoid(logits) * (1 - p) ** 2 * pos
    neg_loss = F.logsigmoid(-logits) * p**2 * (1 - target) ** 4 * (1 - pos)
    return -(pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1)


def gather_at(feature: Tensor, ind: Tensor) -> Tensor:
    """Values of `feature` (B, K, H, W) at flat indices `ind` (B, M) -> (B, M, K)."""
    b, k = feature.shape[:2]
    flat = feature.reshape(b, k, -1)
    return flat.gather(2, ind[:, None, :].expand(-1, k, -1)).transpose(1, 2)


def _masked_l1(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    m = mask[..., None].float()
    return (F.l1_loss(pred.float() * m, target * m, reduction="sum")) / (m.sum() * 2 + 1e-4)


def centernet_loss(
    out: Mapping[str, Tensor],
    targets: Mapping[str, Tensor],
    *,
    wh_weight: float = 0.1,
    off_weight: float = 1.0,
    cls_weight: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Total loss and its detached parts: focal heatmap + L1 size/offset at centres (+ CE of
    ``cls``); the parts stay tensors so logging them costs no device sync."""
    ind, mask = targets["ind"], targets["mask"]
    hm = focal_loss(out["hm"], targets["hm"])
    wh = _masked_l1(gather_at(out["wh"], ind), targets["wh"], mask)
    off = _masked_l1(gather_at(out["reg"], ind), targets["reg"], mask)
    total = hm + wh_weight * wh + off_weight * off
    parts = {"hm": hm, "wh": wh, "off": off}
    if "cls" in out:
        logits = gather_at(out["cls"], ind).float()[mask > 0]
        cls = (
            F.cross_entropy(logits, targets["cls"][mask > 0])
            if len(logits)
            else logits.sum()  # no objects: zero, still attached to the graph
        )
        total = total + cls_weight * cls
        parts["cls"] = cls
    parts["total"] = total
    return total, {k: v.detach() for k, v in parts.items()}


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def decode(
    out: Mapping[str, Tensor], *, k: int = 100, input_hw: tuple[int, int]
) -> list[dict[str, Tensor]]:
    """Top-`k` detections per image: ``boxes`` (K, 4) xyxy input pixels, ``scores``, ``labels``.

    Peaks are local maxima of the sigmoid heatmap under a 3x3 max-pool (CenterNet's NMS). In
    class-agnostic mode the label is the argmax of the ``cls`` head at the peak and the score is
    heat * softmax probability of that label, so ranking still prefers confident classes.
    Boxes are clipped to the input; results are sorted by descending score.
    """
    heat = torch.sigmoid(out["hm"].float())
    heat = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    b, c, h, w = heat.shape
    scores, idx = heat.reshape(b, -1).topk(min(k, c * h * w))
    labels, pix = idx // (h * w), idx % (h * w)
    xs, ys = (pix % w).float(), (pix // w).float()
    wh, reg = gather_at(out["wh"].float(), pix), gather_at(out["reg"].float(), pix)
    if "cls" in out:
        prob, labels = gather_at(out["cls"].float(), pix).softmax(-1).max(-1)
        scores = scores * prob
    cx, cy = xs + reg[..., 0], ys + reg[..., 1]
    half_w, half_h = wh[..., 0] / 2, wh[..., 1] / 2
    boxes = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], -1) * STRIDE
    boxes[..., 0::2] = boxes[..., 0::2].clamp(0, input_hw[1])
    boxes[..., 1::2] = boxes[..., 1::2].clamp(0, input_hw[0])
    results = []
    for i in range(b):
        order = scores[i].argsort(descending=True)
        results.append(
            {"boxes": boxes[i, order], "scores": scores[i, order], "labels": labels[i, order]}
        )
    return results

"""SimSiam (Chen & He, 2021) self-supervised pretraining of a timm backbone on unlabelled images.

Seed 000 pretrains CenterNet's ResNet18 this way on the ultrasound images. The artifact
``backbone.pt`` is the pooled timm model's state dict (its own keys, no prefix); it loads into
`tasks.detection.centernet.Backbone` via ``weights=...``, which maps the key spelling of timm's
``features_only`` wrappers.

There are no labels, so validation is the SimSiam loss on a held-out share of the images with
fixed augmentations, plus ``val_std``: the per-channel std of the L2-normalised projector
outputs, averaged. It is ~1/sqrt(proj_dim) for healthy training and falls to 0 on collapse.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from orchestrator.errors import DataError
from tasks.base import RunContext, Task
from tasks.common.manifest import load_image, verify_images
from tasks.common.schedules import warmup_cosine
from tasks.common.torch_utils import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    autocast,
    gather_arrays,
    make_grad_scaler,
    optimizer_step,
)
from tasks.simsiam.config import SimSiamAugment, SimSiamConfig, SimSiamData

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
ARTIFACT = "backbone.pt"


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
def _coco_paths(path: Path, image_root: str | None) -> list[str]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        names = [str(img["file_name"]) for img in doc["images"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"not a COCO JSON with images[].file_name: {exc}", source=path) from exc
    base = Path(image_root).expanduser() if image_root else path.parent
    return [str(base / n) for n in names]


def list_images(cfg: SimSiamData) -> list[str]:
    """Image paths of a folder (recursive, sorted) or of a COCO JSON (file order)."""
    src = Path(cfg.images).expanduser()
    if src.is_dir():
        return sorted(
            str(p) for p in src.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
    if src.suffix.lower() == ".json" and src.is_file():
        return _coco_paths(src, cfg.image_root)
    raise DataError("expected a folder of images or a COCO .json file", source=src)


def split_paths(paths: list[str], cfg: SimSiamData) -> tuple[list[str], list[str]]:
    """Seeded random hold-out of about `val_fraction` (at least one image)."""
    order = np.random.default_rng(cfg.split_seed).permutation(len(paths))
    n_val = max(1, round(len(paths) * cfg.val_fraction))
    return [paths[i] for i in sorted(order[n_val:])], [paths[i] for i in sorted(order[:n_val])]


def read_image(path: str, size: int) -> torch.Tensor:
    """uint8 RGB (3, H, W) with the short side resized to `size` (grey images are replicated)."""
    rgb = load_image(path, None)
    h, w = rgb.shape[:2]
    scale = size / min(h, w)
    if scale != 1:
        new = (max(1, round(w * scale)), max(1, round(h * scale)))
        rgb = np.asarray(Image.fromarray(rgb).resize(new, Image.Resampling.BILINEAR))
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


def build_augment(aug: SimSiamAugment, size: int) -> v2.Compose:
    """The paper's view pipeline without hue/saturation/grayscale (no colour in ultrasound)."""
    blur_kernel = max(3, int(0.1 * size) // 2 * 2 + 1)  # ~10% of the side, odd
    steps: list[Any] = [
        v2.RandomResizedCrop(size, scale=(aug.crop_scale_min, aug.crop_scale_max), antialias=True)
    ]
    if aug.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(aug.hflip))
    if aug.vflip > 0:
        steps.append(v2.RandomVerticalFlip(aug.vflip))
    if aug.jitter_p > 0:
        jitter = v2.ColorJitter(brightness=aug.brightness, contrast=aug.contrast)
        steps.append(v2.RandomApply([jitter], p=aug.jitter_p))
    if aug.blur_p > 0:
        steps.append(v2.RandomApply([v2.GaussianBlur(blur_kernel, (0.1, 2.0))], p=aug.blur_p))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return v2.Compose(steps)


class TwoViews(Dataset[tuple[torch.Tensor, torch.Tensor, int]]):
    """Two augmented views per image; with `seed`, the views of image i never change."""

    def __init__(
        self,
        paths: list[str],
        size: int,
        transform: v2.Compose,
        seed: int | None = None,
        cache: bool = True,
    ) -> None:
        self.paths, self.size, self.transform, self.seed = paths, size, transform, seed
        self.cache = [read_image(p, size) for p in paths] if cache else None

    def __len__(self) -> int:
        return len(self.paths)

    def _views(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(image), self.transform(image)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image = self.cache[i] if self.cache is not None else read_image(self.paths[i], self.size)
        if self.seed is None:
            return (*self._views(image), i)
        with torch.random.fork_rng(devices=[]):  # fixed views, whatever the worker or order
            torch.manual_seed(self.seed * 1_000_003 + i)
            return (*self._views(image), i)


# --------------------------------------------------------------------------------------------
# Model and loss
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


def simsiam_loss(
    p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor
) -> torch.Tensor:
    """Symmetric negative cosine similarity with stop-gradient on the targets z (in [-1, 1])."""

    def d(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return -F.cosine_similarity(p.float(), z.detach().float(), dim=-1).mean()

    return 0.5 * d(p1, z2) + 0.5 * d(p2, z1)


def normalized_std(z: torch.Tensor) -> float:
    """Mean per-channel std of L2-normalised outputs (the paper's collapse indicator)."""
    return float(F.normalize(z.float(), dim=1).std(dim=0).mean())


# --------------------------------------------------------------------------------------------
# Task
# --------------------------------------------------------------------------------------------
class SimSiamTask(Task[SimSiamConfig]):
    name: ClassVar[str] = "simsiam"
    description: ClassVar[str] = "SimSiam self-supervised backbone pretraining (seed 000)"
    config_model = SimSiamConfig
    default_metric: ClassVar[str] = "val_loss"
    default_mode = "min"

    # --- driver side -------------------------------------------------------------------------
    @classmethod
    def synthesize(cls, out: Path, n: int, size: int, seed: int) -> Path:
        """The detection task's liver-ultrasound set (SimSiam pretrains that task's backbone)."""
        from tasks.detection.synth import generate

        return generate(out, n=n, size=size, seed=seed)

    def _synthesize_missing(self) -> None:
        d = self.config.data
        src = Path(d.images).expanduser()
        if d.synth is None or src.exists():
            return
        # layout: out/images/*.png and out/annotations/{train,val,test}.json
        out = src.parent.parent if src.suffix.lower() == ".json" else src.parent
        self.synthesize(out, n=d.synth.n, size=d.synth.size, seed=d.synth.seed)
        if not src.exists():
            raise DataError(
                f"synthetic data was written to {out} (images/, annotations/train.json), "
                "which does not provide this path",
                source=src,
            )

    def check_data(self) -> None:
        import timm

        cfg = self.config
        self._synthesize_missing()
        if not timm.is_model(cfg.model.backbone):
            raise DataError(f"unknown timm backbone {cfg.model.backbone!r}", where="model.backbone")
        paths = list_images(cfg.data)
        missing = [p for p in paths if not Path(p).is_file()]
        if missing:
            raise DataError(
                f"{len(missing)} image file(s) missing, e.g. {missing[:3]}", source=cfg.data.images
            )
        train, _ = split_paths(paths, cfg.data)
        if len(train) < 2:
            raise DataError(
                f"found {len(paths)} image(s); SimSiam needs at least 2 for training plus a "
                f"validation share of {cfg.data.val_fraction}",
                source=cfg.data.images,
            )
        verify_images(pd.DataFrame({"path": paths}), source=cfg.data.images)

    # --- worker side -------------------------------------------------------------------------
    def setup(self, ctx: RunContext) -> None:
        cfg = self.config
        self.ctx, self.device = ctx, torch.device(ctx.device)
        train_paths, val_paths = split_paths(list_images(cfg.data), cfg.data)
        size, aug = cfg.data.image_size, build_augment(cfg.augment, cfg.data.image_size)
        train_ds = TwoViews(train_paths, size, aug, cache=cfg.data.cache)
        val_ds = TwoViews(val_paths, size, aug, seed=cfg.augment.val_seed, cache=cfg.data.cache)
        bs, nw = cfg.train.batch_size, cfg.train.loader_workers
        # drop_last: a final batch of one image would break the projector's BatchNorm
        self.train_loader = ctx.prepare_loader(
            DataLoader(
                train_ds, batch_size=bs, shuffle=True, num_workers=nw, drop_last=len(train_ds) > bs
            )
        )
        self.val_loader = ctx.prepare_loader(DataLoader(val_ds, batch_size=bs, num_workers=nw))
        m = cfg.model
        self.model = ctx.prepare_model(SimSiam(m.backbone, m.proj_dim, m.pred_dim))
        self.optimizer = self._optimizer()
        self.scheduler = self._scheduler()
        self.scaler = make_grad_scaler(self.device, cfg.train.amp)

    def _bare_model(self) -> SimSiam:
        module = getattr(self.model, "module", self.model)
        assert isinstance(module, SimSiam)
        return module

    def _optimizer(self) -> torch.optim.Optimizer:
        t, model = self.config.train, self._bare_model()
        groups = [
            {"params": [*model.encoder.parameters(), *model.projector.parameters()]},
            {"params": list(model.predictor.parameters())},
        ]
        if t.optimizer == "sgd":
            return torch.optim.SGD(
                groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay
            )
        return torch.optim.AdamW(groups, lr=t.lr, weight_decay=t.weight_decay)

    def _scheduler(self) -> torch.optim.lr_scheduler.LambdaLR | None:
        t = self.config.train
        if t.scheduler != "cosine":
            return None
        steps_per_epoch = len(self.train_loader)
        total, warmup = t.epochs * steps_per_epoch, t.warmup_epochs * steps_per_epoch

        def cosine(step: int) -> float:
            return warmup_cosine(step, total, warmup)

        def predictor(step: int) -> float:
            return 1.0 if t.fix_pred_lr else cosine(step)

        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, [cosine, predictor])

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        sampler = getattr(self.train_loader, "sampler", None)
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        total, count, stds = 0.0, 0, []
        for x1, x2, _ in self.train_loader:
            x1, x2 = x1.to(self.device, non_blocking=True), x2.to(self.device, non_blocking=True)
            with autocast(self.device, self.config.train.amp):
                p1, p2, z1, z2 = self.model(x1, x2)
            loss = simsiam_loss(p1, p2, z1, z2)
            optimizer_step(loss, self.optimizer, self.scaler, self.scheduler)
            total, count = total + loss.item() * len(x1), count + len(x1)
            stds.append(normalized_std(z1.detach()))
        sums = gather_arrays(np.array([total]), np.array([count]), np.array(stds))
        return {
            "train_loss": float(sums[0].sum() / max(1, sums[1].sum())),
            "train_std": float(sums[2].mean()) if len(sums[2]) else math.nan,
            "train_lr": float(self.optimizer.param_groups[0]["lr"]),
        }

    @torch.no_grad()
    def evaluate(self, epoch: int) -> dict[str, float]:
        """SimSiam loss and output std over the fixed validation views (both views' z)."""
        self.model.eval()
        total, count = 0.0, 0
        s1: torch.Tensor | float = 0.0
        s2: torch.Tensor | float = 0.0
        for x1, x2, _ in self.val_loader:
            x1, x2 = x1.to(self.device), x2.to(self.device)
            with autocast(self.device, self.config.train.amp):
                p1, p2, z1, z2 = self.model(x1, x2)
            total += simsiam_loss(p1, p2, z1, z2).item() * len(x1)
            zn = F.normalize(torch.cat([z1, z2]).float(), dim=1).double().cpu()
            s1, s2, count = s1 + zn.sum(0), s2 + (zn**2).sum(0), count + len(x1)
        parts = gather_arrays(
            np.array([total]), np.array([count]), np.atleast_1d(s1), np.atleast_1d(s2)
        )
        dim = len(np.atleast_1d(s1))
        n = 2 * parts[1].sum()  # two views per image
        s1_all, s2_all = parts[2].reshape(-1, dim).sum(0), parts[3].reshape(-1, dim).sum(0)
        var = np.clip((s2_all - s1_all**2 / n) / max(1.0, n - 1), 0, None)
        return {
            "val_loss": float(parts[0].sum() / max(1, parts[1].sum())),
            "val_std": float(np.sqrt(var).mean()),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self._bare_model().state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._bare_model().load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])

    def save_artifacts(self, directory: Path) -> list[Path]:
        """``backbone.pt``: the encoder's state dict, for ``CenterNet(weights=...)``."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / ARTIFACT
        tmp = path.with_suffix(".pt.tmp")
        state = {k: v.detach().cpu() for k, v in self._bare_model().encoder.state_dict().items()}
        torch.save(state, tmp)
        tmp.replace(path)
        return [path]

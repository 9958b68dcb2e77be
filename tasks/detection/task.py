"""Liver-tumour detection (seed 000): CenterNet on a timm backbone, staged unfreezing, COCO and
lesion-level evaluation every epoch."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import DataLoader

from orchestrator.errors import DataError
from tasks.base import RunContext, Task
from tasks.common.coco import load_coco_gt
from tasks.common.detection_metrics import coco_metrics, lesion_confusion_figure, lesion_metrics
from tasks.common.schedules import ScaledLambdaLR, UnfreezeSchedule, warmup_cosine
from tasks.common.torch_utils import (
    autocast,
    build_optimizer,
    gather_objects,
    make_grad_scaler,
    optimizer_step,
)
from tasks.detection.centernet import CenterNet, centernet_loss, decode, encode_targets
from tasks.detection.config import DetectionConfig
from tasks.detection.data import (
    Categories,
    DetectionDataset,
    build_transform,
    collate,
    load_cache,
    normalize,
    photometric,
    samples,
)

COCO_KEYS = ("mAP", "AP50", "AP75", "APs", "APm", "APl")


class DetectionTask(Task[DetectionConfig]):
    name: ClassVar[str] = "detection"
    description: ClassVar[str] = "Liver-tumour detection in ultrasound, CenterNet (seed 000)"
    config_model = DetectionConfig
    default_metric: ClassVar[str] = "val_mAP"
    default_mode = "max"
    synth_names: ClassVar[tuple[str, ...]] = ("liver-us",)

    # --- driver side -------------------------------------------------------------------------
    def check_data(self) -> None:
        import timm

        cfg = self.config
        train = Path(cfg.data.train)
        if cfg.data.synth is not None and not train.exists():
            s = cfg.data.synth
            written = self.synthesize(train.parent.parent, n=s.n, size=s.size, seed=s.seed)
            if written.resolve() != train.resolve():
                raise DataError(f"synthetic data was written to {written}", source=train)
        if not timm.is_model(cfg.model.backbone):
            raise DataError(
                f"unknown timm backbone {cfg.model.backbone!r}", where="field model.backbone"
            )
        weights = self._weights_path()
        if weights and not Path(weights).is_file():
            raise DataError("weights file not found", source=weights, where="field model.weights")
        for split in (cfg.data.train, cfg.data.val):
            self._load(split, check_files=True)

    @classmethod
    def synthesize(cls, out: Path, n: int, size: int, seed: int) -> Path:
        from tasks.detection.synth import generate

        return generate(out, n=n, size=size, seed=seed)

    def _weights_path(self) -> str | None:
        m = self.config.model
        return m.weights_from.path if m.weights_from else m.weights

    def _load(self, path: str, check_files: bool = False) -> dict[str, Any]:
        root = self.config.data.image_root
        coco, notes = load_coco_gt(
            path,
            image_root=root,
            check_files=check_files,
            skip_invalid=self.config.data.skip_invalid,
        )
        if notes and check_files:
            from rich.console import Console

            Console(stderr=True).print(
                f"{path}: skipped {len(notes)} invalid entries, e.g. {notes[0]}"
            )
        return coco

    # --- worker side -------------------------------------------------------------------------
    def setup(self, ctx: RunContext) -> None:
        cfg = self.config
        self.ctx, self.device = ctx, torch.device(ctx.device)
        train_coco, self.val_coco = self._load(cfg.data.train), self._load(cfg.data.val)
        self.cats = Categories.from_coco(train_coco, one_class=cfg.model.classes == "one")
        self.val_gt = self.cats.eval_gt(self.val_coco)
        self.train_loader = self._loader(train_coco, cfg.data.train, train=True)
        self.val_loader = self._loader(self.val_coco, cfg.data.val, train=False)
        model = CenterNet(
            cfg.model.backbone,
            self.cats.num_classes,
            weights=self._weights_path(),
            head_conv=cfg.model.head_conv,
            class_agnostic=cfg.model.class_agnostic,
            skips=cfg.model.skips,
        )
        self.optimizer = build_optimizer(model.parameters(), cfg.train)
        self.schedule = UnfreezeSchedule(
            model.stages(), self.optimizer, cfg.schedule, on_change=lambda _: self._wrap()
        )
        self.bare = model
        self._wrap()
        steps = cfg.train.epochs * len(self.train_loader)
        warmup = cfg.train.warmup_epochs * len(self.train_loader)
        self.lr = ScaledLambdaLR(
            self.optimizer, partial(warmup_cosine, total_steps=steps, warmup_steps=warmup)
        )
        self.scaler = make_grad_scaler(self.device, cfg.train.amp)
        self.last: dict[str, Any] = {}

    def _wrap(self) -> None:
        """(Re)wrap for DDP: it only reduces gradients of parameters trainable at wrap time."""
        self.model = self.ctx.prepare_model(self.bare)

    def _loader(self, coco: dict[str, Any], path: str, train: bool) -> DataLoader[Any]:
        cfg = self.config
        items = samples(coco, Path(path), cfg.data, self.cats)
        encode = partial(
            _encode,
            size=cfg.data.image_size,
            num_classes=self.cats.num_classes,
            class_agnostic=cfg.model.class_agnostic,
        )
        cache = load_cache(items, cfg.data.image_size) if cfg.data.cache else None
        ds = DetectionDataset(
            items,
            cfg.data.image_size,
            build_transform(cfg.augment if train else None),
            encode,
            cache,
        )
        loader = DataLoader(
            ds,
            batch_size=cfg.train.batch_size * (1 if train else 2),
            shuffle=train,
            num_workers=cfg.train.loader_workers,
            collate_fn=collate,
            drop_last=train and len(ds) > cfg.train.batch_size,
        )
        return self.ctx.prepare_loader(loader)

    def hooks(self) -> list[UnfreezeSchedule]:
        return [self.schedule]

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.schedule.train_mode(self.model)
        sampler = getattr(self.train_loader, "sampler", None)
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        t = self.config.train
        sums: dict[str, float] = {}
        count = 0
        for x, targets, _ in self.train_loader:
            x = normalize(photometric(x.to(self.device, non_blocking=True), self.config.augment))
            targets = {k: v.to(self.device, non_blocking=True) for k, v in targets.items()}
            with autocast(self.device, t.amp):
                out = self.model(x)
            loss, parts = centernet_loss(
                out,
                targets,
                wh_weight=t.wh_weight,
                off_weight=t.off_weight,
                cls_weight=t.cls_weight,
            )
            optimizer_step(loss, self.optimizer, self.scaler, self.lr)
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v * len(x)
            count += len(x)
        totals = gather_objects([(sums, count)])
        n = max(1, sum(c for _, c in totals))
        keys = sums.keys() or {"total"}
        out_metrics = {f"train_loss_{k}": sum(s.get(k, 0.0) for s, _ in totals) / n for k in keys}
        out_metrics["train_loss"] = out_metrics.pop("train_loss_total", float("nan"))
        out_metrics["train_lr"] = self.lr.get_last_lr()[0]
        return out_metrics

    @torch.no_grad()
    def _detections(self) -> list[dict[str, Any]]:
        self.model.eval()
        size = self.config.data.image_size
        items = self.val_loader.dataset.items  # type: ignore[attr-defined]
        dets: list[dict[str, Any]] = []
        for x, _, idx in self.val_loader:
            with autocast(self.device, self.config.train.amp):
                out = self.model(normalize(x.to(self.device)))
            decoded = decode(out, k=self.config.eval.topk, input_hw=(size, size))
            for det, i in zip(decoded, idx.tolist(), strict=True):
                dets += _to_coco(det, items[i], size, self.cats)
        return gather_objects(dets)

    def evaluate(self, epoch: int) -> dict[str, float]:
        dets = _unique(self._detections())
        coco = coco_metrics(self.val_gt, dets)
        lesion = lesion_metrics(self.val_gt, dets, iou=self.config.eval.iou)
        self.last = {"detections": dets, "coco": coco, "lesion": lesion}
        out = {f"val_{k}": float(coco[k]) for k in COCO_KEYS}
        for name, values in coco.get("per_class", {}).items():
            out[f"val_AP50_{name}"] = float(values["AP50"])
        macro, micro = lesion["macro"], lesion["micro"]
        out.update(
            val_lesion_f1=float(macro["f1"]),
            val_lesion_precision=float(macro["precision"]),
            val_lesion_recall=float(macro["recall"]),
            val_lesion_micro_f1=float(micro["f1"]),
            val_lesion_threshold=float(lesion["threshold"]),
        )
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.bare.state_dict(),
            "schedule": self.schedule.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr": self.lr.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bare.load_state_dict(state["model"])
        self.schedule.load_state_dict(state["schedule"])  # re-creates param groups first
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr.load_state_dict(state["lr"])
        self.scaler.load_state_dict(state["scaler"])
        self._wrap()

    def save_artifacts(self, directory: Path) -> list[Path]:
        """Best-epoch detections (COCO results), COCO and lesion metrics, confusion heatmap."""
        if not self.last:
            return []
        directory.mkdir(parents=True, exist_ok=True)
        files = {
            "val_detections.json": self.last["detections"],
            "val_coco.json": self.last["coco"],
            "val_lesion.json": self.last["lesion"],
        }
        written = []
        for name, obj in files.items():
            written.append(_atomic_write(directory / name, json.dumps(obj)))
        fig = lesion_confusion_figure(self.last["lesion"])
        png = directory / "val_lesion_confusion.png"
        fig.savefig(png.with_suffix(".tmp.png"), dpi=120, bbox_inches="tight")
        png.with_suffix(".tmp.png").replace(png)
        written.append(png)
        return written


def _encode(
    boxes: torch.Tensor, labels: torch.Tensor, *, size: int, num_classes: int, class_agnostic: bool
) -> dict[str, torch.Tensor]:
    stride = CenterNet.stride
    return encode_targets(
        boxes, labels, (size // stride, size // stride), num_classes, class_agnostic
    )


def _to_coco(
    det: dict[str, torch.Tensor], item: Any, size: int, cats: Categories
) -> list[dict[str, Any]]:
    """Decoded boxes (network pixels) -> COCO results in the image's own pixels."""
    scale = np.array([item.width / size, item.height / size] * 2, dtype=np.float64)
    boxes = det["boxes"].cpu().numpy().astype(np.float64) * scale
    out = []
    for (x1, y1, x2, y2), score, label in zip(
        boxes.tolist(), det["scores"].tolist(), det["labels"].tolist(), strict=True
    ):
        if x2 - x1 <= 0 or y2 - y1 <= 0:
            continue
        out.append(
            {
                "image_id": item.image_id,
                "category_id": cats.category_id(int(label)),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": float(score),
            }
        )
    return out


def _unique(dets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop the copies a DistributedSampler's padding adds (same image evaluated twice)."""
    seen: set[tuple[Any, ...]] = set()
    out = []
    for d in dets:
        key = (
            d["image_id"],
            d["category_id"],
            round(d["score"], 7),
            *map(lambda v: round(v, 3), d["bbox"]),
        )
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _atomic_write(path: Path, text: str) -> Path:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path

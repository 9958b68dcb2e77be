"""Liver-tumour detection (seed 000): CenterNet on a timm backbone, staged unfreezing, COCO and
lesion-level evaluation every epoch.

Cases are the images of the COCO files (`data.train` and `data.val`); without a `cv` section the
two files are the training and validation splits, with one the engine splits their union by
patient. Predictions keep each image's boxes in network pixels with the image's size, so they
convert to COCO results (`detections`) in the image's own pixels for metrics and files.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from orchestrator.errors import DataError
from tasks.base import Hook
from tasks.common.coco import load_coco_gt
from tasks.common.detection_metrics import coco_metrics, lesion_confusion_figure, lesion_metrics
from tasks.common.image_cache import cache_folder
from tasks.common.images import BlackPolicy, report_skipped, without_black
from tasks.common.io import atomic_save_figure, atomic_write_json
from tasks.common.schedules import UnfreezeSchedule
from tasks.common.template import SupervisedTask
from tasks.detection.centernet import CenterNet, centernet_loss, decode, encode_targets
from tasks.detection.config import DetectionConfig
from tasks.detection.data import (
    DetectionDataset,
    build_transform,
    collate,
    load_cache,
    normalize,
    photometric,
)
from tasks.detection.ensemble import fuse_detections
from tasks.detection.frames import CocoIndex, entry_labels

COCO_KEYS = ("mAP", "AP50", "AP75", "APs", "APm", "APl")


class DetectionTask(SupervisedTask[DetectionConfig]):
    name: ClassVar[str] = "detection"
    description: ClassVar[str] = "Liver-tumour detection in ultrasound, CenterNet (seed 000)"
    config_model = DetectionConfig
    default_metric: ClassVar[str] = "val_mAP"
    default_mode = "max"
    synth_names: ClassVar[tuple[str, ...]] = ("liver-us",)
    predictions_file: ClassVar[str] = "detections.json"
    case_columns: ClassVar[tuple[str, ...]] = (
        "case",
        "image_id",
        "file_name",
        "width",
        "height",
        "label",
        "patient_id",
    )
    skipped_black: int = 0  # black images left out (data.black_images: skip)

    # --- driver side -------------------------------------------------------------------------
    def check_data(self) -> None:
        import timm

        cfg = self.config
        train = Path(cfg.data.train)
        if cfg.data.synth is not None and not train.exists():
            s = cfg.data.synth
            written = self.synthesize(train.parent.parent, n=s.n, size=s.size, seed=s.seed)
            self.notes.append(f"synthesised {s.n} images: {written.parent}")
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
        index = self.index()  # skip: the black images are left out there
        if cfg.data.black_images == "skip":
            report_skipped(self.name, self.skipped_black)
        else:
            self._without_black(index.frame, "error")

    def data_root(self) -> Path:
        d = self.config.data
        return Path(d.image_root or Path(d.train).parent).resolve()

    def data_summary(self) -> dict[str, Any]:
        index = self.index()
        cases = index.cases()
        names = dict(zip(index.cats.ids, index.cats.names, strict=True))
        per_class = pd.Series([names[a["category_id"]] for anns in cases["anns"] for a in anns])
        return {
            "images": len(cases),
            "images without lesions": int((cases["anns"].map(len) == 0).sum()),
            "lesions": {str(k): int(v) for k, v in per_class.value_counts().items()},
            "patients": int(cases["patient_id"].nunique()) if "patient_id" in cases else "n/a",
        } | ({"black_images_skipped": self.skipped_black} if self.skipped_black else {})

    @classmethod
    def synthesize(cls, out: Path, n: int, size: int, seed: int) -> Path:
        from tasks.detection.synth import generate

        return generate(out, n=n, size=size, seed=seed)

    def _weights_path(self) -> str | None:
        m = self.config.model
        return m.weights_from.path if m.weights_from else m.weights

    def _load(self, path: str, check_files: bool = False) -> dict[str, Any]:
        coco, notes = load_coco_gt(
            path,
            image_root=self.config.data.image_root,
            check_files=check_files,
            skip_invalid=self.config.data.skip_invalid,
        )
        if notes and check_files:
            from rich.console import Console

            Console(stderr=True).print(
                f"{path}: skipped {len(notes)} invalid entries, e.g. {notes[0]}"
            )
        return coco

    def index(self) -> CocoIndex:
        """Both COCO files, loaded once: images, annotations and categories by id."""
        if not hasattr(self, "_index"):
            d = self.config.data
            files = {"train": (d.train, self._load(d.train)), "val": (d.val, self._load(d.val))}
            index = CocoIndex(files, d.image_root, one_class=self.config.model.classes == "one")
            if d.black_images == "skip":  # driver and workers leave out the same images
                index.frame, self.skipped_black = self._without_black(index.frame, "skip")
            self._index = index
        return self._index

    def _without_black(self, frame: pd.DataFrame, policy: BlackPolicy) -> tuple[pd.DataFrame, int]:
        """The case rows without black images, judged per COCO file (an error names the file and
        its ``images[i]``); the ultrasound fan's black surround is not what makes one black."""
        d = self.config.data
        if frame.empty:
            return frame, 0
        parts, skipped = [], 0
        for key, path in (("train", d.train), ("val", d.val)):
            part, n = without_black(
                frame[frame["_file"] == key],
                policy,
                column="case",
                threshold=d.black_threshold,
                cache_dir=cache_folder("detection") / "black",
                source=path,
                what=f"data.black_threshold ({d.black_threshold})",
                labels=partial(entry_labels, path),
            )
            parts.append(part)
            skipped += n
        return pd.concat(parts, ignore_index=True), skipped

    tiny_synth: ClassVar[tuple[int, int]] = (64, 64)

    @classmethod
    def tiny_config(cls, data: Path) -> dict[str, Any]:
        folder = data.parent
        return {
            "data": {"train": str(data), "val": str(folder / "val.json"), "image_size": 64},
            "model": {"backbone": "resnet10t", "head_conv": 16},
            "eval": {"topk": 20},
            "train": {"epochs": 2, "batch_size": 8, "lr": 1e-3},
        }

    def cases(self) -> pd.DataFrame:
        return self.index().cases()

    def read_cases(self, manifest: Path) -> pd.DataFrame:
        coco = load_coco_gt(manifest, image_root=self.config.data.image_root)[0]
        return CocoIndex({"new": (str(manifest), coco)}, self.config.data.image_root).cases()

    def detections(self, predictions: pd.DataFrame) -> list[dict[str, Any]]:
        """COCO results (image pixels) of per-image predictions."""
        return self.index().to_coco(predictions)

    def score(self, split: str, predictions: pd.DataFrame) -> dict[str, float]:
        gt, dets = self.index().eval_pair(predictions)
        coco = coco_metrics(gt, dets)
        lesion = lesion_metrics(gt, dets, iou=self.config.eval.iou)
        self.last_eval = {"detections": dets, "coco": coco, "lesion": lesion}
        out = {k: float(coco[k]) for k in COCO_KEYS}
        for name, values in coco.get("per_class", {}).items():
            out[f"AP50_{name}"] = float(values["AP50"])
        macro, micro = lesion["macro"], lesion["micro"]
        out.update(
            lesion_f1=float(macro["f1"]),
            lesion_precision=float(macro["precision"]),
            lesion_recall=float(macro["recall"]),
            lesion_micro_f1=float(micro["f1"]),
            lesion_threshold=float(lesion["threshold"]),
        )
        return out

    @classmethod
    def ensemble(cls, predictions: Sequence[pd.DataFrame]) -> pd.DataFrame:
        """Fold models' boxes fused per image (score-weighted boxes, mean scores)."""
        return fuse_detections(predictions)

    @classmethod
    def pseudo_labels(cls, predictions: pd.DataFrame, high: float, low: float) -> pd.DataFrame:
        raise NotImplementedError("pseudo-labelling is not defined for detection")

    def write_predictions(self, predictions: pd.DataFrame, path: Path) -> Path:
        """COCO results JSON, readable by `medsweep eval detection --pred`."""
        return atomic_write_json(path, self.detections(predictions))

    # --- worker side -------------------------------------------------------------------------
    def default_frames(self) -> dict[str, pd.DataFrame]:
        cases = self.cases()
        by_file = cases["_file"]
        return {
            "train": cases[by_file == "train"].reset_index(drop=True),
            "val": cases[by_file == "val"].reset_index(drop=True),
        }

    def dataset(self, frame: pd.DataFrame, train: bool) -> Dataset[Any]:
        cfg, index = self.config, self.index()
        items = [index.sample(row) for row in frame.itertuples(index=False)]
        encode = partial(
            _encode,
            size=cfg.data.image_size,
            num_classes=index.num_classes,
            class_agnostic=cfg.model.class_agnostic,
        )
        cache = load_cache(items, cfg.data.image_size) if cfg.data.cache else None
        transform = build_transform(cfg.augment if train else None)
        return DetectionDataset(items, cfg.data.image_size, transform, encode, cache)

    def collate_fn(self) -> Any:
        return collate

    def build_model(self) -> nn.Module:
        m = self.config.model
        return CenterNet(
            m.backbone,
            self.index().num_classes,
            weights=self._weights_path(),
            head_conv=m.head_conv,
            class_agnostic=m.class_agnostic,
            skips=m.skips,
        )

    def build_hooks(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> list[Hook]:
        assert isinstance(model, CenterNet)
        self.schedule = UnfreezeSchedule(
            model.stages(), optimizer, self.config.schedule, on_change=lambda _: self.wrap()
        )
        return [self.schedule]

    def train_mode(self) -> None:
        self.schedule.train_mode(self.model)

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        x, targets, _ = batch
        t = self.config.train
        out = self.model(normalize(photometric(x, self.config.augment)))
        loss, parts = centernet_loss(
            out, targets, wh_weight=t.wh_weight, off_weight=t.off_weight, cls_weight=t.cls_weight
        )
        parts.pop("total")
        return {"loss": loss, **{f"loss_{k}": v for k, v in parts.items()}}

    def predict_step(self, batch: Any) -> dict[str, Any]:
        size = self.config.data.image_size
        out = self.bare(normalize(batch[0]))
        decoded = decode(out, k=self.config.eval.topk, input_hw=(size, size))
        return {
            "boxes": [d["boxes"].float().cpu().numpy() for d in decoded],
            "scores": [d["scores"].float().cpu().numpy() for d in decoded],
            "labels": [d["labels"].cpu().numpy() for d in decoded],
            "net_size": torch.full((len(decoded),), float(size)),
        }

    def extra_artifacts(self, directory: Path) -> list[Path]:
        """Best-epoch COCO and lesion metrics, and the lesion confusion heatmap."""
        last = getattr(self, "last_eval", None)
        if not last:
            return []
        return [
            atomic_write_json(directory / "val_coco.json", last["coco"]),
            atomic_write_json(directory / "val_lesion.json", last["lesion"]),
            atomic_save_figure(
                lesion_confusion_figure(last["lesion"]), directory / "val_lesion_confusion.png"
            ),
        ]


def _encode(
    boxes: torch.Tensor, labels: torch.Tensor, *, size: int, num_classes: int, class_agnostic: bool
) -> dict[str, torch.Tensor]:
    stride = CenterNet.stride
    return encode_targets(
        boxes, labels, (size // stride, size // stride), num_classes, class_agnostic
    )

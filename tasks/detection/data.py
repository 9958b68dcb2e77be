"""Detection data: COCO files -> resized tensors with boxes, box-aware v2 augmentation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from tasks.common.manifest import load_image
from tasks.common.torch_utils import IMAGENET_MEAN, IMAGENET_STD
from tasks.detection.config import DetectionAugment, DetectionData


@dataclass(frozen=True)
class Categories:
    """COCO category ids <-> contiguous 0-based labels; 'one' mode merges them into 'lesion'."""

    ids: list[int]
    names: list[str]
    one_class: bool

    @classmethod
    def from_coco(cls, coco: dict[str, Any], one_class: bool) -> Categories:
        cats = sorted(coco["categories"], key=lambda c: c["id"])
        return cls([c["id"] for c in cats], [str(c["name"]) for c in cats], one_class)

    @property
    def num_classes(self) -> int:
        return 1 if self.one_class else len(self.ids)

    def label(self, category_id: int) -> int:
        return 0 if self.one_class else self.ids.index(category_id)

    def category_id(self, label: int) -> int:
        return 1 if self.one_class else self.ids[label]

    def eval_gt(self, coco: dict[str, Any]) -> dict[str, Any]:
        """The ground truth as evaluated: categories merged into one in 'one' mode."""
        if not self.one_class:
            return coco
        anns = [{**a, "category_id": 1} for a in coco["annotations"]]
        return {**coco, "annotations": anns, "categories": [{"id": 1, "name": "lesion"}]}


def image_path(coco_path: Path, root: str | None, file_name: str) -> Path:
    """`file_name` relative to `data.image_root`, by default to the COCO file's folder."""
    base = Path(root) if root else coco_path.parent
    return (base / file_name).resolve()


def build_transform(aug: DetectionAugment | None) -> v2.Compose:
    """Per-sample, box-aware geometric augmentation; photometric changes run per batch
    (`photometric`), where they cost one vectorised op instead of one per image."""
    steps: list[Any] = [v2.ToDtype(torch.float32, scale=True)]
    if aug is not None:
        steps += [
            v2.RandomHorizontalFlip(aug.hflip),
            v2.RandomVerticalFlip(aug.vflip),
            v2.RandomAffine(
                degrees=0.0,
                translate=(aug.translate, aug.translate),
                scale=(aug.scale_min, aug.scale_max),
            ),
            v2.ClampBoundingBoxes(),
            v2.SanitizeBoundingBoxes(min_size=2.0),
        ]
    return v2.Compose(steps)


def photometric(x: torch.Tensor, aug: DetectionAugment) -> torch.Tensor:
    """Random brightness/contrast per image and multiplicative (gamma) speckle, x in [0, 1]."""
    b = x.shape[0]
    shape = (b, 1, 1, 1)
    brightness = 1 + (torch.rand(shape, device=x.device) * 2 - 1) * aug.brightness
    contrast = 1 + (torch.rand(shape, device=x.device) * 2 - 1) * aug.contrast
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean * brightness
    if aug.speckle > 0:
        k = 1.0 / aug.speckle**2
        gamma = torch.distributions.Gamma(torch.tensor(k), torch.tensor(k))
        x = x * gamma.sample((b, 1, *x.shape[-2:])).to(x.device)
    return x.clamp(0, 1)


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


@dataclass
class Sample:
    image_id: int
    path: Path
    width: int
    height: int
    boxes: np.ndarray  # (N, 4) xyxy in original pixels
    labels: np.ndarray  # (N,) 0-based


def samples(
    coco: dict[str, Any], coco_path: Path, cfg: DetectionData, cats: Categories
) -> list[Sample]:
    by_image: dict[int, list[dict[str, Any]]] = {img["id"]: [] for img in coco["images"]}
    for ann in coco["annotations"]:
        by_image[ann["image_id"]].append(ann)
    out = []
    for img in coco["images"]:
        anns = by_image[img["id"]]
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        labels = np.array([cats.label(a["category_id"]) for a in anns], dtype=np.int64)
        path = image_path(coco_path, cfg.image_root, img["file_name"])
        out.append(Sample(img["id"], path, int(img["width"]), int(img["height"]), xyxy, labels))
    return out


def read_resized(sample: Sample, size: int) -> np.ndarray:
    """uint8 HxWx3 at the network size (the input is square; boxes are scaled to match)."""
    rgb = load_image(sample.path, None, row_hint=f"image id {sample.image_id}")
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR))


Encoder = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


class DetectionDataset(Dataset[tuple[torch.Tensor, dict[str, torch.Tensor], int]]):
    """Yields (image, encoded CenterNet targets, item index) after box-aware augmentation."""

    def __init__(
        self,
        items: list[Sample],
        size: int,
        transform: v2.Compose,
        encode: Encoder,
        cache: CachedImages | None = None,
    ) -> None:
        self.items, self.size, self.transform, self.cache = items, size, transform, cache
        self.encode = encode

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        s = self.items[i]
        rgb = self.cache[i] if self.cache is not None else read_resized(s, self.size)
        scale = np.array([self.size / s.width, self.size / s.height] * 2, dtype=np.float32)
        image = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))))
        boxes = tv_tensors.BoundingBoxes(
            torch.from_numpy(s.boxes * scale), format="XYXY", canvas_size=(self.size, self.size)
        )
        out = self.transform({"image": image, "boxes": boxes, "labels": torch.from_numpy(s.labels)})
        target = self.encode(out["boxes"].as_subclass(torch.Tensor), out["labels"])
        return out["image"].as_subclass(torch.Tensor), target, i


def collate(
    batch: list[tuple[torch.Tensor, dict[str, torch.Tensor], int]],
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    images = torch.stack([b[0] for b in batch])
    targets = {k: torch.stack([b[1][k] for b in batch]) for k in batch[0][1]}
    return images, targets, torch.tensor([b[2] for b in batch])


class CachedImages:
    """The network-size images of a dataset's items, decoded once per sweep into the on-disk
    image cache (`tasks.common.image_cache`) and memory-mapped by every trial and fold."""

    def __init__(self, items: list[Sample], size: int) -> None:
        from tasks.common.image_cache import ImageCache, cache_folder, settings_hash

        paths = sorted({str(s.path) for s in items})
        by_path = {str(s.path): s for s in items}
        cache = ImageCache(settings_hash({"family": "detection", "size": size, "version": 1}))

        def decode(path: str) -> np.ndarray:
            return np.ascontiguousarray(read_resized(by_path[path], size).transpose(2, 0, 1))

        self.entry = cache.ensure(paths, decode, cache_folder("detection"), workers=4)
        self.rows = self.entry.rows([str(s.path) for s in items])
        self._array: np.ndarray | None = None

    def __getitem__(self, i: int) -> np.ndarray:
        if self._array is None:  # opened lazily: DataLoader workers each map it themselves
            self._array = self.entry.open()
        return np.ascontiguousarray(self._array[self.rows[i]].transpose(1, 2, 0))


def load_cache(items: list[Sample], size: int) -> CachedImages:
    return CachedImages(items, size)

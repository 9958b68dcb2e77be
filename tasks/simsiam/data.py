"""SimSiam data: image lists (a folder or a COCO file), a seeded hold-out, two-view datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2

from orchestrator.errors import DataError
from tasks.common.manifest import load_image
from tasks.common.torch_utils import IMAGENET_MEAN, IMAGENET_STD
from tasks.simsiam.config import SimSiamAugment, SimSiamData

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


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

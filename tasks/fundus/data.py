"""Fundus data: border cropping, cached decoded images, augmentation, datasets over case tables."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2

from tasks.common.manifest import load_image
from tasks.common.torch_utils import IMAGENET_MEAN, IMAGENET_STD
from tasks.fundus.config import FundusAugment, FundusData


def crop_black_border(rgb: np.ndarray, threshold: int) -> np.ndarray:
    """Crop to the bounding box of pixels brighter than `threshold` (the fundus disc)."""
    mask = rgb.max(axis=2) > threshold
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0 or cols.size == 0:
        return rgb
    return rgb[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def read_fundus(path: str, cfg: FundusData, line: int | None = None) -> np.ndarray:
    """One image as uint8 CHW at the configured size, border cropped."""
    rgb = load_image(path, None, row_hint=line)
    if cfg.crop_border:
        rgb = crop_black_border(rgb, cfg.border_threshold)
    size = (cfg.image_size, cfg.image_size)
    resized = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
    return np.ascontiguousarray(resized.transpose(2, 0, 1))


def build_transform(aug: FundusAugment, train: bool) -> v2.Compose:
    steps: list[Any] = []
    if train:
        if aug.hflip > 0:
            steps.append(v2.RandomHorizontalFlip(aug.hflip))
        if aug.vflip > 0:
            steps.append(v2.RandomVerticalFlip(aug.vflip))
        if aug.augmix_severity > 0:
            steps.append(v2.AugMix(severity=aug.augmix_severity))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return v2.Compose(steps)


class ImageCache:
    """Decoded images by path, filled on first use (errors name the manifest line)."""

    def __init__(self, cfg: FundusData) -> None:
        self.cfg = cfg
        self.images: dict[str, np.ndarray] = {}

    def fill(self, frame: pd.DataFrame) -> None:
        for path, line in zip(frame["path"].astype(str), _lines(frame), strict=True):
            if path not in self.images:
                self.images[path] = read_fundus(path, self.cfg, line)

    def get(self, path: str, line: int | None) -> np.ndarray:
        image = self.images.get(path)
        return image if image is not None else read_fundus(path, self.cfg, line)


def _lines(frame: pd.DataFrame) -> list[int | None]:
    if "line" not in frame.columns:
        return [None] * len(frame)
    return [None if pd.isna(v) else int(v) for v in frame["line"]]


class FundusDataset(Dataset[tuple[torch.Tensor, torch.Tensor, int]]):
    """Rows of a case table; yields (image, label, row position)."""

    def __init__(
        self, frame: pd.DataFrame, transform: v2.Compose, cache: ImageCache, cfg: FundusData
    ) -> None:
        self.transform, self.cache, self.cfg = transform, cache, cfg
        self.paths: list[str] = frame["path"].astype(str).tolist()
        self.lines = _lines(frame)
        labels = frame["label"] if "label" in frame.columns else pd.Series([-1] * len(frame))
        self.labels: list[float] = labels.fillna(-1).astype(float).tolist()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image = self.cache.get(self.paths[i], self.lines[i])
        x = self.transform(torch.from_numpy(image))
        return x, torch.tensor(self.labels[i]), i

"""Fundus images for training: seed 002 preprocessing through the on-disk cache, augmentation, and
datasets over case tables.

Every image is decoded and preprocessed (`tasks.fundus.preprocess.preprocess`) once per settings
into a :class:`~tasks.fundus.preprocess.PreprocessCache` entry holding every case of the run
(train, validation, test and pool together), so all folds and trials of a sweep with the same
preprocessing share one memory-mapped file. With ``data.cache: false`` images are decoded per use.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, default_collate
from torchvision.transforms import v2

from tasks.common.image_cache import cache_folder
from tasks.common.manifest import load_image
from tasks.common.torch_utils import IMAGENET_MEAN, IMAGENET_STD
from tasks.fundus.config import FundusAugment, FundusData
from tasks.fundus.preprocess import CacheEntry, PreprocessCache, preprocess, settings_key

CACHE_ENV = "MEDSWEEP_CACHE"
BUILD_THREADS = 4  # decoding threads while a cache entry is built


def cache_root(cfg: FundusData) -> Path:
    """`data.cache_dir`, else ``$MEDSWEEP_CACHE/fundus``, else ``~/.cache/medsweep/fundus``."""
    return cache_folder("fundus", cfg.cache_dir)


def _settings(cfg: FundusData) -> dict[str, Any]:
    return {
        "crop_border": cfg.crop_border,
        "border_threshold": cfg.border_threshold,
        "central_fraction": cfg.central_fraction,
        "vessels": cfg.vessels,
        "size": cfg.size,
    }


def read_fundus(path: str, cfg: FundusData, line: int | None = None) -> np.ndarray:
    """One image as preprocessed uint8 CHW (errors name the manifest line)."""
    return preprocess(load_image(path, None, row_hint=line), **_settings(cfg))


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


class FundusImages:
    """Preprocessed images by path: rows of a cache entry, or decoded on demand.

    Picklable for DataLoader worker processes: the memory map is reopened in each process.
    """

    def __init__(self, cfg: FundusData, entry: CacheEntry | None) -> None:
        self.cfg, self.entry = cfg, entry
        self._rows = {p: i for i, p in enumerate(entry.paths)} if entry is not None else {}
        self._array: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}

    def has(self, paths: Iterable[str]) -> bool:
        return self.entry is None or all(p in self._rows for p in paths)

    def get(self, path: str, line: int | None) -> np.ndarray:
        if self.entry is None:
            return read_fundus(path, self.cfg, line)
        if self._array is None:
            self._array = self.entry.open()
        return np.array(self._array[self._rows[path]])  # a writable copy of one row


def load_images(cfg: FundusData, frame: pd.DataFrame) -> FundusImages:
    """The cache entry of every image of ``frame`` (built once per settings and image set)."""
    if not cfg.cache:
        return FundusImages(cfg, None)
    paths = sorted(set(frame["path"].astype(str)))
    lines = dict(zip(frame["path"].astype(str), _lines(frame), strict=True))
    cache = PreprocessCache(settings_key(**_settings(cfg)))

    def decode(path: str) -> np.ndarray:
        return read_fundus(path, cfg, lines.get(path))

    entry = cache.ensure(paths, decode, cache_root(cfg), workers=BUILD_THREADS)
    return FundusImages(cfg, entry)


def _lines(frame: pd.DataFrame) -> list[int | None]:
    if "line" not in frame.columns:
        return [None] * len(frame)
    return [None if pd.isna(v) else int(v) for v in frame["line"]]


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class FundusDataset(Dataset[tuple[torch.Tensor, torch.Tensor, int]]):
    """Rows of a case table; yields (image, label, row position), or whole batches.

    The DataLoader asks for whole batches (``__getitems__``), built with one stack and one
    label lookup: from the memory-mapped cache an image costs tens of microseconds, and per-item
    tuples, label tensors and ``default_collate`` cost more than that (benchmarks/bench_loader).
    """

    def __init__(self, frame: pd.DataFrame, transform: v2.Compose, images: FundusImages) -> None:
        self.transform, self.images = transform, images
        self.paths: list[str] = frame["path"].astype(str).tolist()
        self.lines = _lines(frame)
        labels = frame["label"] if "label" in frame.columns else pd.Series([-1] * len(frame))
        self.labels = torch.tensor(labels.fillna(-1).to_numpy(dtype=np.float32))

    def __len__(self) -> int:
        return len(self.paths)

    def _image(self, i: int) -> torch.Tensor:
        image = self.images.get(self.paths[i], self.lines[i])
        return self.transform(torch.from_numpy(image))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self._image(i), self.labels[i].clone(), i

    def __getitems__(self, indices: list[int]) -> Batch:
        x = torch.stack([self._image(i) for i in indices])
        return x, self.labels[indices], torch.tensor(indices)


def collate(batch: Batch | list[Any]) -> Any:
    """The DataLoader's collate_fn: a batch built whole passes through; a list of items (from a
    wrapper without ``__getitems__``) is collated as usual."""
    return batch if isinstance(batch, tuple) else default_collate(batch)

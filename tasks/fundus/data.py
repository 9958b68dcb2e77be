"""Fundus data: patient-grouped stratified splits, border cropping, cached tensors, augmentation."""

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


def split_indices(df: pd.DataFrame, cfg: FundusData) -> tuple[np.ndarray, np.ndarray]:
    """Train/val row indices: stratified by label, and grouped by patient when patient_id exists.

    Both eyes of one patient always land on the same side, so validation AUC is patient-safe.
    With `folds` set the validation split is fold `fold` of a k-fold split; otherwise a hold-out
    of about `val_fraction` (grouped hold-outs use the nearest 1/k fold).
    """
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split

    labels = df["label"].to_numpy()
    index = np.arange(len(df))
    has_groups = "patient_id" in df.columns and df["patient_id"].notna().all()
    if cfg.folds is None and not has_groups:
        train, val = train_test_split(
            index, test_size=cfg.val_fraction, stratify=labels, random_state=cfg.split_seed
        )
        return np.sort(train), np.sort(val)
    groups = df["patient_id"].to_numpy() if has_groups else index
    k = cfg.folds or max(2, round(1 / cfg.val_fraction))
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=cfg.split_seed)
    for i, (train, val) in enumerate(splitter.split(index, labels, groups)):
        if i == cfg.fold:
            return train, val
    raise AssertionError("unreachable: fold is validated against folds")


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


class FundusDataset(Dataset[tuple[torch.Tensor, torch.Tensor, int]]):
    """Rows of a manifest; yields (image, label, row index) so predictions can be de-duplicated."""

    def __init__(
        self,
        df: pd.DataFrame,
        rows: np.ndarray,
        cfg: FundusData,
        transform: v2.Compose,
        cache: dict[int, np.ndarray] | None = None,
    ) -> None:
        self.rows, self.cfg, self.transform, self.cache = rows, cfg, transform, cache
        self.paths: list[str] = df["path"].astype(str).tolist()
        self.lines: list[int] = df["line"].astype(int).tolist()
        self.labels: list[float] = df["label"].astype(float).tolist()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        row = int(self.rows[i])
        if self.cache is not None:
            image = self.cache[row]
        else:
            image = read_fundus(self.paths[row], self.cfg, self.lines[row])
        x = self.transform(torch.from_numpy(image))
        return x, torch.tensor(self.labels[row]), row


def load_cache(df: pd.DataFrame, rows: np.ndarray, cfg: FundusData) -> dict[int, np.ndarray]:
    """Decode the given rows once (errors name the manifest line)."""
    paths, lines = df["path"].astype(str).tolist(), df["line"].astype(int).tolist()
    return {int(r): read_fundus(paths[r], cfg, lines[r]) for r in rows}

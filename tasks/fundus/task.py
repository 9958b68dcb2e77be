"""Glaucoma vs non-glaucoma classification on fundus photographs with any timm backbone (seed 002).

Inputs: one manifest or several merged sources (`tasks.fundus.cases`); preprocessing: black-border
crop, central crop, optional vessel removal, resize to the configured or native size, cached on
disk (`tasks.fundus.data`); losses: BCE on the seed's smoothed targets or focal loss
(`tasks.fundus.losses`); prediction: sigmoid probabilities averaged over the configured flips
(`tasks.common.tta`), so validation, test predictions and fold ensembles all use the TTA.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from orchestrator.errors import DataError
from tasks.base import RunContext
from tasks.common import splits
from tasks.common.images import BlackPolicy, black_rows, report_skipped, without_black
from tasks.common.manifest import read_manifest
from tasks.common.metrics import classification_scores
from tasks.common.template import SupervisedTask
from tasks.common.tta import predict_tta
from tasks.fundus import cases as fundus_cases
from tasks.fundus.config import FundusConfig
from tasks.fundus.data import (
    FundusDataset,
    FundusImages,
    build_transform,
    collate,
    load_images,
)
from tasks.fundus.losses import focal_bce, smooth_targets

__all__ = ["FundusTask", "focal_bce", "smooth_targets"]


class FundusTask(SupervisedTask[FundusConfig]):
    name: ClassVar[str] = "fundus"
    description: ClassVar[str] = "Glaucoma classification from fundus photographs (seed 002)"
    config_model = FundusConfig
    default_metric: ClassVar[str] = "val_auc"
    default_mode = "max"
    synth_names: ClassVar[tuple[str, ...]] = ("fundus",)
    case_columns: ClassVar[tuple[str, ...]] = ("case", "path", "label", "patient_id", "source")

    def __init__(self, config: FundusConfig) -> None:
        super().__init__(config)
        self._table: tuple[pd.DataFrame, fundus_cases.Duplicates | None] | None = None
        self._images: FundusImages | None = None
        self._inference = False
        self.skipped_black = 0  # black images left out (data.black_images: skip)

    # --- driver side -------------------------------------------------------------------------
    def check_data(self) -> None:
        self._synthesize_if_missing()
        self._pretrained_file()  # offline without weights: DataError naming the file to place
        df, dups = self._read()
        fundus_cases.verify(self.config.data, df)
        self._check_black(df)
        if df["label"].nunique() < 2:
            raise DataError("needs both labels 0 and 1", source=self._input(), where="column label")
        if dups is not None and dups.groups:
            print(
                f"fundus: {len(dups.groups)} near-duplicate group(s) joined into one patient each "
                f"({dups.cross_source_groups} across sources); report: {dups.report}",
                file=sys.stderr,
            )

    def _black(self, df: pd.DataFrame) -> list[int]:
        d = self.config.data
        paths = df["path"].astype(str).tolist()
        return black_rows(paths, threshold=d.border_threshold, cache_dir=self._black_cache())

    def _black_cache(self) -> Path:
        from tasks.fundus.data import cache_root

        return cache_root(self.config.data) / "black"

    def _without_black(
        self, df: pd.DataFrame, policy: BlackPolicy, source: str | Path
    ) -> tuple[pd.DataFrame, int]:
        threshold, cache = self.config.data.border_threshold, self._black_cache()
        return without_black(df, policy, threshold=threshold, cache_dir=cache, source=source)

    def _check_black(self, df: pd.DataFrame) -> None:
        """`data.black_images: error` names the black images (skip: `_read` left them out)."""
        if self.config.data.black_images == "skip":
            report_skipped(self.name, self.skipped_black)
            return
        source: str | Path = self._input()
        if "source" in df.columns:  # name the first black image's own manifest
            rows = self._black(df)
            if not rows:
                return
            manifests = {s.name: s.manifest for s in fundus_cases.source_list(self.config.data)}
            name = str(df["source"].iloc[rows[0]])
            df, source = df[df["source"] == name].reset_index(drop=True), manifests[name]
        self._without_black(df, "error", source)

    def _input(self) -> str:
        d = self.config.data
        return d.manifest or (d.sources if isinstance(d.sources, str) else "data.sources")

    def _synthesize_if_missing(self) -> None:
        d = self.config.data
        target = Path(d.manifest or str(d.sources))
        if d.synth is None or target.exists():
            return
        from tasks.fundus.synth import generate

        s = d.synth
        written = generate(
            target.parent,
            n=s.n,
            size=s.size,
            seed=s.seed,
            sources=s.sources,
            difficulty=s.difficulty,
        )
        self.notes.append(f"synthesised {s.n} images: {written}")
        if written.resolve() != target.resolve():
            field = "data.manifest" if d.manifest else "data.sources"
            raise DataError(
                f"synthetic data was written to {written}; point {field} at it",
                source=target,
                where=f"field {field}",
            )

    def _pretrained_file(self) -> str | None:
        """The ImageNet weights file (None: random init, or timm downloads where allowed)."""
        from tasks.fundus.backbones import resolve_pretrained

        m = self.config.model
        if not m.pretrained or self._inference:
            return None
        return resolve_pretrained(m.backbone, m.weights, [m.weights_dir] if m.weights_dir else None)

    def data_root(self) -> Path:
        return fundus_cases.data_root(self.config.data)

    def data_summary(self) -> dict[str, Any]:
        df, dups = self._read()
        d = self.config.data
        out: dict[str, Any] = {
            "manifest": self._input(),
            "images": len(df),
            "labels": _counts(df["label"]),
            "image_size": d.size,
        }
        if self.skipped_black:
            out["black_images_skipped"] = self.skipped_black
        if "patient_id" in df.columns:
            out["patients"] = int(df["patient_id"].nunique())
        if "source" in df.columns:
            out["sources"] = {
                str(name): {"images": len(part), "labels": _counts(part["label"])}
                for name, part in df.groupby("source", sort=False)
            }
        if dups is not None:
            out["duplicates"] = dups.summary()
        return out

    @classmethod
    def synthesize(cls, out: Path, n: int, size: int, seed: int) -> Path:
        from tasks.fundus.synth import generate

        return generate(out, n=n, size=size, seed=seed)

    @classmethod
    def tiny_config(cls, data: Path) -> dict[str, Any]:
        return {
            "data": {
                "manifest": str(data),
                "image_size": 32,
                "cache_dir": str(data.parent / ".cache"),
            },
            "model": {"backbone": "resnet10t"},
            "train": {"epochs": 2, "batch_size": 8, "lr": 1e-3, "tta": ["h"]},
        }

    def _read(self) -> tuple[pd.DataFrame, fundus_cases.Duplicates | None]:
        if self._table is None:
            frame, dups = fundus_cases.read_table(self.config.data)
            if self.config.data.black_images == "skip":  # driver and workers drop the same rows
                frame, self.skipped_black = self._without_black(frame, "skip", self._input())
            self._table = (frame, dups)
        return self._table[0].copy(), self._table[1]

    def cases(self) -> pd.DataFrame:
        return self._read()[0]

    def read_cases(self, manifest: Path) -> pd.DataFrame:
        frame = read_manifest(manifest, require_labels=False)
        return frame.assign(case=frame["path"])

    def score(self, split: str, predictions: pd.DataFrame) -> dict[str, float]:
        return classification_scores(predictions)

    # --- worker side: what the template asks for -----------------------------------------------
    def setup_inference(self, ctx: RunContext) -> None:
        self._inference = True  # stored weights follow: no ImageNet file is needed
        super().setup_inference(ctx)

    def default_frames(self) -> dict[str, pd.DataFrame]:
        df, d = self.cases(), self.config.data
        held = splits.holdout(
            df["label"].to_numpy(), splits.group_ids(df, "patient_id"), d.val_fraction, d.split_seed
        )
        return {"train": df[~held].reset_index(drop=True), "val": df[held].reset_index(drop=True)}

    def collate_fn(self) -> Any:
        return collate

    def dataset(self, frame: pd.DataFrame, train: bool) -> Dataset[Any]:
        paths = set(frame["path"].astype(str))
        if self._images is None or not self._images.has(paths):
            # One cache entry for every case this run sees (all folds share it); a new manifest
            # to predict gets its own.
            known = [f for f in (getattr(self, "frames", None) or {}).values() if len(f)]
            everything = pd.concat([*known, frame], ignore_index=True)
            images = load_images(self.config.data, everything)
            if self._images is None:
                self._images = images
            return FundusDataset(frame, build_transform(self.config.augment, train), images)
        return FundusDataset(frame, build_transform(self.config.augment, train), self._images)

    def build_model(self) -> nn.Module:
        from tasks.fundus.backbones import create_classifier

        m = self.config.model
        file = self._pretrained_file()
        download = m.pretrained and not self._inference and file is None
        return create_classifier(m.backbone, 1, file, m.drop_rate, download=download)

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        x, y, _ = batch
        t = self.config.train
        logits = self.model(x).squeeze(1).float()
        target = smooth_targets(y.float(), t.label_smoothing, t.smoothing)
        if t.loss == "focal":
            return {"loss": focal_bce(logits, target, t.focal_gamma, t.focal_alpha)}
        return {"loss": F.binary_cross_entropy_with_logits(logits, target)}

    def predict_step(self, batch: Any) -> dict[str, Any]:
        prob = predict_tta(self.bare, batch[0], self.config.train.tta, "sigmoid")
        return {"score": prob.squeeze(1)}


def _counts(labels: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in sorted(Counter(labels.tolist()).items())}

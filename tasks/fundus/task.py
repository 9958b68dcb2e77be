"""Glaucoma vs non-glaucoma classification on fundus photographs with any timm backbone."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from orchestrator.errors import DataError
from tasks.common import splits
from tasks.common.manifest import read_manifest, verify_images
from tasks.common.metrics import classification_scores
from tasks.common.template import SupervisedTask
from tasks.fundus.config import FundusConfig
from tasks.fundus.data import FundusDataset, ImageCache, build_transform


def smooth_targets(y: torch.Tensor, alpha: float) -> torch.Tensor:
    """Seed 002's label smoothing: glaucoma -> 1*(1-alpha), non-glaucoma -> alpha/2."""
    return y * (1 - alpha) + (1 - y) * (alpha / 2)


def focal_bce(logits: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """Binary focal loss on soft targets (gamma=0 is plain BCE)."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    return ((1 - p_t) ** gamma * bce).mean()


def create_backbone(cfg: FundusConfig) -> nn.Module:
    """A timm model with one logit; local weights only (the classifier is re-initialised)."""
    import timm

    m = cfg.model
    kwargs: dict[str, Any] = {"num_classes": 1, "drop_rate": m.drop_rate}
    if m.pretrained and m.weights:
        kwargs["pretrained_cfg_overlay"] = {"file": str(Path(m.weights).expanduser())}
    return timm.create_model(m.backbone, pretrained=m.pretrained, **kwargs)


class FundusTask(SupervisedTask[FundusConfig]):
    name: ClassVar[str] = "fundus"
    description: ClassVar[str] = "Glaucoma classification from fundus photographs (seed 002)"
    config_model = FundusConfig
    default_metric: ClassVar[str] = "val_auc"
    default_mode = "max"
    synth_names: ClassVar[tuple[str, ...]] = ("fundus",)
    case_columns: ClassVar[tuple[str, ...]] = ("case", "path", "label", "patient_id")

    # --- driver side -------------------------------------------------------------------------
    def check_data(self) -> None:
        import timm

        cfg = self.config
        manifest, synth = Path(cfg.data.manifest), cfg.data.synth
        if synth is not None and not manifest.exists():
            written = self.synthesize(manifest.parent, n=synth.n, size=synth.size, seed=synth.seed)
            if written.resolve() != manifest.resolve():
                raise DataError(f"synthetic data was written to {written}", source=manifest)
        if not timm.is_model(cfg.model.backbone):
            close = timm.list_models(f"*{cfg.model.backbone.split('_')[0]}*")[:8]
            raise DataError(
                f"unknown timm backbone {cfg.model.backbone!r}"
                + (f"; similar names: {', '.join(close)}" if close else ""),
                where="field model.backbone",
            )
        if cfg.model.weights and not Path(cfg.model.weights).expanduser().is_file():
            raise DataError(
                "weights file not found", source=cfg.model.weights, where="field model.weights"
            )
        df = self.cases()
        verify_images(df, source=cfg.data.manifest)
        if df["label"].nunique() < 2:
            raise DataError(
                "needs both labels 0 and 1", source=cfg.data.manifest, where="column label"
            )

    def data_root(self) -> Path:
        d = self.config.data
        return Path(d.image_root or Path(d.manifest).parent).resolve()

    def data_summary(self) -> dict[str, Any]:
        df = self.cases()
        out: dict[str, Any] = {
            "manifest": self.config.data.manifest,
            "images": len(df),
            "labels": {str(k): int(v) for k, v in df["label"].value_counts().sort_index().items()},
        }
        if "patient_id" in df.columns:
            out["patients"] = int(df["patient_id"].nunique())
        return out

    @classmethod
    def synthesize(cls, out: Path, n: int, size: int, seed: int) -> Path:
        from tasks.fundus.synth import generate

        return generate(out, n=n, size=size, seed=seed)

    def cases(self) -> pd.DataFrame:
        d = self.config.data
        frame = read_manifest(
            Path(d.manifest), image_root=Path(d.image_root) if d.image_root else None
        )
        return frame.assign(case=frame["path"])

    def read_cases(self, manifest: Path) -> pd.DataFrame:
        frame = read_manifest(manifest, require_labels=False)
        return frame.assign(case=frame["path"])

    def score(self, split: str, predictions: pd.DataFrame) -> dict[str, float]:
        return classification_scores(predictions)

    # --- worker side: what the template asks for -----------------------------------------------
    def default_frames(self) -> dict[str, pd.DataFrame]:
        df, d = self.cases(), self.config.data
        held = splits.holdout(
            df["label"].to_numpy(), splits.group_ids(df, "patient_id"), d.val_fraction, d.split_seed
        )
        return {"train": df[~held].reset_index(drop=True), "val": df[held].reset_index(drop=True)}

    def dataset(self, frame: pd.DataFrame, train: bool) -> Dataset[Any]:
        if not hasattr(self, "_cache"):
            self._cache = ImageCache(self.config.data)
        if self.config.data.cache:
            self._cache.fill(frame)
        transform = build_transform(self.config.augment, train)
        return FundusDataset(frame, transform, self._cache, self.config.data)

    def build_model(self) -> nn.Module:
        return create_backbone(self.config)

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        x, y, _ = batch
        t = self.config.train
        logits = self.model(x).squeeze(1).float()
        gamma = t.focal_gamma if t.loss == "focal" else 0.0
        return {"loss": focal_bce(logits, smooth_targets(y, t.label_smoothing), gamma)}

    def predict_step(self, batch: Any) -> dict[str, Any]:
        x = batch[0]
        prob = torch.sigmoid(self.bare(x).squeeze(1).float())
        if self.config.train.tta:
            flipped = torch.sigmoid(self.bare(torch.flip(x, dims=[3])).squeeze(1).float())
            prob = (prob + flipped) / 2
        return {"score": prob}

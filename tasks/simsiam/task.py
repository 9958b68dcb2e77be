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

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from orchestrator.errors import DataError
from tasks.common.image_cache import cache_folder
from tasks.common.images import BlackPolicy, line_labels, report_skipped, without_black
from tasks.common.io import atomic_torch_save
from tasks.common.manifest import verify_images
from tasks.common.template import SupervisedTask
from tasks.simsiam.config import SimSiamConfig
from tasks.simsiam.data import TwoViews, build_augment, list_images, split_paths
from tasks.simsiam.model import SimSiam, normalized_std, simsiam_loss, simsiam_loss_per_sample

ARTIFACT = "backbone.pt"


class SimSiamTask(SupervisedTask[SimSiamConfig]):
    name: ClassVar[str] = "simsiam"
    description: ClassVar[str] = "SimSiam self-supervised backbone pretraining (seed 000)"
    config_model = SimSiamConfig
    default_metric: ClassVar[str] = "val_loss"
    default_mode = "min"
    case_columns: ClassVar[tuple[str, ...]] = ("case",)
    skipped_black: int = 0  # black images left out (data.black_images: skip)

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
        self.notes.append(f"synthesised {d.synth.n} images: {out}")
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
        paths = self._images()  # skip: the black images are left out there
        missing = [p for p in paths if not Path(p).is_file()]
        if missing:
            raise DataError(
                f"{len(missing)} image file(s) missing, e.g. {missing[:3]}", source=cfg.data.images
            )
        train, _ = split_paths(paths, cfg.data)
        if len(train) < 2:
            black = f" (after leaving out {self.skipped_black} black)" if self.skipped_black else ""
            raise DataError(
                f"found {len(paths)} image(s){black}; SimSiam needs at least 2 for training plus "
                f"a validation share of {cfg.data.val_fraction}",
                source=cfg.data.images,
            )
        verify_images(pd.DataFrame({"path": paths}), source=cfg.data.images)
        if cfg.data.black_images == "skip":
            report_skipped(self.name, self.skipped_black)
        else:
            self._without_black(paths, "error")

    def _images(self) -> list[str]:
        """The image paths, listed (and with skip, judged) once; driver and workers agree."""
        if not hasattr(self, "_image_list"):
            d = self.config.data
            paths = list_images(d)
            if d.black_images == "skip":
                paths, self.skipped_black = self._without_black(paths, "skip")
            self._image_list = paths
        return list(self._image_list)

    def _without_black(self, paths: list[str], policy: BlackPolicy) -> tuple[list[str], int]:
        d = self.config.data
        json_list = Path(d.images).suffix.lower() == ".json"
        kept, n = without_black(
            pd.DataFrame({"path": paths}),
            policy,
            threshold=d.black_threshold,
            cache_dir=cache_folder("simsiam") / "black",
            source=d.images,
            what=f"data.black_threshold ({d.black_threshold})",
            labels=_entry_labels if json_list else line_labels,
        )
        return kept["path"].tolist(), n

    def data_root(self) -> Path:
        src = Path(self.config.data.images).expanduser()
        return (src if src.is_dir() else src.parent).resolve()

    def data_summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"images": len(self._images()), "labels": "none (self-supervised)"}
        if self.skipped_black:
            out["black_images_skipped"] = self.skipped_black
        return out

    @classmethod
    def tiny_config(cls, data: Path) -> dict[str, Any]:
        return {
            "data": {"images": str(data), "image_size": 32, "val_fraction": 0.25},
            "model": {"backbone": "resnet10t", "proj_dim": 64, "pred_dim": 16},
            "train": {"epochs": 2, "batch_size": 8, "lr": 0.05},
        }

    def read_cases(self, manifest: Path) -> pd.DataFrame:
        from tasks.simsiam.config import SimSiamData

        paths = list_images(SimSiamData(images=str(manifest)))
        return pd.DataFrame({"case": paths})

    def score(self, split: str, predictions: pd.DataFrame) -> dict[str, float]:
        """SimSiam loss and output std over the fixed views (both views' z, every case)."""
        z = np.concatenate([np.stack(list(predictions[c])) for c in ("z1", "z2")])
        std = float(z.std(axis=0, ddof=1).mean()) if len(z) > 1 else float("nan")
        return {"loss": float(predictions["loss"].mean()), "std": std}

    def write_predictions(self, predictions: pd.DataFrame, path: Path) -> Path:
        """Per-image validation loss (the embeddings stay out of the CSV)."""
        return super().write_predictions(predictions.drop(columns=["z1", "z2"]), path)

    # --- worker side -------------------------------------------------------------------------
    def default_frames(self) -> dict[str, pd.DataFrame]:
        train, val = split_paths(self._images(), self.config.data)
        return {"train": pd.DataFrame({"case": train}), "val": pd.DataFrame({"case": val})}

    def dataset(self, frame: pd.DataFrame, train: bool) -> Dataset[Any]:
        cfg = self.config
        size, aug = cfg.data.image_size, build_augment(cfg.augment, cfg.data.image_size)
        seed = None if train else cfg.augment.val_seed
        return TwoViews(frame["case"].tolist(), size, aug, seed=seed, cache=cfg.data.cache)

    def build_model(self) -> nn.Module:
        m = self.config.model
        return SimSiam(m.backbone, m.proj_dim, m.pred_dim)

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        assert isinstance(model, SimSiam)
        return [
            {"params": [*model.encoder.parameters(), *model.projector.parameters()]},
            # the paper: the predictor's LR is not decayed
            {
                "params": list(model.predictor.parameters()),
                "fixed_lr": self.config.train.fix_pred_lr,
            },
        ]

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        x1, x2, _ = batch
        p1, p2, z1, z2 = self.model(x1, x2)
        std = torch.tensor(normalized_std(z1.detach()), device=z1.device)
        return {"loss": simsiam_loss(p1, p2, z1, z2), "std": std}

    def predict_step(self, batch: Any) -> dict[str, Any]:
        x1, x2, _ = batch
        p1, p2, z1, z2 = self.bare(x1, x2)
        return {
            "loss": simsiam_loss_per_sample(p1, p2, z1, z2),
            "z1": F.normalize(z1.float(), dim=1),
            "z2": F.normalize(z2.float(), dim=1),
        }

    def extra_artifacts(self, directory: Path) -> list[Path]:
        """``backbone.pt``: the encoder's state dict, for ``CenterNet(weights=...)``."""
        assert isinstance(self.bare, SimSiam)
        state = {k: v.detach().cpu() for k, v in self.bare.encoder.state_dict().items()}
        return [atomic_torch_save(state, directory / ARTIFACT)]


def _entry_labels(frame: pd.DataFrame) -> list[tuple[str, str | None]]:
    """Images of a COCO list named by entry: `list_images` keeps every one, in file order."""
    return [(f"images[{i}]: {p}", f"images[{i}]") for i, p in enumerate(frame["path"])]

"""Glaucoma vs non-glaucoma classification on fundus photographs with any timm backbone."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from orchestrator.errors import DataError
from tasks.base import RunContext, Task
from tasks.common.manifest import read_manifest, verify_images
from tasks.common.metrics import binary_metrics
from tasks.common.torch_utils import (
    autocast,
    build_optimizer,
    cosine_with_warmup,
    gather_arrays,
    make_grad_scaler,
    optimizer_step,
    unique_by_index,
)
from tasks.fundus.config import FundusConfig
from tasks.fundus.data import FundusDataset, build_transform, load_cache, split_indices


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


class FundusTask(Task[FundusConfig]):
    name: ClassVar[str] = "fundus"
    description: ClassVar[str] = "Glaucoma classification from fundus photographs (seed 002)"
    config_model = FundusConfig
    default_metric: ClassVar[str] = "val_auc"
    default_mode = "max"
    synth_names: ClassVar[tuple[str, ...]] = ("fundus",)

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
        df = self._manifest()
        verify_images(df, source=cfg.data.manifest)
        if df["label"].nunique() < 2:
            raise DataError(
                "needs both labels 0 and 1", source=cfg.data.manifest, where="column label"
            )

    @classmethod
    def synthesize(cls, out: Path, n: int, size: int, seed: int) -> Path:
        from tasks.fundus.synth import generate

        return generate(out, n=n, size=size, seed=seed)

    def _manifest(self) -> pd.DataFrame:
        d = self.config.data
        return read_manifest(
            Path(d.manifest), image_root=Path(d.image_root) if d.image_root else None
        )

    # --- worker side -------------------------------------------------------------------------
    def setup(self, ctx: RunContext) -> None:
        cfg = self.config
        self.ctx = ctx
        self.device = torch.device(ctx.device)
        self.df = self._manifest()
        train_rows, val_rows = split_indices(self.df, cfg.data)
        cache = (
            load_cache(self.df, np.concatenate([train_rows, val_rows]), cfg.data)
            if cfg.data.cache
            else None
        )
        train_ds = FundusDataset(
            self.df, train_rows, cfg.data, build_transform(cfg.augment, True), cache
        )
        val_ds = FundusDataset(
            self.df, val_rows, cfg.data, build_transform(cfg.augment, False), cache
        )
        bs, nw = cfg.train.batch_size, cfg.train.loader_workers
        self.train_loader = ctx.prepare_loader(
            DataLoader(
                train_ds, batch_size=bs, shuffle=True, num_workers=nw, drop_last=len(train_ds) > bs
            )
        )
        self.val_loader = ctx.prepare_loader(DataLoader(val_ds, batch_size=bs * 2, num_workers=nw))
        self.model = ctx.prepare_model(create_backbone(cfg))
        self.optimizer = build_optimizer(self.model.parameters(), cfg.train)
        steps = cfg.train.epochs * len(self.train_loader)
        warmup = cfg.train.warmup_epochs * len(self.train_loader)
        self.scheduler = (
            cosine_with_warmup(self.optimizer, steps, warmup)
            if cfg.train.scheduler == "cosine"
            else None
        )
        self.scaler = make_grad_scaler(self.device, cfg.train.amp)
        self.last_predictions: pd.DataFrame | None = None

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = self.config.train
        target = smooth_targets(y, t.label_smoothing)
        gamma = t.focal_gamma if t.loss == "focal" else 0.0
        return focal_bce(logits.float(), target, gamma)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        sampler = getattr(self.train_loader, "sampler", None)
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)  # reshuffle shards differently every epoch under DDP
        total, count = 0.0, 0
        for x, y, _ in self.train_loader:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with autocast(self.device, self.config.train.amp):
                logits = self.model(x).squeeze(1)
            loss = self._loss(logits, y)
            optimizer_step(loss, self.optimizer, self.scaler, self.scheduler)
            total, count = total + loss.item() * len(y), count + len(y)
        mean = gather_arrays(np.array([total]), np.array([count]))
        return {"train_loss": float(mean[0].sum() / max(1, mean[1].sum())), "train_lr": self._lr()}

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @torch.no_grad()
    def _predict(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        self.model.eval()
        rows, scores, labels, losses = [], [], [], []
        for x, y, row in self.val_loader:
            x, y = x.to(self.device), y.to(self.device)
            with autocast(self.device, self.config.train.amp):
                logits = self.model(x).squeeze(1).float()
                if self.config.train.tta:
                    flipped = self.model(torch.flip(x, dims=[3])).squeeze(1).float()
                    logits = (logits + flipped) / 2
            losses.append(
                F.binary_cross_entropy_with_logits(logits, y, reduction="none").cpu().numpy()
            )
            scores.append(torch.sigmoid(logits).cpu().numpy())
            labels.append(y.cpu().numpy())
            rows.append(np.asarray(row))
        gathered = gather_arrays(*(np.concatenate(a) for a in (rows, scores, labels, losses)))
        idx, s, lab, lo = unique_by_index(*gathered)
        return idx, s, lab, lo

    def evaluate(self, epoch: int) -> dict[str, float]:
        idx, scores, labels, losses = self._predict()
        m = binary_metrics(labels.astype(int), scores)
        self.last_predictions = pd.DataFrame(
            {"path": self.df["path"].to_numpy()[idx], "label": labels.astype(int), "score": scores}
        )
        if "patient_id" in self.df.columns:
            self.last_predictions["patient_id"] = self.df["patient_id"].to_numpy()[idx]
        out = {f"val_{k}": float(m[k]) for k in ("auc", "accuracy", "sensitivity", "specificity")}
        out["val_loss"] = float(losses.mean())
        return out

    def _bare_model(self) -> nn.Module:
        """The model without its DDP wrapper, so checkpoints load with any world size."""
        module = getattr(self.model, "module", self.model)
        assert isinstance(module, nn.Module)
        return module

    def state_dict(self) -> dict[str, Any]:
        model = self._bare_model()
        return {
            "model": model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        model = self._bare_model()
        model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])

    def save_artifacts(self, directory: Path) -> list[Path]:
        """Per-case validation predictions, readable by `medsweep eval classification`."""
        if self.last_predictions is None:
            return []
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "val_predictions.csv"
        tmp = path.with_suffix(".csv.tmp")
        self.last_predictions.to_csv(tmp, index=False)
        tmp.replace(path)
        return [path]

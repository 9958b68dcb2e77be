"""COVID-19 vs typical pneumonia on CT slices with an Attention Branch Network (seed 003).

The model is `AttentionBranchNetwork`; its attention map M is supervised by lung masks. The loss
is the seed's baseline ``L_att + L_per + gamma L_map`` or its dynamic loss ``(1 - alpha) L_per +
alpha (L_map + L_att)``, whose alpha an `AlphaHook` sets at each epoch start from
``loss.alpha`` (a `ValueScheduleConfig`: the switch point is searchable) and logs as
``train_alpha``. Metrics are slice level and patient level (mean P(COVID) over a patient's slices,
with counts as in the seed's table 2), through `classification_scores`, the code behind
``medsweep eval classification --group patient_id``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from orchestrator.errors import DataError
from tasks.abn.config import ABNConfig
from tasks.abn.data import SliceCache, SliceDataset, build_augment, check_rows, read_slices
from tasks.abn.losses import abn_parts, combine, slice_probability
from tasks.abn.model import AttentionBranchNetwork
from tasks.abn.overlay import attention_sample, overlay, save_png
from tasks.base import Hook, Task
from tasks.common import splits
from tasks.common.dicom import is_dicom
from tasks.common.io import atomic_write_csv
from tasks.common.metrics import classification_scores
from tasks.common.schedules import ValueScheduleConfig, scheduled_value, switch_epoch
from tasks.common.template import SupervisedTask

ATTENTION_DIR = "attention"


class AlphaHook(Hook):
    """The dynamic loss's alpha in force (seed 003, eq. 5): set before each epoch, logged after
    it as ``train_alpha``. Stateless: the value is a function of the epoch, also on resume."""

    def __init__(self, schedule: ValueScheduleConfig, epochs: int) -> None:
        self.schedule, self.epochs = schedule, epochs
        self.value = scheduled_value(schedule, 1, epochs)

    def on_epoch_start(self, task: Task[Any] | None, epoch: int) -> None:
        self.value = scheduled_value(self.schedule, epoch, self.epochs)

    def on_epoch_end(self, task: Task[Any] | None, epoch: int, metrics: dict[str, float]) -> None:
        metrics["train_alpha"] = float(self.value)


class ABNTask(SupervisedTask[ABNConfig]):
    name: ClassVar[str] = "abn"
    description: ClassVar[str] = "COVID-19 vs pneumonia CT slices, Attention Branch Network (003)"
    config_model = ABNConfig
    default_metric: ClassVar[str] = "val_auc"
    default_mode = "max"
    synth_names: ClassVar[tuple[str, ...]] = ("ct-pneumonia",)
    tiny_synth: ClassVar[tuple[int, int]] = (48, 48)

    # --- driver side -------------------------------------------------------------------------
    def check_data(self) -> None:
        cfg = self.config
        manifest, synth = Path(cfg.data.manifest), cfg.data.synth
        if synth is not None and not manifest.exists():
            from tasks.abn.synth import generate

            written = generate(
                manifest.parent,
                n=synth.n,
                size=synth.size,
                seed=synth.seed,
                slices_per_patient=synth.slices_per_patient,
                difficulty=synth.difficulty,
            )
            self.notes.append(f"synthesised {synth.n} slices: {written}")
            if written.resolve() != manifest.resolve():
                raise DataError(f"synthetic data was written to {written}", source=manifest)
        self._check_model()
        cases = self.cases()
        check_rows(cases, manifest)
        if cases["label"].nunique() < 2:
            raise DataError("needs both labels 0 and 1", source=manifest, where="column label")

    def _check_model(self) -> None:
        m = self.config.model
        if m.weights and not Path(m.weights).expanduser().is_file():
            raise DataError("weights file not found", source=m.weights, where="field model.weights")
        try:
            self.build_model()
        except (ValueError, RuntimeError) as exc:  # timm: unknown model; ABN: not ResNet-like
            raise DataError(str(exc), where="field model.backbone") from None

    def data_root(self) -> Path:
        d = self.config.data
        return Path(d.image_root or Path(d.manifest).parent).resolve()

    def data_summary(self) -> dict[str, Any]:
        df = self.cases()
        patients = df.drop_duplicates("patient_id")
        return {
            "manifest": self.config.data.manifest,
            "slices": len(df),
            "patients": len(patients),
            "labels": {str(k): int(v) for k, v in df["label"].value_counts().sort_index().items()},
            "patient_labels": {
                str(k): int(v) for k, v in patients["label"].value_counts().sort_index().items()
            },
            "dicom_slices": sum(is_dicom(p) for p in df["path"]),
        }

    @classmethod
    def synthesize(cls, out: Path, n: int, size: int, seed: int) -> Path:
        from tasks.abn.synth import generate

        return generate(out, n=n, size=size, seed=seed)

    @classmethod
    def tiny_config(cls, data: Path) -> dict[str, Any]:
        return {
            "data": {"manifest": str(data), "image_size": 48},
            "model": {"backbone": "resnet10t"},
            "train": {"epochs": 2, "batch_size": 8, "lr": 1e-3},
            "eval": {"attention_samples": 2},
        }

    def cases(self) -> pd.DataFrame:
        if not hasattr(self, "_cases"):
            d = self.config.data
            self._cases = read_slices(Path(d.manifest), d.image_root)
        return self._cases

    def read_cases(self, manifest: Path) -> pd.DataFrame:
        return read_slices(Path(manifest), None, training=False)

    def score(self, split: str, predictions: pd.DataFrame) -> dict[str, float]:
        return classification_scores(predictions, patient=True)

    def sweep_warnings(self, experiment: dict[str, Any]) -> list[str]:
        """ASHA comparing trials before the dynamic loss has switched alpha."""
        sweep = experiment.get("sweep") or {}
        scheduler, space = sweep.get("scheduler") or {}, sweep.get("space") or {}
        if scheduler.get("type") != "asha" or not self._dynamic_searched(space):
            return []
        grace = int(scheduler.get("grace_period", 1))
        latest = self._latest_switch(space)
        if latest <= grace:
            return []
        return [
            f"ASHA (sweep.scheduler, grace_period {grace}) starts comparing and stopping trials "
            f"at epoch {grace}, but the dynamic loss switches alpha from loss.alpha.start to "
            f"loss.alpha.end only at epoch {latest}: trials are judged under a different loss "
            f"than the one they finish with. Set sweep.scheduler.grace_period to at least "
            f"{latest}, move loss.alpha.switch earlier, or drop the scheduler."
        ]

    def _dynamic_searched(self, space: dict[str, Any]) -> bool:
        dim = space.get("loss.mode")
        if dim is None:
            return self.config.loss.mode == "dynamic"
        return "dynamic" in (dim.get("values") or [])

    def _latest_switch(self, space: dict[str, Any]) -> int:
        """The latest first epoch with alpha_low over the searched switch points and epochs
        (0 when no searched combination switches within its epochs)."""
        alpha = self.config.loss.alpha
        latest = 0
        for epochs in _candidates(space.get("train.epochs"), self.config.train.epochs):
            for switch in _candidates(space.get("loss.alpha.switch"), alpha.switch):
                if switch <= 0:
                    continue
                point = switch_epoch(alpha.model_copy(update={"switch": switch}), int(epochs))
                first = math.ceil(point)
                if first <= epochs:
                    latest = max(latest, first)
        return latest

    # --- worker side: what the template asks for ---------------------------------------------
    def default_frames(self) -> dict[str, pd.DataFrame]:
        df, d = self.cases(), self.config.data
        held = splits.holdout(
            df["label"].to_numpy(), splits.group_ids(df, "patient_id"), d.val_fraction, d.split_seed
        )
        return {"train": df[~held].reset_index(drop=True), "val": df[held].reset_index(drop=True)}

    def dataset(self, frame: pd.DataFrame, train: bool) -> Dataset[Any]:
        if not hasattr(self, "_cache"):
            self._cache = SliceCache(self.config.data, self.config.data.manifest)
        if self.config.data.cache:
            self._cache.fill(frame)
        augment = build_augment(self.config.augment) if train else None
        return SliceDataset(frame, self._cache, augment, self.config.model.in_chans)

    def build_model(self) -> nn.Module:
        m = self.config.model
        return AttentionBranchNetwork(
            m.backbone,
            num_classes=2,
            in_chans=m.in_chans,
            weights=Path(m.weights).expanduser() if m.pretrained and m.weights else None,
            att_channels=m.att_channels,
        )

    def build_hooks(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> list[Hook]:
        loss = self.config.loss
        if loss.mode != "dynamic":
            return []  # the baseline has no alpha; nothing to switch or log
        self.alpha_hook = AlphaHook(loss.alpha, self.config.train.epochs)
        return [self.alpha_hook]

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        x, mask, y, _ = batch
        loss = self.config.loss
        parts = abn_parts(self.model(x), y, mask, loss.map_kind)
        alpha = self.alpha_hook.value if loss.mode == "dynamic" else 0.0
        total = combine(parts, loss.mode, loss.gamma, alpha)
        return {"loss": total, **{f"loss_{k}": v.detach() for k, v in parts.items()}}

    def predict_step(self, batch: Any) -> dict[str, Any]:
        return {"score": slice_probability(self.bare(batch[0]))}

    @torch.no_grad()
    def attention_maps(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Attention maps M ``[N, h, w]`` and P(COVID) ``[N]`` of a case table's slices."""
        ds = self.dataset(frame, train=False)
        x = torch.stack([ds[i][0] for i in range(len(frame))]).to(self.device)
        self.bare.eval()
        out = self.bare(x)
        return out.attention[:, 0].float().cpu().numpy(), slice_probability(out).cpu().numpy()

    def extra_artifacts(self, directory: Path) -> list[Path]:
        """Attention overlays of `eval.attention_samples` fixed validation slices (best epoch):
        ``attention/case_<index>.png`` (index = row in the validation predictions) and
        ``attention/cases.csv`` (score and mean M inside and outside the lungs per slice)."""
        frame = self.frames["val"]
        rows = attention_sample(frame, self.config.eval.attention_samples)
        if not rows:
            return []
        chosen = frame.iloc[rows].reset_index(drop=True)
        maps, scores = self.attention_maps(chosen)
        folder, written, table = directory / ATTENTION_DIR, [], []
        for j, row in enumerate(rows):
            pixels, lung = self._cache.get(*_pair_key(chosen.iloc[j]))
            name = f"case_{row:05d}.png"
            written.append(save_png(overlay(pixels, lung, maps[j]), folder / name))
            table.append({"index": row, "file": name, "score": float(scores[j])})
            table[-1].update(_inside(maps[j], lung))
        ident = chosen[[c for c in self.case_columns if c in chosen.columns]]
        info = pd.concat([pd.DataFrame(table), ident], axis=1)
        written.append(atomic_write_csv(self.ctx.privacy(info), folder / "cases.csv"))
        return written


def _pair_key(row: pd.Series) -> tuple[str, str, int | None]:
    line = row.get("line")
    return str(row["path"]), str(row.get("mask") or ""), None if pd.isna(line) else int(line)


def _inside(attention: np.ndarray, lung: np.ndarray) -> dict[str, float]:
    """Mean attention inside and outside the lung mask (the mask area-resized to M's grid)."""
    import cv2

    h, w = attention.shape
    share = cv2.resize(lung.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) >= 0.5
    inside = float(attention[share].mean()) if share.any() else math.nan
    outside = float(attention[~share].mean()) if (~share).any() else math.nan
    return {"attention_lung": inside, "attention_outside": outside}


def _candidates(dim: dict[str, Any] | None, default: float) -> list[float]:
    """Values a searched dimension can take at its extremes (the config value if not searched)."""
    if dim is None:
        return [float(default)]
    if dim.get("type") == "choice":
        return [float(v) for v in dim.get("values") or [] if isinstance(v, int | float)]
    low, high = float(dim.get("low", default)), float(dim.get("high", default))
    # a range across 1 holds fractions just below 1 too (the latest fractional switch)
    return [low, high] + ([math.nextafter(1.0, 0.0)] if low < 1.0 <= high else [])

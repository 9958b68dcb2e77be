"""Unsupervised anomaly detection on chest radiographs with a Glow likelihood (seed 001, 0.783).

The flow is trained by maximum likelihood on **normal images only** (label 0 rows of the
training split; abnormal rows there are ignored). Validation scores normal and abnormal images of
the validation split; the image score is configurable (`score.kind`):

* ``nll``: negative log-likelihood in bits/dim (deterministic, bin-centre dequantisation);
* ``complexity``: NLL minus the image's lossless PNG length in bits/dim (Serra et al. 2020),
  because raw likelihood favours simple images;
* ``emphasis_max``: the peak of the Gaussian-smoothed per-pixel NLL map (bits/pixel): a focal
  lesion barely moves the image mean but stands out locally.

Every epoch reports ``val_auc`` (the configured score), the AUC of each score kind and ``val_bpd``
(NLL of the normal validation images). With ``cv: {folds: 1, test_fraction: 0.3}`` the abnormal
images that pick the best epoch (validation) are never the reported ones (``test_auc``).

Predictions keep, for a fixed sample of each split (half abnormal), the emphasis map (per-pixel
NLL, smoothed, normalised) and the image; `write_predictions` writes them as overlays next to
the CSV (``<stem>_overlays/``), as the seed showed radiologists.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from PIL import Image
from scipy import ndimage
from torch import nn
from torch.utils.data import Dataset

from orchestrator.errors import DataError
from tasks.anomaly.config import GlowConfig
from tasks.anomaly.glow import Glow, bits_per_dim, preprocess
from tasks.anomaly.scores import anomaly_score, emphasis_map, overlay_png, png_bits_per_dim
from tasks.common import splits
from tasks.common.image_cache import cache_folder
from tasks.common.images import BlackPolicy, report_skipped, without_black
from tasks.common.io import atomic_write, atomic_write_csv
from tasks.common.manifest import read_manifest, verify_images
from tasks.common.metrics import binary_metrics
from tasks.common.template import SupervisedTask

SCORE_COLUMNS = {"nll": "nll_bpd", "complexity": "complexity", "emphasis_max": "emphasis_max"}


def load_gray(path: str, size: int, where: str | None) -> np.ndarray:
    """An image as uint8 [size, size] grayscale; 16-bit images are min-max scaled to 8 bits."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I", "F"):
                arr = np.asarray(img, dtype=np.float64)
                span = float(arr.max() - arr.min()) or 1.0
                scaled = ((arr - arr.min()) / span * 255 + 0.5).astype(np.uint8)
                gray = Image.fromarray(scaled)
            else:
                gray = img.convert("L")
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read image: {exc}", source=path, where=where) from exc
    if gray.size != (size, size):
        gray = gray.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(gray, dtype=np.uint8)


class CxrDataset(Dataset[tuple[torch.Tensor, bool, int]]):
    """Items ``(uint8 [1, H, W], keep_map, row position)``; ``keep_map`` marks overlay cases."""

    def __init__(self, images: np.ndarray, positions: np.ndarray, keep: np.ndarray) -> None:
        self.images, self.positions, self.keep = images, positions, keep

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, bool, int]:
        img = torch.from_numpy(self.images[i])[None]
        return img, bool(self.keep[i]), int(self.positions[i])


def overlay_rows(labels: np.ndarray | None, k: int) -> np.ndarray:
    """Row positions of the overlay sample: the first ``k // 2`` abnormal rows and normal rows
    up to ``k`` in all (or the first ``k`` rows without labels)."""
    if labels is None:
        return np.arange(k)
    abnormal = np.flatnonzero(labels == 1)[: k // 2]
    normal = np.flatnonzero(labels == 0)[: k - len(abnormal)]
    return np.sort(np.concatenate([abnormal, normal]))


def safe_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC (the shared implementation); NaN when a score is not finite."""
    if not np.isfinite(scores).all():
        return math.nan
    return float(binary_metrics(labels, scores)["auc"])


class GlowTask(SupervisedTask[GlowConfig]):
    name: ClassVar[str] = "glow"
    description: ClassVar[str] = "Glow likelihood anomaly detection on chest X-rays (seed 001)"
    config_model = GlowConfig
    default_metric: ClassVar[str] = "val_auc"
    default_mode = "max"
    synth_names: ClassVar[tuple[str, ...]] = ("cxr-anomaly",)
    pseudo_labelling: ClassVar[bool] = False
    case_columns: ClassVar[tuple[str, ...]] = ("case", "path", "label", "mask", "patient_id")
    tiny_synth: ClassVar[tuple[int, int]] = (48, 32)
    skipped_black: int = 0  # black images left out (data.black_images: skip)

    # --- driver side -------------------------------------------------------------------------
    def check_data(self) -> None:
        d = self.config.data
        manifest = Path(d.manifest)
        if d.synth is not None and not manifest.exists():
            written = self.synthesize(manifest.parent, d.synth.n, d.synth.size, d.synth.seed)
            self.notes.append(f"synthesised {d.synth.n} images: {written}")
            if written.resolve() != manifest.resolve():
                raise DataError(f"synthetic data was written to {written}", source=manifest)
        df = self.cases()  # skip: the black images are left out there
        verify_images(df, source=manifest)
        if d.black_images == "skip":
            report_skipped(self.name, self.skipped_black)
        else:
            self._without_black(df, "error")
        for label, why in ((0, "the flow learns normal anatomy only"), (1, "ROC-AUC needs them")):
            if not (df["label"] == label).any():
                kind = "normal" if label == 0 else "abnormal"
                raise DataError(
                    f"no {kind} (label {label}) image: {why}", source=manifest, where="column label"
                )

    def data_root(self) -> Path:
        d = self.config.data
        return Path(d.image_root or Path(d.manifest).parent).resolve()

    def data_summary(self) -> dict[str, Any]:
        df = self.cases()
        counts = df["label"].value_counts()
        return {
            "manifest": self.config.data.manifest,
            "images": len(df),
            "normal": int(counts.get(0, 0)),
            "abnormal": int(counts.get(1, 0)),
        } | ({"black_images_skipped": self.skipped_black} if self.skipped_black else {})

    @classmethod
    def synthesize(cls, out: Path, n: int, size: int, seed: int) -> Path:
        from tasks.anomaly.synth import generate_cxr

        return generate_cxr(out, n=n, size=size, seed=seed)

    @classmethod
    def tiny_config(cls, data: Path) -> dict[str, Any]:
        return {
            "data": {"manifest": str(data), "image_size": 16},
            "model": {"levels": 2, "depth": 2, "width": 8},
            "score": {"overlays": 2},
            "train": {"epochs": 2, "batch_size": 8},
        }

    def cases(self) -> pd.DataFrame:
        if not hasattr(self, "_table"):  # read (and with skip, judged) once
            d = self.config.data
            root = Path(d.image_root) if d.image_root else None
            frame = _with_case(read_manifest(Path(d.manifest), image_root=root))
            if d.black_images == "skip":  # driver and workers leave out the same rows
                frame, self.skipped_black = self._without_black(frame, "skip")
            self._table = frame
        return self._table.copy()

    def _without_black(self, frame: pd.DataFrame, policy: BlackPolicy) -> tuple[pd.DataFrame, int]:
        d = self.config.data
        return without_black(
            frame,
            policy,
            threshold=d.black_threshold,
            cache_dir=cache_folder("glow") / "black",
            source=d.manifest,
            what=f"data.black_threshold ({d.black_threshold})",
            stretch=True,  # `load_gray` min-max scales 16-bit images
        )

    def read_cases(self, manifest: Path) -> pd.DataFrame:
        return _with_case(read_manifest(manifest, require_labels=False))

    def score(self, split: str, predictions: pd.DataFrame) -> dict[str, float]:
        """AUC of the configured score and of every kind; bits/dim of normal and abnormal."""
        labels = predictions["label"].to_numpy().astype(np.int64)
        out: dict[str, float] = {}
        if len(np.unique(labels)) == 2:  # undefined otherwise: left out, not NaN (= diverged)
            out["auc"] = safe_auc(labels, predictions["score"].to_numpy(np.float64))
            for kind, col in SCORE_COLUMNS.items():
                out[f"auc_{kind}"] = safe_auc(labels, predictions[col].to_numpy(np.float64))
        nll = predictions["nll_bpd"].to_numpy(np.float64)
        if (labels == 0).any():
            out["bpd"] = float(nll[labels == 0].mean())
        if (labels == 1).any():
            out["bpd_abnormal"] = float(nll[labels == 1].mean())
        return out

    @classmethod
    def pseudo_labels(cls, predictions: pd.DataFrame, high: float, low: float) -> pd.DataFrame:
        raise NotImplementedError("an anomaly score is not a probability to pseudo-label from")

    def write_predictions(self, predictions: pd.DataFrame, path: Path) -> Path:
        """The CSV, plus emphasis overlays of the sampled cases in ``<stem>_overlays/``."""
        keep = [c for c in predictions.columns if not c.startswith("_")]
        written = atomic_write_csv(predictions[keep], path)
        if "_emphasis" in predictions.columns:
            self._write_overlays(predictions, path.parent / f"{path.stem}_overlays")
        return written

    def _write_overlays(self, predictions: pd.DataFrame, folder: Path) -> list[Path]:
        out = []
        labels = predictions["label"] if "label" in predictions else [-1] * len(predictions)
        rows = zip(predictions["index"], predictions["case"], labels, strict=True)
        for (index, case, label), emph, image in zip(
            rows, predictions["_emphasis"], predictions["_image"], strict=True
        ):
            if not isinstance(emph, np.ndarray):  # not in the overlay sample
                continue
            kind = {0: "normal", 1: "abnormal"}.get(int(label), "case")
            target = folder / f"{int(index):05d}_{kind}_{Path(str(case)).stem}.png"
            write = partial(_overlay, image, emph, self.config.score.alpha)
            out.append(atomic_write(target, write))
        return out

    # --- worker side -------------------------------------------------------------------------
    def default_frames(self) -> dict[str, pd.DataFrame]:
        df, d = self.cases(), self.config.data
        groups = splits.group_ids(df, "patient_id")
        held = splits.holdout(df["label"].to_numpy(), groups, d.val_fraction, d.split_seed)
        return {"train": df[~held].reset_index(drop=True), "val": df[held].reset_index(drop=True)}

    def _images(self, frame: pd.DataFrame) -> np.ndarray:
        if not hasattr(self, "_cache"):
            self._cache: dict[str, np.ndarray] = {}
        size = self.config.data.image_size
        lines = frame["line"].tolist() if "line" in frame else [None] * len(frame)
        for path, line in zip(frame["path"], lines, strict=True):
            if path not in self._cache:
                where = f"manifest line {int(line)}" if line is not None else None
                self._cache[path] = load_gray(str(path), size, where)
        empty = np.zeros((0, size, size), np.uint8)
        return np.stack([self._cache[p] for p in frame["path"]]) if len(frame) else empty

    def dataset(self, frame: pd.DataFrame, train: bool) -> Dataset[Any]:
        labels = frame["label"].to_numpy() if "label" in frame else None
        if train:
            if labels is None or not (labels == 0).any():
                raise DataError(
                    f"the training split ({len(frame)} images) has no normal (label 0) image; "
                    "the flow is trained on normal images only",
                    source=self.config.data.manifest,
                    where="column label",
                )
            rows = np.flatnonzero(labels == 0)  # abnormal training rows are never seen
            keep = np.zeros(len(rows), bool)
        else:
            rows = np.arange(len(frame))
            keep = np.isin(rows, overlay_rows(labels, self.config.score.overlays))
        ds = CxrDataset(self._images(frame.iloc[rows]), rows, keep)
        if train:
            self._train_images = ds.images
        return ds

    def build_model(self) -> nn.Module:
        m = self.config.model
        model = Glow(1, m.levels, m.depth, m.width, m.lu, m.checkpointing)
        # ActNorm's data-dependent init on fixed training images (the first batch of the split,
        # bin centres): the same on every DDP rank and independent of the RNG.
        first = torch.from_numpy(self._train_images[: self.config.train.batch_size])[:, None]
        with torch.no_grad():
            model(preprocess(first, m.n_bits, noise=False)[0])
        return model

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        x = batch[0]
        m = self.config.model
        y, const = preprocess(x, m.n_bits, noise=m.dequantize == "uniform")
        _, logdet, log_p = self.model(y)
        return {"loss": bits_per_dim(log_p + logdet + const, y[0].numel()).mean()}

    def predict_step(self, batch: Any) -> dict[str, Any]:
        x, keep, _ = batch
        m, s = self.config.model, self.config.score
        y, _ = preprocess(x, m.n_bits, noise=False)
        # Per-pixel NLL in bits: the map sums to -log p(y); the dequantisation constant adds
        # n_bits per pixel, so its mean is the image's bits/dim (one channel).
        assert isinstance(self.bare, Glow)
        bits = (self.bare.pixel_nll_map(y).float() / math.log(2.0) + m.n_bits).cpu().numpy()
        smooth = ndimage.gaussian_filter(bits.astype(np.float64), (0, s.sigma, s.sigma))
        quantised = (x[:, 0] >> (8 - m.n_bits)).cpu().numpy().astype(np.uint8)
        nll = bits.mean(axis=(1, 2)).astype(np.float64)
        png = png_bits_per_dim(quantised)
        keep_np = keep.cpu().numpy()
        out: dict[str, Any] = {
            "nll_bpd": nll,
            "png_bpd": png,
            "complexity": anomaly_score(nll, png, "complexity"),
            "emphasis_max": smooth.reshape(len(nll), -1).max(axis=1),
        }
        return {
            **out,
            "score": out[SCORE_COLUMNS[s.kind]],
            "_emphasis": [
                emphasis_map(smooth[i], 0).astype(np.float32) if k else None
                for i, k in enumerate(keep_np)
            ],
            "_image": [x[i, 0].cpu().numpy() if k else None for i, k in enumerate(keep_np)],
        }


def _overlay(image: np.ndarray, emphasis: np.ndarray, alpha: float, path: Path) -> Path:
    return overlay_png(image, emphasis, path, alpha=alpha)


def _with_case(frame: pd.DataFrame) -> pd.DataFrame:
    """`case` = the image path; an all-empty mask column parses as NaN, made text again."""
    if "mask" in frame.columns:
        frame["mask"] = frame["mask"].astype(object).where(frame["mask"].notna(), "").astype(str)
    return frame.assign(case=frame["path"])

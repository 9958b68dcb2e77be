"""FDG-PET/CT anomaly detection by conditional regression (seed 001: 77.8 % at 3 FP/case).

A 2-D U-Net reads the CT slice and predicts, per pixel, the mean and the standard deviation of
the PET (SUV) under normal anatomy; it is trained with the Gaussian NLL on **normal pairs only**
(label 0 rows of the training split), inside the body. At prediction ``z = (PET - mean) / std``
(0 outside the body); the candidates are the connected components of ``z >= eval.threshold``,
each scored by its peak z, and `tasks.common.froc` (the one FROC implementation) gives the
lesion-level sensitivity at ``eval.fps`` false positives per case: ``froc_s0.5 ... froc_s8`` and
``froc_mean``; ``auc`` is the image-level ROC-AUC of the peak z.

Fold ensemble (`ensemble`): the folds' predictive Gaussians form a mixture whose mean is the mean
of the means and whose variance is the mean of ``std**2 + mean**2`` minus the squared mixture
mean (deep-ensemble style), so disagreement between folds widens the std instead of averaging
z-maps computed under different scales; the ensemble z is taken under that Gaussian.

`write_predictions` writes, next to the CSV (``case, label, max_z, n_candidates, zmap, ...``),
the z-maps (``<stem>_zmaps/*.npy``), the lesion masks and their listing (``<stem>_lesions.csv``)
so that ``medsweep eval froc --gt <stem>_lesions.csv --pred <stem>.csv`` reproduces the stored
numbers, the FROC curve as points and PNG (``<stem>_froc.json/.png``) and z-map overlays of a few
cases on the CT with the lesion outlines (``<stem>_overlays/``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from PIL import Image
from scipy import ndimage
from torch import nn
from torch.utils.data import Dataset

from orchestrator.errors import DataError
from tasks.anomaly.config import PetCtConfig
from tasks.anomaly.glow_task import overlay_rows, safe_auc
from tasks.anomaly.petct_data import Pair, PairDataset, load_nth, load_pair, read_pairs
from tasks.anomaly.scores import overlay_png
from tasks.anomaly.unet import UNet, gaussian_nll, zscore
from tasks.common import splits
from tasks.common.froc import FrocResult, candidates, froc, froc_figure
from tasks.common.io import atomic_save_figure, atomic_write, atomic_write_csv, atomic_write_json
from tasks.common.template import SupervisedTask


class PetCtTask(SupervisedTask[PetCtConfig]):
    name: ClassVar[str] = "petct"
    description: ClassVar[str] = "PET-from-CT U-Net z-maps, lesion-level FROC (seed 001)"
    config_model = PetCtConfig
    default_metric: ClassVar[str] = "val_froc_s3"
    default_mode = "max"
    synth_names: ClassVar[tuple[str, ...]] = ("petct",)
    pseudo_labelling: ClassVar[bool] = False
    case_columns: ClassVar[tuple[str, ...]] = ("case", "mask", "label", "patient_id")
    tiny_synth: ClassVar[tuple[int, int]] = (40, 32)

    # --- driver side -------------------------------------------------------------------------
    def check_data(self) -> None:
        d = self.config.data
        manifest = Path(d.manifest)
        if d.synth is not None and not manifest.exists():
            written = self.synthesize(manifest.parent, d.synth.n, d.synth.size, d.synth.seed)
            self.notes.append(f"synthesised {d.synth.n} image pairs: {written}")
            if written.resolve() != manifest.resolve():
                raise DataError(f"synthetic data was written to {written}", source=manifest)
        df = self.cases()
        for label, why in ((0, "the U-Net learns normal uptake only"), (1, "FROC needs lesions")):
            if not (df["label"] == label).any():
                kind = "normal" if label == 0 else "abnormal"
                raise DataError(
                    f"no {kind} (label {label}) case: {why}", source=manifest, where="column label"
                )
        first: tuple[int, ...] | None = None
        for row in df.itertuples(index=False):  # reads and checks every pair (kept nowhere)
            shape = load_pair(row, self.config)[0].shape
            first = first or shape
            if shape != first:
                raise DataError(
                    f"slice size {shape} differs from the first pair's {first}; set "
                    "data.image_size to resize",
                    source=manifest,
                    where=f"line {row.line}",
                )

    def data_root(self) -> Path:
        d = self.config.data
        return Path(d.image_root or Path(d.manifest).parent).resolve()

    def data_summary(self) -> dict[str, Any]:
        df = self.cases()
        return {
            "manifest": self.config.data.manifest,
            "pairs": len(df),
            "normal": int((df["label"] == 0).sum()),
            "abnormal": int((df["label"] == 1).sum()),
        }

    @classmethod
    def synthesize(cls, out: Path, n: int, size: int, seed: int) -> Path:
        from tasks.anomaly.synth import generate_petct

        return generate_petct(out, n=n, size=size, seed=seed)

    @classmethod
    def tiny_config(cls, data: Path) -> dict[str, Any]:
        return {
            "data": {"manifest": str(data)},
            "model": {"levels": 2, "width": 4},
            "eval": {"overlays": 2},
            "train": {"epochs": 2, "batch_size": 8},
        }

    def cases(self) -> pd.DataFrame:
        d = self.config.data
        return read_pairs(Path(d.manifest), d.image_root)

    def read_cases(self, manifest: Path) -> pd.DataFrame:
        return read_pairs(manifest, require_labels=False)

    def froc_result(self, predictions: pd.DataFrame) -> FrocResult:
        """Lesion-level FROC of per-case z-maps against their lesion masks."""
        if "_mask" not in predictions.columns:
            raise ValueError("predictions carry no lesion masks to score against")
        e = self.config.eval
        cases = [
            (candidates(z, e.threshold, e.connectivity), mask)
            for z, mask in zip(predictions["_z"], predictions["_mask"], strict=True)
        ]
        return froc(cases, e.fps, e.hit, names=[str(c) for c in predictions["case"]])

    def score(self, split: str, predictions: pd.DataFrame) -> dict[str, float]:
        result = self.froc_result(predictions)
        out: dict[str, float] = {}
        if result.n_lesions:  # undefined otherwise: left out, not NaN (= diverged)
            for rate, sens in zip(result.fps_per_case, result.sensitivity_at, strict=True):
                out[f"froc_s{rate:g}"] = float(sens)
            out["froc_mean"] = result.mean_sensitivity
        out["candidates_per_case"] = result.n_candidates / result.n_cases
        labels = predictions["label"].to_numpy().astype(np.int64)
        if len(np.unique(labels)) == 2:
            out["auc"] = safe_auc(labels, predictions["max_z"].to_numpy(np.float64))
        return out

    @classmethod
    def ensemble(cls, predictions: Sequence[pd.DataFrame]) -> pd.DataFrame:
        """The folds' Gaussians as one mixture per pixel (module docstring); z under it."""
        merged = pd.concat(list(predictions), ignore_index=True)
        rows = []
        for _, group in merged.groupby("case", sort=False):
            row = group.iloc[0].copy()
            means = np.stack(group["_mean"].tolist()).astype(np.float64)
            stds = np.stack(group["_std"].tolist()).astype(np.float64)
            pet = means[0] + stds[0] * np.asarray(row["_z"], np.float64)  # the observed PET
            mu = means.mean(axis=0)
            var = np.maximum((stds**2 + means**2).mean(axis=0) - mu**2, stds.min(axis=0) ** 2)
            std = np.sqrt(var)
            z = np.where(row["_body"], (pet - mu) / std, 0.0).astype(np.float32)
            row["_z"], row["_mean"], row["_std"] = z, mu.astype(np.float32), std.astype(np.float32)
            row["max_z"] = float(z.max())
            rows.append(row.drop(labels=["n_candidates"], errors="ignore"))
        return pd.DataFrame(rows).infer_objects().reset_index(drop=True)

    @classmethod
    def pseudo_labels(cls, predictions: pd.DataFrame, high: float, low: float) -> pd.DataFrame:
        raise NotImplementedError("pseudo-labelling is not defined for z-map anomaly detection")

    # --- worker side -------------------------------------------------------------------------
    def default_frames(self) -> dict[str, pd.DataFrame]:
        df, d = self.cases(), self.config.data
        groups = splits.group_ids(df, "patient_id")
        held = splits.holdout(df["label"].to_numpy(), groups, d.val_fraction, d.split_seed)
        return {"train": df[~held].reset_index(drop=True), "val": df[held].reset_index(drop=True)}

    def _pair(self, row: Any) -> Pair:
        """One pair, kept in memory with `data.cache`."""
        if not self.config.data.cache:
            return load_pair(row, self.config)
        if not hasattr(self, "_cache"):
            self._cache: dict[str, Pair] = {}
        key = str(row.case)
        if key not in self._cache:
            self._cache[key] = load_pair(row, self.config)
        return self._cache[key]

    def dataset(self, frame: pd.DataFrame, train: bool) -> Dataset[Any]:
        labels = frame["label"].to_numpy() if "label" in frame else None
        if train:
            if labels is None or not (labels == 0).any():
                raise DataError(
                    f"the training split ({len(frame)} pairs) has no normal (label 0) pair; "
                    "the U-Net is trained on normal pairs only",
                    source=self.config.data.manifest,
                    where="column label",
                )
            rows = np.flatnonzero(labels == 0)  # abnormal training rows are never seen
            keep = np.zeros(len(rows), bool)
        else:
            rows = np.arange(len(frame))
            keep = np.isin(rows, overlay_rows(labels, self.config.eval.overlays))
        # plain records: picklable for loader worker processes
        records = [
            SimpleNamespace(**{str(k): v for k, v in r.items()})
            for r in frame.iloc[rows].to_dict("records")
        ]
        if self.config.data.cache:
            pairs = [self._pair(r) for r in records]
            return PairDataset(pairs.__getitem__, rows, keep)
        return PairDataset(partial(load_nth, records, self.config), rows, keep)

    def build_model(self) -> nn.Module:
        m = self.config.model
        return UNet(1, m.levels, m.width, m.std_floor, m.up)

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        x, pet, _, body, _, _ = batch
        mean, std = self.model(x)
        return {"loss": gaussian_nll(mean.float(), std.float(), pet, mask=body)}

    def predict_step(self, batch: Any) -> dict[str, Any]:
        x, pet, mask, body, keep, _ = batch
        mean, std = self.bare(x)
        z = torch.where(body, zscore(mean.float(), std.float(), pet), 0.0)[:, 0].cpu().numpy()
        e = self.config.eval
        n = [len(candidates(zi, e.threshold, e.connectivity)) for zi in z]
        keep_np = keep.cpu().numpy()
        ct = (x[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        return {
            "max_z": z.reshape(len(z), -1).max(axis=1).astype(np.float64),
            "n_candidates": np.asarray(n, np.int64),
            "_z": list(z.astype(np.float32)),
            "_mean": list(mean[:, 0].float().cpu().numpy()),
            "_std": list(std[:, 0].float().cpu().numpy()),
            "_mask": list(mask[:, 0].cpu().numpy().astype(np.uint8)),
            "_body": list(body[:, 0].cpu().numpy()),
            "_ct": [ct[i] if k else None for i, k in enumerate(keep_np)],
        }

    # --- files -------------------------------------------------------------------------------
    def write_predictions(self, predictions: pd.DataFrame, path: Path) -> Path:
        """The CSV and its companions (module docstring)."""
        stem = path.parent / path.stem
        frame = predictions.reset_index(drop=True)
        names = [f"{int(i):05d}" for i in frame["index"]]
        for name, z in zip(names, frame["_z"], strict=True):
            atomic_write(Path(f"{stem}_zmaps") / f"{name}.npy", partial(_save_npy, z))
        table = frame[[c for c in frame.columns if not c.startswith("_")]].copy()
        if "n_candidates" not in table:
            e = self.config.eval
            table["n_candidates"] = [
                len(candidates(z, e.threshold, e.connectivity)) for z in frame["_z"]
            ]
        table["zmap"] = [f"{path.stem}_zmaps/{n}.npy" for n in names]
        written = atomic_write_csv(table, path)
        if "_mask" in frame.columns and "label" in frame.columns:  # a labelled split
            self._write_truth(frame, names, stem)
        self._write_overlays(frame, names, Path(f"{stem}_overlays"))
        return written

    def _write_truth(self, frame: pd.DataFrame, names: list[str], stem: Path) -> None:
        """Masks + listing for `medsweep eval froc --gt`, and the FROC curve (points, PNG)."""
        for name, mask in zip(names, frame["_mask"], strict=True):
            binary = (np.asarray(mask) > 0).astype(np.uint8) * 255
            atomic_write(Path(f"{stem}_masks") / f"{name}.png", partial(_save_png, binary))
        listing = pd.DataFrame(
            {"case": frame["case"], "mask": [f"{stem.name}_masks/{n}.png" for n in names]}
        )
        atomic_write_csv(listing, Path(f"{stem}_lesions.csv"))
        result = self.froc_result(frame)
        e = self.config.eval
        info = {**result.to_dict(), "threshold": e.threshold, "connectivity": e.connectivity}
        atomic_write_json(Path(f"{stem}_froc.json"), info)
        atomic_save_figure(froc_figure(result), Path(f"{stem}_froc.png"))

    def _write_overlays(self, frame: pd.DataFrame, names: list[str], folder: Path) -> None:
        """z-map on the CT (z = threshold at half opacity), lesion outlines in green."""
        thr = max(self.config.eval.threshold, 1e-6)
        masks = frame["_mask"] if "_mask" in frame.columns else [None] * len(frame)
        for name, ct, z, mask in zip(names, frame["_ct"], frame["_z"], masks, strict=True):
            if ct is None or (isinstance(ct, float) and math.isnan(ct)):
                continue
            rgb = np.repeat(np.asarray(ct)[..., None], 3, axis=2)
            if mask is not None:
                m = np.asarray(mask) > 0
                rgb[m & ~ndimage.binary_erosion(m)] = (0, 255, 0)
            emph = np.clip(np.asarray(z) / (2 * thr), 0, 1)
            atomic_write(folder / f"{name}.png", partial(overlay_png, rgb, emph))


def _save_npy(array: np.ndarray, path: Path) -> None:
    with path.open("wb") as fh:  # np.save(path) would append .npy to the temporary name
        np.save(fh, np.asarray(array, np.float32))


def _save_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path, format="PNG")

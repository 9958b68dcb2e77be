"""The toy task: a noisy learning curve over a quadratic surrogate, for benchmarks and engine tests.

Its "training" needs no images: epoch ``e`` of a trial with ``model.x``, ``model.y`` and
``train.lr`` reports ::

    floor     = 1 + (x - best_x)**2 + 2 * (y - best_y)**2          (best: 1.0 at best_x, best_y)
    val_loss  = floor + GAP * exp(-speed(lr) * e) + noise(e)         (speed grows with lr)

so a search has a known best region, trials improve epoch by epoch (ASHA has something to compare
early), and a slow learning rate can look worse early than it ends (as real trials do). The noise
is a function of the experiment seed and the epoch only, so an interrupted and resumed run
reports what an uninterrupted one does. With ``train.work_s > 0`` every epoch also trains a small
PyTorch MLP for that many seconds: engine benchmarks get trials of a known length doing real
work, without the data pipeline of an imaging task.
"""

from __future__ import annotations

import math
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from orchestrator.errors import DataError
from tasks.base import RunContext, Task
from tasks.common import splits
from tasks.toy.config import ToyConfig

if TYPE_CHECKING:
    import torch

GAP = 2.0  # how far above its floor a trial starts
CASE_COLUMNS = ("case", "label", "patient_id")


def floor(cfg: ToyConfig) -> float:
    """The loss a trial converges to (the surrogate's value at its parameters)."""
    m = cfg.model
    return 1.0 + (m.x - m.best_x) ** 2 + 2.0 * (m.y - m.best_y) ** 2


def speed(lr: float) -> float:
    """Epochs to converge shrink with the learning rate (saturating at 1e-2)."""
    return 0.25 + min(1.0, lr / 1e-2)


def curve(cfg: ToyConfig, epoch: int) -> float:
    """The noise-free validation loss after `epoch` epochs."""
    return floor(cfg) + GAP * math.exp(-speed(cfg.train.lr) * epoch)


class ToyTask(Task[ToyConfig]):
    name: ClassVar[str] = "toy"
    description: ClassVar[str] = "Synthetic learning curves with a known optimum (benchmarks)"
    config_model = ToyConfig
    default_metric: ClassVar[str] = "val_loss"
    default_mode = "min"
    tiny_synth: ClassVar[tuple[int, int]] = (32, 16)

    def __init__(self, config: ToyConfig) -> None:
        super().__init__(config)
        self.epoch = 0
        self.seed = 0
        self.frames: dict[str, pd.DataFrame] = {}
        self.last_val: pd.DataFrame | None = None
        self._mlp: Any = None

    # --- driver side -------------------------------------------------------------------------
    def check_data(self) -> None:
        self.cases()  # DataError names the manifest and the column

    def data_root(self) -> Path | None:
        manifest = self.config.data.manifest
        return Path(manifest).parent if manifest else None

    def data_summary(self) -> dict[str, Any]:
        cases = self.cases()
        return {"cases": len(cases), "labels": cases["label"].value_counts().to_dict()}

    @classmethod
    def synthesize(cls, out: Path, n: int, size: int, seed: int) -> Path:
        """A case table (``size`` is ignored: there are no images)."""
        out.mkdir(parents=True, exist_ok=True)
        path = out / "cases.csv"
        _make_cases(n, seed).to_csv(path, index=False)
        return path

    @classmethod
    def tiny_config(cls, data: Path) -> dict[str, Any]:
        return {"data": {"manifest": str(data)}, "train": {"epochs": 2}}

    def cases(self) -> pd.DataFrame:
        manifest = self.config.data.manifest
        return _make_cases(self.config.data.n) if manifest is None else self.read_cases(manifest)

    def read_cases(self, manifest: Path | str) -> pd.DataFrame:
        path = Path(manifest)
        if not path.is_file():
            raise DataError("case table does not exist", source=path)
        frame = pd.read_csv(path)
        for column in ("case", "label"):
            if column not in frame.columns:
                raise DataError(f"missing column {column!r}", source=path, where=f"column {column}")
        if not frame["case"].is_unique:
            dup = frame.index[frame["case"].duplicated()][0]
            raise DataError("duplicate case id", source=path, where=f"row {int(dup) + 2}")
        bad = ~frame["label"].isin([0, 1])
        if bad.any():
            row = int(frame.index[bad][0]) + 2  # 1-based, after the header line
            raise DataError("label must be 0 or 1", source=path, where=f"row {row}, column label")
        return frame.astype({"case": str}).reset_index(drop=True)

    def score(self, split: str, predictions: pd.DataFrame) -> dict[str, float]:
        return {"loss": float(predictions["loss"].mean())}

    # --- worker side -------------------------------------------------------------------------
    def setup(self, ctx: RunContext) -> None:
        self.seed, self.epoch = ctx.seed, 0
        self.frames = dict(ctx.frames) if ctx.frames is not None else self._default_frames()
        if self.config.train.work_s > 0:
            self._mlp = _Mlp(self.seed)

    def setup_inference(self, ctx: RunContext) -> None:
        self.seed, self.epoch = ctx.seed, 0
        self.frames = dict(ctx.frames or {})

    def _default_frames(self) -> dict[str, pd.DataFrame]:
        df = self.cases()
        held = splits.holdout(
            df["label"].to_numpy(),
            splits.group_ids(df, "patient_id"),
            self.config.data.val_fraction,
            0,
        )
        return {"train": df[~held].reset_index(drop=True), "val": df[held].reset_index(drop=True)}

    def train_epoch(self, epoch: int) -> dict[str, float]:
        if self._mlp is not None:
            self._mlp.train_for(self.config.train.work_s)
        self.epoch = epoch
        noise = self._rng("train", epoch).normal(0.0, self.config.data.noise)
        return {"train_loss": 1.05 * curve(self.config, epoch) + float(noise)}

    def evaluate(self, epoch: int) -> dict[str, float]:
        if epoch == self.config.train.fail_at_epoch:
            raise RuntimeError(f"injected failure in evaluate at epoch {epoch}")
        self.last_val = self.predict("val")
        return {f"val_{k}": v for k, v in self.score("val", self.last_val).items()}

    def predict(self, split: str | Path) -> pd.DataFrame:
        frame = self.read_cases(split) if isinstance(split, Path) else self.frames[split]
        noise = self.config.data.noise
        shared = self._rng("val", self.epoch).normal(0.0, noise)
        per_case = self._rng(f"cases-{split}", self.epoch).normal(0.0, noise / 10, len(frame))
        ident = [c for c in CASE_COLUMNS if c in frame.columns]
        out = frame[ident].reset_index(drop=True)
        out.insert(0, "index", np.arange(len(frame), dtype=np.int64))
        out["loss"] = curve(self.config, self.epoch) + shared + per_case
        return out

    def _rng(self, stream: str, epoch: int) -> np.random.Generator:
        """Noise that depends on the seed, the stream and the epoch only (resume-safe)."""
        return np.random.default_rng([self.seed, epoch, zlib.crc32(stream.encode())])

    def state_dict(self) -> dict[str, Any]:
        mlp = self._mlp.state_dict() if self._mlp is not None else None
        return {"epoch": self.epoch, "seed": self.seed, "mlp": mlp}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.seed = int(state["epoch"]), int(state["seed"])
        if self._mlp is not None and state.get("mlp") is not None:
            self._mlp.load_state_dict(state["mlp"])

    def model_state(self) -> dict[str, Any]:
        import torch

        # The noise stream is part of what a toy "learned": the seed travels with the epoch.
        return {"epoch": torch.tensor(self.epoch), "seed": torch.tensor(self.seed)}

    def load_model_state(self, state: dict[str, Any]) -> None:
        self.epoch, self.seed = int(state["epoch"]), int(state["seed"])

    def save_artifacts(self, directory: Path) -> list[Path]:
        if self.last_val is None:
            return []
        return [self.write_predictions(self.last_val, directory / "val_predictions.csv")]


def _make_cases(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` cases, labels alternating (both present from n = 2), one case per patient."""
    ids = [f"case{i:05d}" for i in range(n)]
    order = np.random.default_rng(seed).permutation(n)
    labels = (order % 2).astype(np.int64)
    return pd.DataFrame({"case": ids, "label": labels, "patient_id": [f"p{i}" for i in range(n)]})


class _Mlp:
    """A small MLP trained on random data: `work_s` seconds of real optimiser steps."""

    def __init__(self, seed: int) -> None:
        import torch

        gen = torch.Generator().manual_seed(seed)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1)
        )
        self.opt = torch.optim.SGD(self.net.parameters(), lr=1e-3)
        self.x = torch.randn(256, 64, generator=gen)
        self.y = torch.randn(256, 1, generator=gen)

    def train_for(self, seconds: float) -> int:
        import torch

        steps, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            loss = torch.nn.functional.mse_loss(self.net(self.x), self.y)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            steps += 1
        return steps

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.net.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state)

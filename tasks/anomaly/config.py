"""Config models of the anomaly family (seed 001): every searchable value is a field here.

Two tasks share the data conventions (a CSV manifest, label 0 = normal, 1 = abnormal; only
normal cases train) and differ in model and evaluation:

* `GlowConfig`: Glow likelihood on chest radiographs, image-level ROC-AUC;
* `PetCtConfig`: a U-Net predicting PET from CT, z-score maps, lesion-level FROC.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from tasks.base import StrictModel, TaskConfig, TrainConfig
from tasks.common.black_fields import black_images_field, black_threshold_field
from tasks.common.froc import DEFAULT_FPS


class SynthSpec(StrictModel):
    """Generate the synthetic dataset at the manifest's folder when the manifest is missing."""

    n: int = Field(400, ge=8)
    size: int = Field(64, ge=32, le=1024)
    seed: int = 0


# --- Glow on chest radiographs -----------------------------------------------------------------
class GlowData(StrictModel):
    manifest: str = Field(
        description="CSV: path, label (0 normal / 1 abnormal), optional mask and patient_id."
    )
    synth: SynthSpec | None = Field(None, description="Demo data: synthesise if it is missing.")
    image_root: str | None = Field(None, description="Base of relative paths (the CSV's folder).")
    image_size: int = Field(64, ge=8, le=2048, description="Divisible by 2**model.levels.")
    val_fraction: float = Field(
        0.3, gt=0, lt=1, description="Validation hold-out share (without a `cv` section)."
    )
    split_seed: int = Field(0, description="Fixed across trials so every trial sees one split.")
    black_images: Literal["error", "skip"] = black_images_field(
        "16-bit ones judged min-max scaled, as the flow sees them", "their lines"
    )
    black_threshold: int = black_threshold_field()


class GlowModel(StrictModel):
    levels: int = Field(3, ge=1, le=8, description="Scales (squeeze + steps + split).")
    depth: int = Field(8, ge=1, description="Flow steps per level.")
    width: int = Field(128, ge=4, description="Hidden channels of the coupling networks.")
    lu: bool = Field(True, description="LU-parametrised invertible 1x1 convolutions.")
    checkpointing: bool = Field(
        False, description="Recompute flow steps in the backward pass (256-512 px images)."
    )
    n_bits: int = Field(8, ge=1, le=8, description="Bits per pixel the likelihood models.")
    dequantize: Literal["uniform", "centre"] = Field(
        "uniform",
        description="Training noise: uniform dequantisation (the continuous density then bounds "
        "the discrete likelihood) or the bin centre (no noise; prone to degenerate densities).",
    )


ScoreKind = Literal["nll", "complexity", "emphasis_max"]


class GlowScore(StrictModel):
    kind: ScoreKind = Field(
        "nll",
        description="Image score: NLL in bits/dim; complexity = NLL minus the PNG bits/dim "
        "(Serra et al. 2020); emphasis_max = peak of the smoothed per-pixel NLL map.",
    )
    sigma: float = Field(1.5, ge=0, description="Gaussian smoothing of the pixel-NLL map (px).")
    overlays: int = Field(8, ge=0, description="Emphasis overlays written per split (half abn.).")
    alpha: float = Field(0.6, gt=0, le=1, description="Overlay opacity at full emphasis.")


class GlowTrain(TrainConfig):
    lr: float = Field(1e-3, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(50.0, gt=0, description="Clip the gradient norm to this.")


class GlowConfig(TaskConfig):
    data: GlowData
    model: GlowModel = Field(default_factory=GlowModel)
    score: GlowScore = Field(default_factory=GlowScore)
    train: GlowTrain = Field(default_factory=GlowTrain)

    @model_validator(mode="after")
    def _size_fits_levels(self) -> GlowConfig:
        k = 2**self.model.levels
        if self.data.image_size % k:
            raise ValueError(
                f"data.image_size {self.data.image_size} must be divisible by 2**model.levels "
                f"= {k} (each level halves the image)"
            )
        return self


# --- U-Net z-maps on PET/CT --------------------------------------------------------------------
class PetCtData(StrictModel):
    manifest: str = Field(
        description="CSV: ct, pet, mask, label (0 normal / 1 abnormal), optional patient_id; "
        "images are PNG (16-bit CT = HU + ct_offset) or .npy arrays of one size per pair."
    )
    synth: SynthSpec | None = Field(None, description="Demo data: synthesise if it is missing.")
    image_root: str | None = Field(None, description="Base of relative paths (the CSV's folder).")
    image_size: int | None = Field(
        None, ge=8, le=2048, description="Resize every pair to this (None: native, all equal)."
    )
    ct_offset: float = Field(1024.0, description="Stored CT value minus this is HU.")
    ct_window: tuple[float, float] = Field(
        (-1000.0, 1000.0), description="HU range mapped to [0, 1] as the network input."
    )
    air_hu: float = Field(
        -950.0,
        description="Outside air = pixels at or below this HU connected to the image border; "
        "the rest (lungs and bowel gas included) is the body, where the loss and the "
        "candidates are.",
    )
    val_fraction: float = Field(0.3, gt=0, lt=1, description="Hold-out share without `cv`.")
    split_seed: int = 0
    cache: bool = Field(True, description="Keep decoded pairs in memory (off: read per step).")

    @field_validator("ct_window")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not v[0] < v[1]:
            raise ValueError(f"ct_window must be (low, high) with low < high, got {v}")
        return v


class PetCtModel(StrictModel):
    levels: int = Field(4, ge=1, le=7, description="U-Net levels including the bottleneck.")
    width: int = Field(32, ge=2, description="Channels at the first level (doubled per level).")
    std_floor: float = Field(0.05, gt=0, description="Smallest predicted std (SUV units).")
    up: Literal["bilinear", "transposed"] = "bilinear"


class PetCtEval(StrictModel):
    threshold: float = Field(3.0, description="z threshold of the candidates (seed 001: 3.0).")
    hit: Literal["overlap", "centre"] = Field(
        "overlap", description="A lesion is hit by overlap or by the candidate's peak in it."
    )
    connectivity: int = Field(2, ge=1, le=2, description="1 = 4-, 2 = 8-connected components.")
    fps: list[float] = Field(
        default_factory=lambda: list(DEFAULT_FPS), description="FP/case rates reported."
    )
    overlays: int = Field(6, ge=0, description="z-map overlays written per split.")

    @field_validator("fps")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if not v or any(r <= 0 for r in v):
            raise ValueError("fps must be a non-empty list of positive rates")
        return sorted(set(v))


class PetCtTrain(TrainConfig):
    lr: float = Field(1e-3, gt=0, description="Peak learning rate.")


class PetCtConfig(TaskConfig):
    data: PetCtData
    model: PetCtModel = Field(default_factory=PetCtModel)
    eval: PetCtEval = Field(default_factory=PetCtEval)
    train: PetCtTrain = Field(default_factory=PetCtTrain)

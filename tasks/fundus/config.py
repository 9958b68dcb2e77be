"""Config model of the fundus task: every searchable value is a field here."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tasks.base import StrictModel, TaskConfig, TrainConfig


class SynthSpec(StrictModel):
    """Generate a synthetic dataset at `manifest`'s folder when the manifest does not exist."""

    n: int = Field(400, ge=8)
    size: int = Field(96, ge=16, le=1024)
    seed: int = 0


class FundusData(StrictModel):
    manifest: str = Field(description="CSV with columns path, label (0/1), optional patient_id.")
    synth: SynthSpec | None = Field(
        None, description="Demo data: synthesise if the CSV is missing."
    )
    image_root: str | None = Field(None, description="Base folder of relative paths (CSV folder).")
    image_size: int = Field(96, ge=16, le=2048)
    val_fraction: float = Field(
        0.25, gt=0, lt=1, description="Validation hold-out share (without a `cv` section)."
    )
    split_seed: int = Field(0, description="Fixed across trials so every trial sees one split.")
    crop_border: bool = Field(True, description="Crop the black border around the fundus.")
    border_threshold: int = Field(10, ge=0, le=255)
    cache: bool = Field(True, description="Decode all images once into memory.")


class FundusModel(StrictModel):
    backbone: str = Field("resnet18", description="Any timm model name.")
    pretrained: bool = Field(False, description="Load weights from `weights` (no downloads).")
    weights: str | None = Field(None, description="Local .pth/.safetensors file for the backbone.")
    drop_rate: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _weights_need_file(self) -> FundusModel:
        if self.pretrained and not self.weights:
            raise ValueError(
                "pretrained: true needs a local `weights` file (nothing is downloaded)"
            )
        return self


class FundusAugment(StrictModel):
    hflip: float = Field(0.5, ge=0, le=1, description="Probability of a horizontal flip.")
    vflip: float = Field(0.0, ge=0, le=1, description="Probability of a vertical flip.")
    augmix_severity: int = Field(0, ge=0, le=10, description="AugMix severity; 0 turns it off.")


class FundusTrain(TrainConfig):
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="Seed 002: targets 1*(1-alpha) for glaucoma, alpha/2 else."
    )
    loss: Literal["bce", "focal"] = "bce"
    focal_gamma: float = Field(2.0, ge=0)
    tta: bool = Field(False, description="Average predictions over horizontal flips at eval.")


class FundusConfig(TaskConfig):
    data: FundusData
    model: FundusModel = Field(default_factory=FundusModel)
    augment: FundusAugment = Field(default_factory=FundusAugment)
    train: FundusTrain = Field(default_factory=FundusTrain)

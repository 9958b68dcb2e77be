"""Config model of the SimSiam pretraining task: every searchable value is a field here."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tasks.base import StrictModel, TaskConfig, TrainConfig
from tasks.common.black_fields import black_images_field, black_threshold_field
from tasks.detection.config import LiverSynthSpec


class SimSiamData(StrictModel):
    images: str = Field(
        description="A folder of PNG/JPEG/BMP/TIFF images (searched recursively) or a COCO "
        "JSON file whose `images[].file_name` are read. No labels are used."
    )
    image_root: str | None = Field(
        None, description="COCO only: base folder of `file_name` (default: the JSON's folder)."
    )
    image_size: int = Field(128, ge=16, le=2048, description="Side of the square crops.")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="Held-out share for val_loss.")
    split_seed: int = Field(0, description="Fixed across trials so every trial sees one split.")
    cache: bool = Field(
        True, description="Decode every image once (short side resized to image_size)."
    )
    black_images: Literal["error", "skip"] = black_images_field(
        "a black border or fan surround is fine", "them"
    )
    black_threshold: int = black_threshold_field()
    synth: LiverSynthSpec | None = Field(
        None,
        description="Demo data: when `images` is missing, write the synthetic liver-ultrasound "
        "set (detection's generator) so that `images` is its `annotations/*.json` (or its "
        "`images` folder).",
    )


class SimSiamModel(StrictModel):
    backbone: str = Field("resnet18", description="Any timm model name (no weights downloaded).")
    proj_dim: int = Field(512, ge=8, description="Projector output size (the paper: 2048).")
    pred_dim: int = Field(128, ge=4, description="Predictor bottleneck (the paper: 512).")


class SimSiamAugment(StrictModel):
    """Two random views per image; the defaults follow the paper minus colour (ultrasound)."""

    crop_scale_min: float = Field(0.2, gt=0, le=1, description="RandomResizedCrop min area.")
    crop_scale_max: float = Field(1.0, gt=0, le=1)
    hflip: float = Field(0.5, ge=0, le=1, description="Probability of a horizontal flip.")
    vflip: float = Field(0.0, ge=0, le=1, description="Probability of a vertical flip.")
    jitter_p: float = Field(0.8, ge=0, le=1, description="Probability of brightness/contrast.")
    brightness: float = Field(0.4, ge=0, le=1)
    contrast: float = Field(0.4, ge=0, le=1)
    blur_p: float = Field(0.5, ge=0, le=1, description="Probability of a gaussian blur.")
    val_seed: int = Field(0, description="Seed of the fixed validation views.")

    @model_validator(mode="after")
    def _scale_order(self) -> SimSiamAugment:
        if self.crop_scale_min > self.crop_scale_max:
            raise ValueError("crop_scale_min must not exceed crop_scale_max")
        return self


class SimSiamTrain(TrainConfig):
    lr: float = Field(0.05, gt=0, description="Peak LR (the paper: 0.05 * batch_size / 256, SGD).")
    optimizer: Literal["adamw", "adam", "sgd"] = "sgd"
    fix_pred_lr: bool = Field(True, description="The paper: the predictor's LR is not decayed.")


class SimSiamConfig(TaskConfig):
    data: SimSiamData
    model: SimSiamModel = Field(default_factory=SimSiamModel)
    augment: SimSiamAugment = Field(default_factory=SimSiamAugment)
    train: SimSiamTrain = Field(default_factory=SimSiamTrain)

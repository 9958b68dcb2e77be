"""Config model of the liver-tumour detection task (seed 000): every searchable value is here."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tasks.base import ArtifactRef, StrictModel, TaskConfig, TrainConfig
from tasks.common.black_fields import black_images_field, black_threshold_field
from tasks.common.schedules import UnfreezeConfig


class LiverSynthSpec(StrictModel):
    """Generate the synthetic liver-ultrasound set when `data.train` does not exist."""

    n: int = Field(600, ge=16)
    size: int = Field(128, ge=64, le=1024)
    seed: int = 0


class DetectionData(StrictModel):
    train: str = Field(description="COCO json of the training split.")
    val: str = Field(description="COCO json of the validation split.")
    image_root: str | None = Field(None, description="Folder of `file_name`s (default: see docs).")
    image_size: int = Field(512, ge=32, le=2048, description="Square network input size.")
    skip_invalid: bool = Field(False, description="Drop invalid annotations (counted) not fail.")
    cache: bool = Field(True, description="Decode all images once into memory.")
    black_images: Literal["error", "skip"] = black_images_field(
        "the black surround of the ultrasound fan is fine", "their COCO entries"
    )
    black_threshold: int = black_threshold_field()
    synth: LiverSynthSpec | None = None


class DetectionModel(StrictModel):
    backbone: str = Field("resnet18", description="timm backbone (features_only).")
    pretrained: bool = Field(False, description="Nothing is downloaded: needs `weights`.")
    weights: str | None = Field(None, description="Local backbone weights (e.g. SimSiam's).")
    weights_from: ArtifactRef | None = Field(
        None, description="Backbone weights from the best run of a named (SimSiam) sweep."
    )
    classes: Literal["all", "one"] = Field("all", description="'one' merges classes: 1-class.")
    class_agnostic: bool = Field(
        False, description="1-channel heatmap + separate classification head (seed's idea)."
    )
    head_conv: int = Field(64, ge=8)
    skips: bool = Field(True, description="Lateral skips from strides 4/8/16 into the neck.")

    @model_validator(mode="after")
    def _weights(self) -> DetectionModel:
        if self.weights and self.weights_from:
            raise ValueError("give either weights or weights_from, not both")
        if self.pretrained and not (self.weights or self.weights_from):
            raise ValueError(
                "pretrained: true needs weights or weights_from (nothing is downloaded)"
            )
        return self


class DetectionAugment(StrictModel):
    hflip: float = Field(0.5, ge=0, le=1)
    vflip: float = Field(0.0, ge=0, le=1)
    scale_min: float = Field(0.8, gt=0, le=1, description="Random affine zoom range.")
    scale_max: float = Field(1.2, ge=1, le=2)
    translate: float = Field(0.1, ge=0, le=0.5)
    brightness: float = Field(0.2, ge=0, le=1)
    contrast: float = Field(0.2, ge=0, le=1)
    speckle: float = Field(0.1, ge=0, le=1, description="Std of multiplicative speckle noise.")


class DetectionEval(StrictModel):
    iou: float = Field(0.25, gt=0, le=1, description="Lesion-level match IoU (seed: 0.25).")
    topk: int = Field(100, ge=1, le=1000, description="Detections kept per image.")


class DetectionTrain(TrainConfig):
    wh_weight: float = Field(0.1, ge=0)
    off_weight: float = Field(1.0, ge=0)
    cls_weight: float = Field(1.0, ge=0)
    warmup_epochs: int = Field(0, ge=0)


class DetectionConfig(TaskConfig):
    data: DetectionData
    model: DetectionModel = Field(default_factory=DetectionModel)
    augment: DetectionAugment = Field(default_factory=DetectionAugment)
    eval: DetectionEval = Field(default_factory=DetectionEval)
    # Off by default: a randomly initialised backbone has nothing worth freezing.
    schedule: UnfreezeConfig = Field(default_factory=lambda: UnfreezeConfig(enabled=False))
    train: DetectionTrain = Field(default_factory=DetectionTrain)

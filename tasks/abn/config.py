"""Config model of the ABN task (seed 003): every searchable value is a field here.

The switch point, alpha_high and alpha_low of the dynamic loss live in ``loss.alpha`` (a generic
`ValueScheduleConfig`), so a sweep searches ``loss.alpha.switch``, ``loss.alpha.start`` and
``loss.alpha.end`` like any other value.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tasks.base import StrictModel, TaskConfig, TrainConfig
from tasks.common.schedules import ValueScheduleConfig


class SynthSpec(StrictModel):
    """Generate `medsweep data synth ct-pneumonia` data at the manifest's folder when missing."""

    n: int = Field(240, ge=8, description="Slices in all.")
    size: int = Field(96, ge=32, le=1024, description="Slice side in pixels.")
    seed: int = 0
    slices_per_patient: int = Field(4, ge=1)
    difficulty: float = Field(0.5, ge=0, le=1, description="Class overlap (0 easy .. 1 hard).")


class ABNData(StrictModel):
    manifest: str = Field(
        description="CSV with columns path (PNG/JPEG or DICOM slice), mask (lung-mask PNG), "
        "patient_id and label (1 = COVID-19, 0 = typical pneumonia)."
    )
    synth: SynthSpec | None = Field(
        None, description="Demo data: synthesise if the CSV is missing."
    )
    image_root: str | None = Field(None, description="Base folder of relative paths (CSV folder).")
    image_size: int = Field(224, ge=32, le=2048, description="Slices are resized to this square.")
    val_fraction: float = Field(
        0.25, gt=0, lt=1, description="Validation hold-out share (without a `cv` section)."
    )
    split_seed: int = Field(0, description="Fixed across trials so every trial sees one split.")
    window_level: float = Field(-600.0, description="DICOM window level in HU (lung: -600).")
    window_width: float = Field(1500.0, gt=0, description="DICOM window width in HU (lung: 1500).")
    cache: bool = Field(True, description="Decode all slices and masks once into memory.")

    @property
    def window(self) -> tuple[float, float]:
        return (self.window_level, self.window_width)


class ABNModel(StrictModel):
    backbone: str = Field("resnet18", description="A ResNet-like timm model (seed: resnet18).")
    pretrained: bool = Field(False, description="Load backbone weights from `weights`.")
    weights: str | None = Field(None, description="Local .pth/.safetensors backbone weights.")
    att_channels: int | None = Field(
        None, ge=1, description="Attention block width; default the stage-3 width (<= 256)."
    )
    in_chans: Literal[1, 3] = Field(3, description="3 repeats the grey slice (ImageNet weights).")

    @model_validator(mode="after")
    def _weights_need_file(self) -> ABNModel:
        if self.pretrained and not self.weights:
            raise ValueError(
                "pretrained: true needs a local `weights` file (nothing is downloaded)"
            )
        return self


class ABNLoss(StrictModel):
    """Seed 003's losses: baseline ``L_att + L_per + gamma L_map`` or the dynamic
    ``(1 - alpha) L_per + alpha (L_map + L_att)`` with alpha switched by `alpha`."""

    mode: Literal["baseline", "dynamic"] = Field("dynamic", description="eq. 3 or eq. 4.")
    gamma: float = Field(1.0, ge=0, description="Baseline: weight of L_map.")
    map_kind: Literal["l2", "mse"] = Field(
        "l2", description="L_map: per-slice L2 norm ||M' - M|| (the seed) or mean squared error."
    )
    alpha: ValueScheduleConfig = Field(
        default_factory=ValueScheduleConfig,
        description="Dynamic alpha: start (alpha_high) before the switch, end (alpha_low) after.",
    )

    @model_validator(mode="after")
    def _alpha_is_a_weight(self) -> ABNLoss:
        for name in ("start", "end"):
            value = getattr(self.alpha, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"alpha.{name} must be within [0, 1] (a loss weight), got {value}")
        return self


class ABNAugment(StrictModel):
    """Geometric augmentation, applied to the slice and its lung mask together."""

    hflip: float = Field(0.5, ge=0, le=1, description="Probability of a horizontal flip.")
    vflip: float = Field(0.0, ge=0, le=1, description="Probability of a vertical flip.")
    rotate: float = Field(0.0, ge=0, le=180, description="Random rotation up to +-degrees.")
    scale: float = Field(0.0, ge=0, lt=1, description="Random zoom by up to +-this fraction.")


class ABNTrain(TrainConfig):
    """The template's training settings (optimiser, LR schedule, AMP, epochs)."""


class ABNEval(StrictModel):
    attention_samples: int = Field(
        8, ge=0, description="Fixed validation slices whose attention overlays are saved."
    )


class ABNConfig(TaskConfig):
    data: ABNData
    model: ABNModel = Field(default_factory=ABNModel)
    loss: ABNLoss = Field(default_factory=ABNLoss)
    augment: ABNAugment = Field(default_factory=ABNAugment)
    train: ABNTrain = Field(default_factory=ABNTrain)
    eval: ABNEval = Field(default_factory=ABNEval)

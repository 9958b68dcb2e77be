"""Config model of the fundus task (seed 002): every searchable value is a field here.

`data.image_size` is what the user asked for (pixels or ``auto``); `data.resolved_image_size` is
filled in from it and `model.backbone` at every validation (never taken from the input), so a
stored config records the size actually used, and a trial that overrides only the backbone of a
stored base config gets that backbone's size rather than the base backbone's.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from tasks.base import StrictModel, TaskConfig, TrainConfig

FlipName = Literal["h", "v", "hv"]
Pixels = Annotated[int, Field(ge=16, le=2048)]


def _error(message: str) -> PydanticCustomError:
    """A validation error whose message is shown as is (no "Value error, " prefix)."""
    return PydanticCustomError("fundus_config", message)


class Source(StrictModel):
    """One dataset of a merged fundus manifest (`tasks.fundus.sources.merge_sources`)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Prefix of its patient ids.")
    manifest: str = Field(description="CSV with one row per image.")
    label_column: str = "label"
    label_map: dict[str, int] | None = Field(
        None, description='Raw label -> 0/1, e.g. {"G": 1, "N": 0}; None: the column is 0/1.'
    )
    path_column: str = "path"
    image_root: str | None = Field(None, description="Base of relative paths (CSV folder).")
    subsample: dict[str, int] | None = Field(
        None, description='Rows to keep per mapped label, e.g. {"1": 168, "0": 482} (seeded).'
    )
    group_column: str | None = Field("patient_id", description="Patient id column, if any.")

    @field_validator("label_map", "subsample", mode="before")
    @classmethod
    def _keys_as_text(cls, value: Any) -> Any:
        # YAML reads `{1: 168}` with int keys; labels in a CSV are text either way.
        if not isinstance(value, dict):
            return value
        flags = [k for k in value if isinstance(k, bool)]
        if flags:  # YAML 1.1 turns unquoted yes/no/on/off into booleans
            raise _error(f"key {flags[0]} was read as a YAML boolean; quote it, e.g. 'yes'")
        return {str(k): v for k, v in value.items()}

    @field_validator("label_map")
    @classmethod
    def _binary(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        bad = {k: v for k, v in (value or {}).items() if v not in (0, 1)}
        if bad:
            raw, to = next(iter(bad.items()))
            raise _error(f"maps {raw!r} to {to}; every label must map to 0 or 1")
        return value

    @field_validator("subsample")
    @classmethod
    def _per_label(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        bad = [k for k, n in (value or {}).items() if k not in ("0", "1") or n < 0]
        if bad:
            raise _error(f"key {bad[0]!r}: keys are the labels 0 and 1, values counts >= 0")
        return value


class SynthSpec(StrictModel):
    """Generate synthetic data at `manifest`'s (or `sources`') folder when the file is missing."""

    n: int = Field(400, ge=8)
    size: int = Field(96, ge=16, le=1024)
    seed: int = 0
    sources: int = Field(1, ge=1, le=4, description="Datasets with their own label codings.")
    difficulty: float = Field(
        0.0, ge=0, le=1, description="0 = clear signal; towards 1 closer classes, more noise."
    )


class DedupSpec(StrictModel):
    """Perceptual-hash near-duplicates across merged sources (kept on one side of a split)."""

    threshold: int = Field(20, ge=0, description="Largest Hamming distance of near-duplicates.")
    hash_size: int = Field(16, ge=2, le=64, description="pHash side (hash_size**2 bits).")


class FundusData(StrictModel):
    manifest: str | None = Field(
        None, description="CSV with columns path, label (0/1), optional patient_id."
    )
    sources: str | list[Source] | None = Field(
        None,
        description="Instead of `manifest`: several datasets merged, each with its own label "
        "mapping (a list, or a YAML/JSON file with a `sources` list).",
    )
    synth: SynthSpec | None = Field(None, description="Demo data: synthesise if missing.")
    image_root: str | None = Field(None, description="Base folder of relative paths (CSV folder).")
    image_size: Pixels | Literal["auto"] = Field(
        96, description="Input side in pixels, or auto: the backbone's native size."
    )
    resolved_image_size: int | None = Field(
        None, description="Filled in: the side actually used (any value given is replaced)."
    )
    val_fraction: float = Field(
        0.25, gt=0, lt=1, description="Validation hold-out share (without a `cv` section)."
    )
    split_seed: int = Field(0, description="Fixed across trials so every trial sees one split.")
    subsample_seed: int = Field(0, description="Seed of the per-source subsampling.")
    crop_border: bool = Field(True, description="Crop the black border around the fundus.")
    border_threshold: int = Field(10, ge=0, le=255)
    black_images: Literal["error", "skip"] = Field(
        "error",
        description="Images black everywhere, or black once the border is removed: error (exit "
        "2 naming their lines) or skip (leave them out and count them).",
    )
    central_fraction: float = Field(
        1.0, gt=0, le=1, description="Keep this central share of height and width after the crop."
    )
    vessels: bool = Field(False, description="Erase the vessels (black-hat map + inpainting).")
    dedup: DedupSpec | None = Field(
        default_factory=DedupSpec, description="Near-duplicates across `sources`; null: off."
    )
    cache: bool = Field(True, description="Preprocess every image once into an on-disk cache.")
    cache_dir: str | None = Field(
        None, description="Cache folder; default $MEDSWEEP_CACHE or ~/.cache/medsweep/fundus."
    )

    @model_validator(mode="after")
    def _one_input(self) -> FundusData:
        if (self.manifest is None) == (self.sources is None):
            raise _error("give exactly one of `manifest` and `sources`")
        if self.synth is not None and isinstance(self.sources, list):
            raise _error("`synth` writes a sources file: set `sources` to its path")
        if self.synth is not None and (self.synth.sources > 1) != (self.sources is not None):
            raise _error(
                "synth.sources > 1 writes a sources.json (set `sources` to it); one source "
                "writes a labels.csv (set `manifest`)"
            )
        return self

    @field_validator("sources", mode="before")
    @classmethod
    def _each_source(cls, value: Any) -> Any:
        """Validate a list entry by entry, naming ``sources[i].field`` (not the str branch)."""
        if not isinstance(value, list):
            return value
        out = []
        for i, entry in enumerate(value):
            try:
                out.append(entry if isinstance(entry, Source) else Source.model_validate(entry))
            except ValidationError as err:
                first = err.errors()[0]
                loc = "".join(f".{p}" for p in first["loc"])
                raise _error(f"sources[{i}]{loc}: {first['msg']}") from None
        return out

    @property
    def size(self) -> int:
        """The input side in pixels (`resolved_image_size`, set when the whole config validates)."""
        if self.resolved_image_size is not None:
            return self.resolved_image_size
        if self.image_size == "auto":
            raise ValueError("image_size 'auto' is resolved only within a FundusConfig")
        return int(self.image_size)


class FundusModel(StrictModel):
    backbone: str = Field("resnet18", description="Any timm model name.")
    pretrained: bool = Field(
        False,
        description="ImageNet weights: `weights`, a local weights folder, the timm/HF cache, or a "
        "download where HF_HUB_OFFLINE=0; offline without a file is an error (exit 2).",
    )
    weights: str | None = Field(None, description="Local .pth/.safetensors file (if pretrained).")
    weights_dir: str | None = Field(
        None, description="Folder with <backbone>.safetensors files (besides $MEDSWEEP_WEIGHTS)."
    )
    drop_rate: float = Field(0.0, ge=0, lt=1)

    @field_validator("backbone")
    @classmethod
    def _known(cls, name: str) -> str:
        from orchestrator.errors import DataError
        from tasks.fundus.backbones import native_input_size

        try:
            native_input_size(name)
        except DataError as err:
            raise _error(err.message) from None
        return name


class FundusAugment(StrictModel):
    hflip: float = Field(0.5, ge=0, le=1, description="Probability of a horizontal flip.")
    vflip: float = Field(0.0, ge=0, le=1, description="Probability of a vertical flip.")
    augmix_severity: int = Field(0, ge=0, le=10, description="AugMix severity; 0 turns it off.")


class FundusTrain(TrainConfig):
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Smoothing alpha.")
    smoothing: Literal["seed", "symmetric"] = Field(
        "seed",
        description="seed: glaucoma 1*(1-alpha), non-glaucoma alpha/2 (seed 002); symmetric: "
        "y*(1-alpha) + alpha/2.",
    )
    loss: Literal["bce", "focal"] = "bce"
    focal_gamma: float = Field(2.0, ge=0, description="Focal loss focusing exponent.")
    focal_alpha: float | None = Field(
        None, ge=0, le=1, description="Focal loss weight of glaucoma (1-alpha: non-glaucoma)."
    )
    tta: list[FlipName] = Field(
        default_factory=list,
        description="Flips whose probabilities are averaged with the original's at prediction "
        '(h, v, hv); empty = off. "h,v" also works (for a search over choices).',
    )

    @field_validator("tta", mode="before")
    @classmethod
    def _tta_forms(cls, value: Any) -> Any:
        if value is None or value is False:  # stored configs before flip lists
            return []
        if value is True:
            return ["h"]
        if isinstance(value, str):
            text = value.strip().lower()
            return [] if text in ("", "none", "off") else [p.strip() for p in text.split(",")]
        return value


class FundusConfig(TaskConfig):
    # `model` before `data`: the data validator reads the validated backbone.
    model: FundusModel = Field(default_factory=FundusModel)
    data: FundusData
    augment: FundusAugment = Field(default_factory=FundusAugment)
    train: FundusTrain = Field(default_factory=FundusTrain)

    @field_validator("data")
    @classmethod
    def _resolve_size(cls, data: FundusData, info: ValidationInfo) -> FundusData:
        from orchestrator.errors import DataError
        from tasks.fundus.backbones import resolve_image_size

        model = info.data.get("model")
        if not isinstance(model, FundusModel):
            return data  # the model section failed; its error is reported
        try:
            size = resolve_image_size(model.backbone, data.image_size)
        except DataError as err:
            raise _error(f"image_size {data.image_size}: {err.message}") from None
        return data.model_copy(update={"resolved_image_size": size})

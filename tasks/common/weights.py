"""Local weight files for timm backbones: read any common checkpoint layout and load it by
canonical key and shape, refusing files that do not fit (a checkpoint of another model).

Nothing is downloaded: `pretrained` always means a local file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

MIN_MATCHED = 0.9  # fraction of the module's tensors a weights file must provide

# Prefixes that wrappers put before backbone keys (DDP, torch.compile, our modules, SimSiam).
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "backbone.", "body.", "encoder.", "model.")


@dataclass
class LoadReport:
    """What `load_backbone_weights` matched."""

    matched: int
    total: int
    missing: list[str]

    @property
    def fraction(self) -> float:
        return self.matched / max(1, self.total)


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """A flat tensor dict from .safetensors/.pth/.pt, unwrapping {"state_dict": ...}-style nests."""
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj: object = load_file(str(path))
    else:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model_state_dict", "model", "backbone"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}


def _canonical(key: str) -> str:
    """Key without wrapper prefixes, with '_' and '.' unified.

    timm's features_only wrappers flatten nested module names (``stages.0`` -> ``stages_0``), so
    keys of the pooled classifier model (what SimSiam saves, or ImageNet checkpoints) differ from
    the features model's keys only in these separators.
    """
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return key.replace("_", ".")


def load_backbone_weights(
    module: nn.Module, path: str | Path, *, min_fraction: float = MIN_MATCHED
) -> LoadReport:
    """Load a local state dict into `module` by canonical key and shape (``strict=False``).

    Raises:
        ValueError: fewer than `min_fraction` of the module's tensors (running BN statistics
            included, ``num_batches_tracked`` excluded) found a key of the same shape.
    """
    path = Path(path).expanduser()
    source = {_canonical(k): v for k, v in reversed(_read_state_dict(path).items())}
    own = {k: v for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}
    found: dict[str, Tensor] = {}
    missing: list[str] = []
    for key, value in own.items():
        candidate = source.get(_canonical(key))
        if candidate is not None and candidate.shape == value.shape:
            found[key] = candidate
        else:
            missing.append(key)
    report = LoadReport(len(found), len(own), missing)
    if report.fraction < min_fraction:
        raise ValueError(
            f"{path}: only {report.matched}/{report.total} backbone tensors matched by name and "
            f"shape (need {min_fraction:.0%}); missing e.g. {missing[:5]} — is it a checkpoint "
            "of a different backbone?"
        )
    module.load_state_dict(found, strict=False)
    return report

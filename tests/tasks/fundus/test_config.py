"""The fundus config: input size per backbone, TTA forms, sources, bad input naming its field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import from_dict, load
from orchestrator.errors import ConfigError
from tasks.fundus.config import FundusConfig, FundusData

BASE = """
name: t
task: fundus
data: {manifest: labels.csv, image_size: 512}
model: {backbone: efficientnet_b0}
"""


def _load(tmp_path: Path, overrides: dict[str, Any] | None = None, text: str = BASE) -> Any:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return load(path, overrides)


def test_auto_size_is_the_native_size_and_is_recorded(tmp_path: Path) -> None:
    cfg = _load(tmp_path, {"data.image_size": "auto"})
    assert cfg.task.data.resolved_image_size == 224 and cfg.task.data.size == 224
    stored = cfg.to_dict()
    assert stored["data"]["image_size"] == "auto" and stored["data"]["resolved_image_size"] == 224
    # overriding the backbone of a stored config re-resolves: b6's native size, not b0's 224
    b6 = cfg.with_overrides({"model.backbone": "tf_efficientnet_b6"})
    assert b6.task.data.resolved_image_size == 528
    deit = cfg.with_overrides({"model.backbone": "deit_base_patch16_224"})
    assert deit.task.data.resolved_image_size == 224
    assert from_dict(deit.to_dict()).to_dict() == deit.to_dict()


def test_explicit_size_is_kept_for_cnns(tmp_path: Path) -> None:
    cfg = _load(tmp_path, {"data.resolved_image_size": 7})  # a filled-in value is replaced
    assert cfg.task.data.resolved_image_size == 512


def test_fixed_size_model_at_512_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, {"model.backbone": "deit_base_patch16_224"})
    assert err.value.where == "field data" and err.value.source == str(tmp_path / "exp.yaml")
    assert "image_size 512" in err.value.message and "224" in err.value.message
    assert "data.image_size: 224 or auto" in err.value.message


def test_unknown_backbone_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, {"model.backbone": "efficientnet_b99"})
    assert err.value.where == "field model.backbone" and "efficientnet_b0" in err.value.message


@pytest.mark.parametrize(
    ("given", "flips"),
    [(True, ["h"]), (False, []), (None, []), ("none", []), ("h,v", ["h", "v"]), (["hv"], ["hv"])],
)
def test_tta_forms(tmp_path: Path, given: Any, flips: list[str]) -> None:
    assert _load(tmp_path, {"train.tta": given}).task.train.tta == flips


def test_bad_tta_and_smoothing_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"field train\.tta\.0"):
        _load(tmp_path, {"train.tta": ["x"]})
    with pytest.raises(ConfigError, match=r"field train\.smoothing"):
        _load(tmp_path, {"train.smoothing": "asymmetric"})
    with pytest.raises(ConfigError, match=r"field train\.focal_alpha"):
        _load(tmp_path, {"train.focal_alpha": 1.5})


def test_exactly_one_of_manifest_and_sources(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one of `manifest` and `sources`"):
        _load(tmp_path, {"data.sources": "sources.json"})
    with pytest.raises(ConfigError, match="exactly one"):
        _load(tmp_path, {"data.manifest": None})
    with pytest.raises(ConfigError, match=r"synth\.sources > 1"):
        _load(tmp_path, {"data.synth": {"sources": 3}})


def test_source_mapping_outside_0_1_names_the_field(tmp_path: Path) -> None:
    sources = [
        {"name": "a", "manifest": "a.csv"},
        {"name": "b", "manifest": "b.csv", "label_column": "dx", "label_map": {"G": 2, "N": 0}},
    ]
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, {"data.manifest": None, "data.sources": sources})
    assert err.value.where == "field data.sources"
    assert "sources[1].label_map" in err.value.message and "'G' to 2" in err.value.message


def test_inline_sources_validate(tmp_path: Path) -> None:
    sources = [{"name": "b", "manifest": "b.csv", "label_map": {"G": 1, "N": 0}}]
    cfg = _load(tmp_path, {"data.manifest": None, "data.sources": sources})
    assert cfg.task.data.sources[0].label_map == {"G": 1, "N": 0}


def test_data_alone_needs_an_explicit_size() -> None:
    assert FundusData(manifest="x.csv", image_size=64).size == 64
    with pytest.raises(ValueError, match="auto"):
        _ = FundusData(manifest="x.csv", image_size="auto").size
    assert FundusConfig.model_validate({"data": {"manifest": "x"}}).data.size == 96

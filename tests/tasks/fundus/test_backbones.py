"""tasks.fundus.backbones: input sizes from timm, local weights only, classifier creation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import timm
import torch

from orchestrator.errors import DataError
from tasks.fundus import backbones
from tasks.fundus.backbones import (
    create_classifier,
    fixed_input_size,
    native_input_size,
    resolve_image_size,
    resolve_pretrained,
)

SEED_MODELS = {  # seed 002's backbones: (native size, fixed size)
    "deit_base_patch16_224": (224, 224),
    "efficientnet_b0": (224, None),
    "efficientnet_b2": (256, None),
    "efficientnet_b6": (528, None),
    "resnext50_32x4d": (224, None),
    "resnest50d": (224, None),
}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network, no real caches: every lookup sees only what a test puts there."""
    for var in ("MEDSWEEP_WEIGHTS", "HF_HUB_CACHE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(backbones, "_hub_reachable", _no_network)


def _no_network() -> bool:
    raise AssertionError("a test tried to reach the network")


@pytest.mark.parametrize(("name", "sizes"), SEED_MODELS.items())
def test_sizes_from_pretrained_cfg(name: str, sizes: tuple[int, int | None]) -> None:
    assert (native_input_size(name), fixed_input_size(name)) == sizes
    assert resolve_image_size(name, "auto") == sizes[0]


def test_cnns_take_any_size_fixed_models_do_not() -> None:
    assert resolve_image_size("efficientnet_b0", 512) == 512
    assert resolve_image_size("deit_base_patch16_224", 224) == 224
    with pytest.raises(DataError) as err:
        resolve_image_size("deit_base_patch16_224", 512)
    assert err.value.where == "field data.image_size"
    assert "deit_base_patch16_224" in err.value.message and "224" in err.value.message


def test_unknown_model() -> None:
    with pytest.raises(DataError) as err:
        native_input_size("efficientnet_b99")
    assert err.value.where == "field model.backbone" and "efficientnet_b0" in err.value.message


def test_deit_at_auto_size_trains_one_step() -> None:
    torch.manual_seed(0)
    size = resolve_image_size("deit_base_patch16_224", "auto")
    model: Any = create_classifier("deit_base_patch16_224", 1, None, drop_rate=0.1)
    # Train the last block and the head only: a full backward of 86M weights costs ~8 s on CPU.
    for p in model.parameters():
        p.requires_grad_(False)
    for p in [*model.blocks[-1].parameters(), *model.get_classifier().parameters()]:
        p.requires_grad_(True)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    before = model.get_classifier().weight.detach().clone()
    out = model(torch.randn(1, 3, size, size))
    assert out.shape == (1, 1)
    torch.nn.functional.binary_cross_entropy_with_logits(out, torch.ones(1, 1)).backward()
    assert model.blocks[-1].mlp.fc1.weight.grad is not None
    opt.step()
    assert not torch.equal(model.get_classifier().weight, before)
    with pytest.raises((AssertionError, RuntimeError), match="224"):  # fixed grid: 224 only
        model(torch.randn(1, 3, 512, 512))


def test_offline_without_files_names_the_file_to_place(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        resolve_pretrained("efficientnet_b0", None, [str(tmp_path / "w")])
    assert err.value.where == "field model.pretrained"
    msg = err.value.message
    assert str(tmp_path / "w" / "efficientnet_b0.safetensors") in msg
    assert "timm/efficientnet_b0.ra_in1k" in msg and "offline" in msg


def test_model_without_timm_weights() -> None:
    with pytest.raises(DataError) as err:
        resolve_pretrained("efficientnet_b6", None, None)
    assert "tf_efficientnet_b6" in err.value.message  # where weights do exist


def test_weights_folder_and_explicit_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "w"
    (folder / "resnet18").mkdir(parents=True)
    nested = folder / "resnet18" / "model.safetensors"
    nested.write_bytes(b"x")
    assert resolve_pretrained("resnet18", None, [str(folder)]) == str(nested)
    flat = folder / "resnet18.pth"
    flat.write_bytes(b"x")
    assert resolve_pretrained("resnet18", None, [str(folder)]) == str(flat)  # .pth first
    monkeypatch.setenv("MEDSWEEP_WEIGHTS", str(folder))
    assert resolve_pretrained("resnet18", None, None) == str(flat)
    assert resolve_pretrained("resnet18", str(nested), None) == str(nested)
    with pytest.raises(DataError) as err:
        resolve_pretrained("resnet18", str(tmp_path / "nope.pth"), None)
    assert err.value.where == "field model.weights"


def test_hugging_face_cache(tmp_path: Path) -> None:
    snap = tmp_path / "hf" / "hub" / "models--timm--resnet18.a1_in1k" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "model.safetensors").write_bytes(b"x")
    assert resolve_pretrained("resnet18", None, None) == str(snap / "model.safetensors")


def test_online_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(backbones, "_hub_reachable", lambda: True)
    assert resolve_pretrained("resnet18", None, None) is None  # timm may download
    monkeypatch.setattr(backbones, "_hub_reachable", lambda: False)
    with pytest.raises(DataError):
        resolve_pretrained("resnet18", None, None)


def test_create_classifier_loads_the_file(tmp_path: Path) -> None:
    source: Any = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model: Any = create_classifier("resnet18", 1, str(path), drop_rate=0.0)
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)
    assert model.get_classifier().out_features == 1
    same_classes: Any = create_classifier("resnet18", 1000, str(path), drop_rate=0.0)
    assert not torch.equal(same_classes.get_classifier().weight, source.fc.weight)  # re-initialised


def test_create_classifier_rejects_a_file_that_does_not_fit(tmp_path: Path) -> None:
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("layer4")}, partial)
    with pytest.raises(DataError) as err:
        create_classifier("resnet18", 1, str(partial))
    assert err.value.where == "field model.pretrained" and "layer4" in err.value.message
    with pytest.raises(DataError, match="resnet10t"):
        create_classifier("resnet10t", 1, str(partial))  # shapes differ

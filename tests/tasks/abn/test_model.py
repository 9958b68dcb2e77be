"""Attention Branch Network: shapes, gradient paths, attention range, stages, weights, errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from tasks.abn.model import AttentionBranchNetwork

STAGES = ["stem", "layer1", "layer2", "layer3", "layer4"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny tensors: OpenMP threads only contend on the shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("backbone", "k"), [("resnet10t", 2), ("resnet18", 3)])
def test_output_shapes_at_stride_16(backbone: str, k: int) -> None:
    torch.manual_seed(0)
    model = AttentionBranchNetwork(backbone, num_classes=k).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 48, 80))
    assert out.per_logits.shape == (2, k) and out.att_logits.shape == (2, k)
    assert out.attention.shape == (2, 1, 3, 5)  # 48/16 x 80/16
    assert out.maps.shape == (2, k, 3, 5)
    assert out.attention.min() >= 0.0 and out.attention.max() <= 1.0
    # The attention-branch logits are the global average of the maps.
    torch.testing.assert_close(out.att_logits, out.maps.mean(dim=(2, 3)))


def test_single_channel_input() -> None:
    model = AttentionBranchNetwork("resnet10t", in_chans=1).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 32)).attention.shape == (1, 1, 2, 2)


def _grad_norm(module: nn.Module) -> float:
    return float(sum(p.grad.abs().sum() for p in module.parameters() if p.grad is not None))


def test_gradients_reach_both_branches_and_the_backbone() -> None:
    torch.manual_seed(0)
    model = AttentionBranchNetwork("resnet10t")
    x = torch.randn(2, 3, 32, 32)
    # Perception loss alone: reaches the classifier, layer4, the attention map (through
    # features * (1 + M)) and the shared backbone.
    model(x).per_logits.sum().backward()
    for part in (model.classifier, model.last_stage, model.att_map, model.att_block):
        assert _grad_norm(part) > 0, part
    assert _grad_norm(model.features) > 0
    assert _grad_norm(model.att_class) == 0  # the attention logits played no part
    model.zero_grad(set_to_none=True)
    # Attention-branch loss alone: its own layers and the backbone, never the perception side.
    model(x).att_logits.sum().backward()
    assert _grad_norm(model.att_class) > 0 and _grad_norm(model.att_block) > 0
    assert _grad_norm(model.features) > 0
    assert _grad_norm(model.classifier) == 0 and _grad_norm(model.last_stage) == 0


def test_stages_cover_the_backbone_exactly_once() -> None:
    model = AttentionBranchNetwork("resnet18")
    stages = model.stages()
    assert list(stages) == STAGES
    stage_params = [id(p) for mods in stages.values() for m in mods for p in m.parameters()]
    backbone = [*model.features.parameters(), *model.last_stage.parameters()]
    assert sorted(stage_params) == sorted(id(p) for p in backbone)
    assert stages["layer4"] == [model.last_stage.layer4]
    heads = {id(p) for m in (model.att_block, model.classifier) for p in m.parameters()}
    assert not heads & set(stage_params)


def test_wide_backbones_get_a_bottleneck_attention_block() -> None:
    model = AttentionBranchNetwork("resnet18", att_channels=64)
    convs = [m for m in model.att_block.modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(1, 1), (3, 3), (1, 1)]
    assert convs[1].in_channels == 64 and convs[0].in_channels == 256


def test_local_weights_are_loaded_into_the_backbone(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = timm.create_model("resnet10t", pretrained=False, num_classes=0, global_pool="")
    torch.save(source.state_dict(), tmp_path / "w.pth")
    model = AttentionBranchNetwork("resnet10t", weights=tmp_path / "w.pth")
    assert model.load_report is not None and model.load_report.fraction == 1.0
    ours, theirs = model.state_dict(), source.state_dict()
    for key in ("conv1.0.weight", "layer3.0.conv1.weight", "layer3.0.bn1.running_var"):
        torch.testing.assert_close(ours[f"features.{key}"], theirs[key])
    torch.testing.assert_close(
        ours["last_stage.layer4.0.conv2.weight"], theirs["layer4.0.conv2.weight"]
    )
    torch.save({"conv1.0.weight": theirs["conv1.0.weight"]}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"partial\.pth.*matched"):
        AttentionBranchNetwork("resnet10t", weights=tmp_path / "partial.pth")


def test_unsupported_backbones_and_sizes_are_named() -> None:
    with pytest.raises(ValueError, match=r"efficientnet_b0.*not ResNet-like.*nested"):
        AttentionBranchNetwork("efficientnet_b0")
    with pytest.raises(ValueError, match="num_classes"):
        AttentionBranchNetwork("resnet10t", num_classes=1)

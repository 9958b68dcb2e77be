"""CenterNet: shapes, target encoding/decoding, loss, a tiny overfit, stages and weight loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.ops import box_iou

from tasks.detection.centernet import (
    Backbone,
    CenterNet,
    centernet_loss,
    collate,
    decode,
    encode_targets,
    focal_loss,
    output_hw,
    stack_targets,
)

# Non-square input, objects of different sizes, classes, and one touching the border.
INPUT_HW = (96, 128)
OUT_HW = (24, 32)
BOXES = torch.tensor([[10.0, 8.0, 42.0, 30.0], [60.0, 40.0, 90.0, 90.0], [100.0, 5.0, 128.0, 25.0]])
LABELS = torch.tensor([0, 3, 2])


def _perfect_outputs(t: dict[str, torch.Tensor], num_classes: int) -> dict[str, torch.Tensor]:
    """Network outputs that reproduce the targets exactly (heat 1 at centres, 0 elsewhere)."""
    hm = t["hm"][None]
    h, w = hm.shape[-2:]
    out = {"hm": torch.where(hm == 1, 20.0, -20.0)}
    for key in ("wh", "reg"):
        dense = torch.zeros(1, 2, h * w)
        dense[0][:, t["ind"][t["mask"] > 0]] = t[key][t["mask"] > 0].T
        out[key] = dense.reshape(1, 2, h, w)
    if t["hm"].shape[0] == 1 and num_classes > 1:
        cls = torch.zeros(1, num_classes, h * w)
        cls[0, t["cls"][t["mask"] > 0], t["ind"][t["mask"] > 0]] = 10.0
        out["cls"] = cls.reshape(1, num_classes, h, w)
    return out


@pytest.mark.parametrize("class_agnostic", [False, True])
def test_encode_decode_round_trip(class_agnostic: bool) -> None:
    t = encode_targets(BOXES, LABELS, OUT_HW, num_classes=4, class_agnostic=class_agnostic)
    assert t["hm"].shape == (1 if class_agnostic else 4, *OUT_HW)
    assert t["mask"].sum() == 3 and t["wh"].shape == (64, 2)
    dets = decode(_perfect_outputs(t, 4), k=10, input_hw=INPUT_HW)[0]
    top = dets["boxes"][:3]
    iou = box_iou(BOXES, top)
    best = iou.max(dim=1)
    assert (best.values > 0.9).all(), iou
    assert dets["labels"][:3][best.indices].tolist() == LABELS.tolist()
    assert (dets["scores"][:3] > 0.9).all() and (dets["scores"][3:] < 0.9).all()


def test_encode_skips_empty_boxes_and_caps_objects() -> None:
    boxes = torch.tensor([[5.0, 5.0, 5.0, 20.0]] + [[4.0, 4.0, 20.0, 20.0]] * 70)
    t = encode_targets(boxes, torch.zeros(71, dtype=torch.long), (16, 16), 1, max_objs=64)
    assert t["mask"].sum() == 64
    with pytest.raises(ValueError, match="label 5"):
        encode_targets(BOXES[:1], torch.tensor([5]), OUT_HW, num_classes=4)


def test_focal_loss_small_for_perfect_and_large_for_wrong_predictions() -> None:
    t = encode_targets(BOXES, LABELS, OUT_HW, num_classes=4)["hm"][None]
    perfect = torch.where(t == 1, 20.0, -20.0)
    shifted = torch.roll(perfect, shifts=(5, 7), dims=(2, 3))  # peaks in the wrong places
    initial = torch.full_like(t, -2.19)
    assert focal_loss(perfect, t) < 1e-3
    assert focal_loss(shifted, t) > 10
    assert focal_loss(initial, t) > 1


def test_centernet_loss_parts() -> None:
    t = encode_targets(BOXES, LABELS, OUT_HW, num_classes=4, class_agnostic=True)
    targets = stack_targets([t])
    perfect = _perfect_outputs(t, 4)
    total, parts = centernet_loss(perfect, targets)
    assert set(parts) == {"hm", "wh", "off", "cls", "total"}
    assert parts["total"] < 1e-2 and total.item() == pytest.approx(parts["total"])
    worse = dict(perfect, wh=perfect["wh"] + 3.0, cls=-perfect["cls"])
    _, bad = centernet_loss(worse, targets)
    assert bad["wh"] == pytest.approx(3.0, abs=1e-3) and bad["cls"] > 5


@pytest.mark.parametrize(
    ("num_classes", "class_agnostic", "hm_channels"), [(1, False, 1), (4, False, 4), (4, True, 1)]
)
def test_output_shapes(num_classes: int, class_agnostic: bool, hm_channels: int) -> None:
    torch.manual_seed(0)
    model = CenterNet("resnet10t", num_classes, class_agnostic=class_agnostic, head_conv=16)
    out = model(torch.randn(2, 3, 64, 64))
    assert out["hm"].shape == (2, hm_channels, 16, 16)
    assert out["wh"].shape == out["reg"].shape == (2, 2, 16, 16)
    assert ("cls" in out) is class_agnostic
    if class_agnostic:
        assert out["cls"].shape == (2, num_classes, 16, 16)
    hm_bias = model.heads["hm"].get_parameter("2.bias")
    assert torch.allclose(hm_bias, torch.tensor(-2.19))  # the paper's prior: heat ~0.1 at start
    assert 0.03 < torch.sigmoid(out["hm"]).mean().item() < 0.3


def test_odd_input_size_and_no_skips() -> None:
    model = CenterNet("resnet10t", 2, skips=False, head_conv=8)
    assert not model.neck.laterals
    assert model(torch.randn(1, 3, 80, 64))["hm"].shape == (1, 2, *output_hw((80, 64)))
    with_skips = CenterNet("resnet10t", 2, head_conv=8)
    assert with_skips(torch.randn(1, 3, 70, 57))["hm"].shape == (1, 2, 18, 15)


def _square_batch() -> tuple[torch.Tensor, list[torch.Tensor]]:
    boxes = [torch.tensor([[8.0, 12.0, 28.0, 36.0]]), torch.tensor([[30.0, 20.0, 58.0, 44.0]])]
    x = torch.zeros(2, 3, 64, 64)
    for i, b in enumerate(boxes):
        x1, y1, x2, y2 = b[0].int().tolist()
        x[i, :, y1:y2, x1:x2] = 1.0
    return (x - 0.5) / 0.25, boxes


def test_tiny_overfit_finds_the_squares() -> None:
    torch.manual_seed(0)
    x, boxes = _square_batch()
    samples = [
        (img, encode_targets(b, torch.tensor([0]), (16, 16), 1))
        for img, b in zip(x, boxes, strict=True)
    ]
    images, targets = collate(samples)
    model = CenterNet("resnet10t", 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(60):
        loss, _ = centernet_loss(model(images), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    dets = decode(model(images), k=5, input_hw=(64, 64))
    for det, gt in zip(dets, boxes, strict=True):
        assert box_iou(det["boxes"][:1], gt).item() > 0.7
        assert det["scores"][0] > 0.5


def test_stages_of_resnet18() -> None:
    backbone = Backbone("resnet18")
    stages = backbone.stages()
    assert list(stages) == ["stem", "layer1", "layer2", "layer3", "layer4"]
    body = backbone.body
    assert stages["stem"] == [body.conv1, body.bn1]
    assert stages["layer4"] == [body.layer4]
    staged = {id(p) for mods in stages.values() for m in mods for p in m.parameters()}
    assert staged == {id(p) for p in backbone.parameters()}


def test_stages_of_a_flattened_timm_backbone() -> None:
    stages = Backbone("convnext_atto").stages()
    assert list(stages) == ["stages_0", "stages_1", "stages_2", "stages_3"]
    assert len(stages["stages_0"]) == 3  # stem conv + stem norm + first stage


def test_load_weights_saved_from_a_backbone(tmp_path: Path) -> None:
    source = Backbone("resnet10t")
    # keys as a wrapped full model would have them: prefixes are stripped
    wrapped = {f"module.backbone.body.{k}": v for k, v in source.body.state_dict().items()}
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": wrapped}, path)
    loaded = Backbone("resnet10t", pretrained=True, weights=path)
    assert loaded.load_report is not None and loaded.load_report.fraction == 1.0
    for key, value in source.body.state_dict().items():
        assert torch.equal(loaded.body.state_dict()[key], value), key


def test_load_safetensors_from_the_pooled_classifier_keys(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    pooled = timm.create_model("convnext_atto", num_classes=0, pretrained=False)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in pooled.state_dict().items()}, str(path))
    loaded = Backbone("convnext_atto", weights=path)  # keys stages.0... vs stages_0...
    assert loaded.load_report is not None and loaded.load_report.fraction == 1.0
    w = pooled.state_dict()["stages.3.blocks.1.conv_dw.weight"]
    assert torch.equal(loaded.body.state_dict()["stages_3.blocks.1.conv_dw.weight"], w)


def test_mismatched_weights_raise(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save(Backbone("resnet10t").body.state_dict(), path)  # deep stem, other shapes
    with pytest.raises(ValueError, match=r"missing e\.g\.") as info:
        CenterNet("resnet18", 1, weights=path)
    assert "conv1.weight" in str(info.value)
    with pytest.raises(ValueError, match="local `weights`"):
        Backbone("resnet18", pretrained=True)
    with pytest.raises(FileNotFoundError):
        Backbone("resnet18", weights=tmp_path / "nope.pt")

"""SimSiam: stop-gradient, loss decrease, the task on a tiny image folder, artifact -> CenterNet."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from orchestrator.errors import DataError
from tasks.base import RunContext
from tasks.detection.centernet import CenterNet
from tasks.simsiam.config import SimSiamConfig
from tasks.simsiam.task import SimSiam, SimSiamTask, list_images, simsiam_loss

TINY: dict[str, Any] = {"backbone": "resnet10t", "proj_dim": 64, "pred_dim": 16}


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 grey 48x40 'ultrasound' images: noise plus a bright ellipse, in two sub-folders."""
    root = tmp_path_factory.mktemp("us")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:40, :48]
    for i in range(12):
        cx, cy, r = rng.uniform(12, 36), rng.uniform(10, 30), rng.uniform(4, 9)
        img = rng.normal(60, 20, (40, 48)) + 120 * (((xx - cx) ** 2 + (yy - cy) ** 2) < r**2)
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(exist_ok=True)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "L").save(sub / f"{i:02d}.png")
    return root


def _config(images: Path | str, **train: object) -> SimSiamConfig:
    return SimSiamConfig.model_validate(
        {
            "data": {"images": str(images), "image_size": 32, "val_fraction": 0.25},
            "model": TINY,
            "train": {"epochs": 2, "batch_size": 4, **train},
        }
    )


def test_stop_gradient_on_the_targets() -> None:
    p1, p2 = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8, requires_grad=True)
    z1, z2 = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8, requires_grad=True)
    simsiam_loss(p1, p2, z1, z2).backward()
    assert z1.grad is None and z2.grad is None
    assert p1.grad is not None and p2.grad is not None
    same = torch.randn(4, 8)
    assert simsiam_loss(same, same, same, same).item() == pytest.approx(-1.0)


def test_model_targets_get_no_gradient_from_the_loss() -> None:
    model = SimSiam(**TINY)
    p1, p2, z1, z2 = model(torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32))
    assert z1.requires_grad  # the model returns raw z; the loss applies the stop-gradient
    # with the predictions fixed, the loss is a constant of z: nothing flows into the targets
    assert not simsiam_loss(p1.detach(), p2.detach(), z1, z2).requires_grad
    (g1,) = torch.autograd.grad(simsiam_loss(p1, p2, z1, z2), [z1])
    assert g1.abs().sum() > 0  # ...while z still learns through p = predictor(z)


def test_loss_decreases_on_fixed_views() -> None:
    torch.manual_seed(0)
    model = SimSiam(**TINY)
    x1, x2 = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(8):
        loss = simsiam_loss(*model(x1, x2))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1


def test_task_trains_evaluates_and_saves_a_backbone_for_centernet(
    image_dir: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    task = SimSiamTask(_config(image_dir))
    task.check_data()
    task.setup(RunContext(run_id="t", seed=0))
    assert len(task.frames["train"]) == 9 and len(task.frames["val"]) == 3
    train = task.train_epoch(1)
    assert set(train) == {"train_loss", "train_std", "train_lr"}
    first, again = task.evaluate(1), task.evaluate(1)
    assert first == again  # fixed validation views
    assert -1 <= first["val_loss"] <= 1 and 0 < first["val_std"] <= 1 / math.sqrt(64) + 1e-6

    state = task.state_dict()
    other = SimSiamTask(_config(image_dir))
    other.setup(RunContext(run_id="u", seed=1))
    other.load_state_dict(state)
    assert other.evaluate(1) == first

    paths = task.save_artifacts(tmp_path)
    assert [p.name for p in paths] == ["val_predictions.csv", "backbone.pt"]
    path = paths[-1]
    detector = CenterNet("resnet10t", 4, weights=path)
    report = detector.backbone.load_report
    assert report is not None and report.fraction >= 0.9
    encoder = task.bare.encoder.state_dict()
    assert torch.equal(
        detector.backbone.body.state_dict()["layer4.0.conv1.weight"],
        encoder["layer4.0.conv1.weight"],
    )


def test_adamw_constant_lr_and_fixed_predictor_lr(image_dir: Path) -> None:
    task = SimSiamTask(_config(image_dir, optimizer="adamw", lr=1e-3, scheduler="constant"))
    task.setup(RunContext(run_id="t", seed=0))
    assert isinstance(task.optimizer, torch.optim.AdamW)
    task.train_epoch(1)
    assert [g["lr"] for g in task.optimizer.param_groups] == pytest.approx([1e-3, 1e-3])
    cosine = SimSiamTask(_config(image_dir, epochs=1))
    cosine.setup(RunContext(run_id="t", seed=0))
    cosine.train_epoch(1)
    encoder_lr, predictor_lr = (g["lr"] for g in cosine.optimizer.param_groups)
    assert encoder_lr == pytest.approx(0.0) and predictor_lr == pytest.approx(0.05)


def test_coco_json_and_bad_inputs(image_dir: Path, tmp_path: Path) -> None:
    files = sorted(p.relative_to(image_dir) for p in image_dir.rglob("*.png"))
    coco = tmp_path / "train.json"
    coco.write_text(
        json.dumps({"images": [{"id": i, "file_name": str(f)} for i, f in enumerate(files)]})
    )
    cfg = _config(coco)
    cfg.data.image_root = str(image_dir)
    assert list_images(cfg.data) == [str(image_dir / f) for f in files]
    SimSiamTask(cfg).check_data()

    cfg.data.image_root = str(tmp_path)  # files are not there
    with pytest.raises(DataError, match="missing"):
        SimSiamTask(cfg).check_data()
    with pytest.raises(DataError, match="folder of images or a COCO"):
        SimSiamTask(_config(tmp_path / "nowhere")).check_data()
    single = tmp_path / "one"
    single.mkdir()
    Image.new("L", (8, 8)).save(single / "x.png")
    with pytest.raises(DataError, match="at least 2"):
        SimSiamTask(_config(single)).check_data()


def test_synthesizes_liver_ultrasound_when_images_are_missing(tmp_path: Path) -> None:
    coco = tmp_path / "liver" / "annotations" / "train.json"
    cfg = SimSiamConfig.model_validate(
        {"data": {"images": str(coco), "synth": {"n": 16, "size": 64}}, "model": TINY}
    )
    SimSiamTask(cfg).check_data()
    paths = list_images(cfg.data)
    assert coco.is_file() and len(paths) >= 3 and all(Path(p).is_file() for p in paths)
    wrong = cfg.model_copy(deep=True)
    wrong.data.images = str(tmp_path / "other" / "pictures" / "x.json")
    with pytest.raises(DataError, match="does not provide"):
        SimSiamTask(wrong).check_data()

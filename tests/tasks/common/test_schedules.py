"""UnfreezeSchedule on a tiny fake 4-stage model, and ScaledLambdaLR."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from tasks.common.schedules import (
    ScaledLambdaLR,
    UnfreezeConfig,
    UnfreezeSchedule,
    warmup_cosine,
)

NAMES = ["stem", "s1", "s2", "s3"]


class Fake(nn.Module):
    """Four stages (each Linear + BatchNorm) and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleDict(
            {n: nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)) for n in NAMES}
        )
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks.values():
            x = block(x)
        return self.head(x)

    def stages(self) -> dict[str, list[nn.Module]]:
        return {n: [m] for n, m in self.blocks.items()}


def _make(
    **overrides: object,
) -> tuple[Fake, torch.optim.Optimizer, UnfreezeSchedule]:
    torch.manual_seed(0)
    model = Fake()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    return model, opt, UnfreezeSchedule(model.stages(), opt, UnfreezeConfig(**overrides))


def _grad_flags(model: Fake) -> dict[str, bool]:
    return {n: all(p.requires_grad for p in b.parameters()) for n, b in model.blocks.items()}


def test_starts_frozen_with_only_the_head_in_the_optimizer() -> None:
    model, opt, sched = _make()
    assert sched.trainable_stages == [] and sched.frozen_stages == NAMES
    assert not any(_grad_flags(model).values())
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_opt == {id(p) for p in model.head.parameters()}


def test_interval_unfreezes_on_epochs_k_plus_one_downstream_first() -> None:
    model, opt, sched = _make(every=2)
    changes: list[list[str]] = []
    sched.on_change = changes.append
    seen = {}
    for epoch in range(1, 11):
        sched.on_epoch_start(None, epoch)
        seen[epoch] = sched.trainable_stages
    assert seen[1] == seen[2] == []
    assert seen[3] == seen[4] == ["s3"]
    assert seen[5] == ["s3", "s2"]
    assert seen[7] == ["s3", "s2", "s1"]
    assert seen[9] == seen[10] == ["s3", "s2", "s1", "stem"]
    assert sched.history == seen
    assert all(_grad_flags(model).values())
    assert [g.get("stage") for g in opt.param_groups] == [None, "s3", "s2", "s1", "stem"]
    assert changes == [["s3"], ["s2"], ["s1"], ["stem"]]


def test_start_unfrozen_first_stage_and_custom_order() -> None:
    model, _, sched = _make(every=3, order=["s1", "stem"], start_frozen=False)
    assert sched.trainable_stages == ["s1"]
    for epoch in range(1, 8):
        sched.on_epoch_start(None, epoch)
    assert sched.history[3] == ["s1"] and sched.history[4] == ["s1", "stem"]
    assert _grad_flags(model) == {"stem": True, "s1": True, "s2": False, "s3": False}


def test_empty_order_keeps_the_backbone_frozen() -> None:
    """Seed 000's baseline: CenterNet on a frozen SimSiam backbone."""
    model, opt, sched = _make(order=[], every=1, start_frozen=False)
    for epoch in range(1, 5):
        sched.on_epoch_start(None, epoch)
    assert sched.trainable_stages == [] and not any(_grad_flags(model).values())
    assert len(opt.param_groups) == 1


def test_unknown_stage_names_are_listed() -> None:
    model = Fake()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"\['layer9'\].*valid: \['stem', 's1', 's2', 's3'\]"):
        UnfreezeSchedule(model.stages(), opt, UnfreezeConfig(order=["s3", "layer9"]))
    with pytest.raises(ValidationError, match="unique"):
        UnfreezeConfig(order=["s3", "s3"])


def test_plateau_mode_unfreezes_after_patience() -> None:
    _, _, sched = _make(mode="plateau", patience=2, metric="val_mAP")
    values = [0.1, 0.2, 0.2, 0.15, 0.3, 0.3, 0.3]
    trainable = []
    for epoch, value in enumerate(values, start=1):
        sched.on_epoch_start(None, epoch)
        trainable.append(len(sched.trainable_stages))
        metrics = {"val_mAP": value}
        sched.on_epoch_end(None, epoch, metrics)
        assert metrics["train_unfrozen"] == len(sched.trainable_stages)
    # epochs 3 and 4 do not improve on 0.2 -> s3 at epoch 5; 6 and 7 do not beat 0.3
    assert trainable == [0, 0, 0, 0, 1, 1, 1]
    sched.on_epoch_start(None, 8)
    assert sched.trainable_stages == ["s3", "s2"]


def test_plateau_min_mode_and_missing_metric() -> None:
    _, _, sched = _make(mode="plateau", patience=1, metric="val_loss", metric_mode="min")
    sched.on_epoch_end(None, 1, {"val_loss": 1.0})
    sched.on_epoch_end(None, 2, {"val_loss": 0.5})
    sched.on_epoch_start(None, 3)
    assert sched.trainable_stages == []
    sched.on_epoch_end(None, 3, {"val_loss": 0.7})
    sched.on_epoch_start(None, 4)
    assert sched.trainable_stages == ["s3"]
    with pytest.raises(ValueError, match=r"'val_loss'.*'val_auc'"):
        sched.on_epoch_end(None, 4, {"val_auc": 0.5})


def test_lr_mult_param_groups_follow_scaled_lambda_lr() -> None:
    _, opt, sched = _make(every=1, lr_mult=0.5)
    lr = ScaledLambdaLR(opt, lambda step: 1.0 / (step + 1))
    sched.on_epoch_start(None, 2)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.05)  # 0.1 * 0.5**1 * factor 1
    lr.step()  # factor 1/2
    sched.on_epoch_start(None, 3)  # added mid-schedule: uses today's factor at once
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.025, 0.0125])
    assert [g["lr_scale"] for g in opt.param_groups] == [1.0, 0.5, 0.25]
    lr.step()  # factor 1/3 applies to every group, including the new one
    assert lr.get_last_lr() == pytest.approx([0.1 / 3, 0.05 / 3, 0.025 / 3])


def _weight(model: Fake, stage: str) -> torch.Tensor:
    return model.blocks[stage].get_parameter("0.weight")


def test_frozen_batchnorm_stays_in_eval_mode_and_weights_do_not_move() -> None:
    model, opt, sched = _make(every=1)
    sched.on_epoch_start(None, 2)  # s3 trainable
    sched.train_mode(model)
    assert model.training and model.head.training and model.blocks["s3"].training
    bn = model.blocks["s1"].get_submodule("1")
    assert isinstance(bn, nn.BatchNorm1d) and bn.running_mean is not None
    assert not model.blocks["s1"].training and not bn.training
    stats = bn.running_mean.clone()
    frozen_w, trained_w = _weight(model, "s1").clone(), _weight(model, "s3").clone()
    loss = model(torch.randn(8, 4)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.equal(bn.running_mean, stats)
    assert torch.equal(_weight(model, "s1"), frozen_w)
    assert not torch.equal(_weight(model, "s3"), trained_w)


def test_disabled_trains_everything() -> None:
    model, opt, sched = _make(enabled=False)
    sched.on_epoch_start(None, 1)
    metrics: dict[str, float] = {}
    sched.on_epoch_end(None, 1, metrics)
    assert metrics["train_unfrozen"] == 4 and all(_grad_flags(model).values())
    assert len(opt.param_groups) == 1


def test_resume_restores_param_groups_before_the_optimizer() -> None:
    model, opt, sched = _make(every=1)
    for epoch in (1, 2, 3):
        sched.on_epoch_start(None, epoch)
    model(torch.randn(8, 4)).sum().backward()
    opt.step()
    saved_opt, saved_sched = opt.state_dict(), sched.state_dict()

    _, opt2, sched2 = _make(every=1)
    changes: list[list[str]] = []
    sched2.on_change = changes.append
    sched2.load_state_dict(saved_sched)
    assert changes == [["s3", "s2"]]  # e.g. to re-wrap DDP
    opt2.load_state_dict(saved_opt)
    assert sched2.trainable_stages == ["s3", "s2"]
    assert [g.get("stage") for g in opt2.param_groups] == [None, "s3", "s2"]
    with pytest.raises(ValueError, match="incompatible"):
        _make(order=["s1"])[2].load_state_dict(saved_sched)


def test_warmup_cosine() -> None:
    assert warmup_cosine(0, 10, 2) == 0.5
    assert warmup_cosine(2, 10, 2) == 1.0
    assert warmup_cosine(10, 10, 2) == pytest.approx(0.0)

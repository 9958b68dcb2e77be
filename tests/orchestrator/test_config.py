from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import from_dict, load, parse_overrides, parse_value
from orchestrator.errors import ConfigError, UserError

BASE = """
name: t
task: fundus
data: {manifest: labels.csv}
train: {epochs: 2, lr: 0.001}
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(text)
    return p


def test_load_fills_defaults_and_resolves(tmp_path: Path) -> None:
    cfg = load(_write(tmp_path, BASE))
    d = cfg.to_dict()
    assert d["train"]["epochs"] == 2
    assert d["model"]["backbone"] == "resnet18" and d["model"]["pretrained"] is False
    assert d["resources"]["workers"] == 1
    assert cfg.metric == "val_auc" and cfg.mode == "max"
    # the resolved dump validates back to the same config
    assert from_dict(d).to_dict() == d


def test_overrides_are_typed_and_validated(tmp_path: Path) -> None:
    p = _write(tmp_path, BASE)
    cfg = load(p, parse_overrides(["train.lr=3e-4", "model.backbone=resnet10t"]))
    assert cfg.task.train.lr == pytest.approx(3e-4)  # type: ignore[attr-defined]
    assert cfg.task.model.backbone == "resnet10t"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"field train\.lr"):
        load(p, {"train.lr": "abc"})
    with pytest.raises(ConfigError, match=r"train\.lrr: unknown key"):
        load(p, {"train.lrr": 1})


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        (BASE.replace("epochs: 2", "epochs: two"), r"exp\.yaml.*field train\.epochs"),
        (BASE + "trian: {}\n", r"field trian: unknown key"),
        (BASE.replace("task: fundus", "task: nope"), r"unknown task 'nope'.*fundus"),
        ("name: [unclosed\n", r"line 2, column 1: not valid YAML"),
        ("- a\n- b\n", r"mapping of sections"),
        (BASE.replace("name: t", "name: 'a b'"), r"field name"),
        (BASE + "resources: {gpus_per_worker: 1.5}\n", r"resources\.gpus_per_worker"),
        (
            BASE + "resources: {workers: 2, gpus_per_worker: 0.5}\n",
            r"field resources: gpus_per_worker: 0\.5 with workers: 2 .* NCCL refuses",
        ),
    ],
)
def test_bad_configs_name_file_and_field(tmp_path: Path, text: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load(_write(tmp_path, text))


def test_fractional_gpus_pack_single_worker_runs(tmp_path: Path) -> None:
    cfg = load(_write(tmp_path, BASE + "resources: {workers: 1, gpus_per_worker: 0.25}\n"))
    assert cfg.experiment.resources.gpus_per_worker == 0.25
    cfg = load(_write(tmp_path, BASE + "resources: {workers: 2, gpus_per_worker: 1}\n"))
    assert cfg.experiment.resources.workers == 2


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load("/nonexistent/x.yaml")


def test_space_keys_are_checked_before_any_trial(tmp_path: Path) -> None:
    ok = BASE + "sweep:\n  space:\n    train.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}\n"
    assert "train.lr" in load(_write(tmp_path, ok)).experiment.sweep.space
    typo = BASE + "sweep:\n  space:\n    train.lrr: {type: uniform, low: 0, high: 1}\n"
    with pytest.raises(ConfigError, match=r"sweep\.space\.train\.lrr.*no such config field"):
        load(_write(tmp_path, typo))
    bad_value = BASE + "sweep:\n  space:\n    train.epochs: {type: int, low: 0, high: 3}\n"
    with pytest.raises(ConfigError, match=r"sweep\.space\.train\.epochs.*value 0"):
        load(_write(tmp_path, bad_value))
    bad_dim = BASE + "sweep:\n  space:\n    train.lr: {type: uniform, low: 1, high: 0}\n"
    with pytest.raises(ConfigError, match=r"sweep\.space\.train\.lr"):
        load(_write(tmp_path, bad_dim))


def test_parse_value() -> None:
    assert parse_value("1e-3") == pytest.approx(1e-3)
    assert parse_value("3") == 3
    assert parse_value("true") is True
    assert parse_value("[a, b]") == ["a", "b"]
    assert parse_value("resnet18") == "resnet18"
    with pytest.raises(UserError, match="KEY=VALUE"):
        parse_overrides(["novalue"])

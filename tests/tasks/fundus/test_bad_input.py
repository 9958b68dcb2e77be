"""Bad fundus input through the command line: exit 2, a message naming the field, nothing stored."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.cli import main
from tasks.fundus import backbones
from tasks.fundus.synth import generate


@pytest.fixture(scope="module")
def csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("bad"), n=12, size=40, seed=0)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("MEDSWEEP_WEIGHTS", "HF_HUB_CACHE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(backbones, "_hub_reachable", lambda: False)


def _config(tmp_path: Path, csv: Path, data: str = "", model: str = "backbone: resnet10t") -> Path:
    path = tmp_path / "exp.yaml"
    manifest = "" if "sources:" in data else f"manifest: {csv}, "  # sources replace it
    path.write_text(
        f"name: bad\ntask: fundus\n"
        f"data: {{{manifest}image_size: 32, cache_dir: {tmp_path / 'cache'}{data}}}\n"
        f"model: {{{model}}}\nstore: {{root: {tmp_path / 'store'}}}\n"
    )
    return path


@pytest.mark.parametrize(
    ("data", "model", "pattern"),
    [
        ("", "backbone: deit_base_patch16_224", r"field data: image_size 32: deit.*224 or auto"),
        (
            ", sources: [{name: x, manifest: m.csv, label_map: {G: 1, N: 5}}]",
            "backbone: resnet10t",
            r"field data\.sources: sources\[0\]\.label_map: maps 'N' to 5",
        ),
        (
            "",
            "backbone: resnet10t, pretrained: true, weights_dir: WDIR",
            r"field model\.pretrained: no local ImageNet weights.*WDIR/resnet10t\.safetensors",
        ),
    ],
    ids=["fixed-size", "label-map", "offline-weights"],
)
def test_exit_2_naming_the_field_and_nothing_stored(
    tmp_path: Path,
    csv: Path,
    capsys: pytest.CaptureFixture[str],
    data: str,
    model: str,
    pattern: str,
) -> None:
    model = model.replace("WDIR", str(tmp_path / "w"))
    cfg = _config(tmp_path, csv, data, model)
    assert main(["sweep", str(cfg), "--name", "bad"]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert re.search(pattern.replace("WDIR", str(tmp_path / "w")), err), err
    assert "Traceback" not in err
    assert not (tmp_path / "store").exists()

"""Fixtures of the fault-injection suite: tiny data and configs in the `configs/` style."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 synthetic fundus images of 32 px, two per patient."""
    from tasks.fundus.synth import generate

    return generate(tmp_path_factory.mktemp("tiny-fundus"), n=64, size=32, seed=3)


def sweep_yaml(
    folder: Path, csv: Path, *, epochs: int = 2, trials: int = 1, extra: str = ""
) -> Path:
    """A fundus sweep small enough for a 2-core CI machine; `extra` adds top-level YAML."""
    path = folder / "sweep.yaml"
    path.write_text(
        f"""
name: faults
task: fundus
seed: 0
data: {{manifest: {csv}, image_size: 32, val_fraction: 0.25}}
model: {{backbone: resnet10t}}
train: {{epochs: {epochs}, batch_size: 16, scheduler: none}}
store: {{root: {folder / "store"}}}
sweep:
  num_samples: {trials}
  max_concurrent: 2
  sampler: random
  space:
    train.lr: {{type: loguniform, low: 1.0e-4, high: 3.0e-3}}
{extra}
"""
    )
    return path

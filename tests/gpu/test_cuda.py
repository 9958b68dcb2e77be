"""The CUDA paths on a real GPU: every task family trains a run under bf16 autocast in an NCCL
process group, fp16 trains with its grad scaler, and fractional GPUs pack two runs onto one card
at the same time. CI has no GPU, so these skip there; `make test-gpu` runs them on a GPU machine.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

import orchestrator
from orchestrator.results import ResultsStore

pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA GPU (`make test-gpu` on a GPU machine)"
    ),
]


def _on_the_gpu(runs: pd.DataFrame) -> None:
    """Every run completed, its workers trained on the CUDA device, every metric is finite."""
    assert set(runs["status"]) == {"completed"}, runs[["status", "error"]]
    name = torch.cuda.get_device_name(0)
    for cell in runs["nodes"]:
        assert [(n["device"], n["gpu"]) for n in json.loads(cell)] == [("cuda:0", name)]


def _finite(store: ResultsStore, sweep: str) -> None:
    values = store.metrics(sweep)["value"]
    assert len(values) and all(math.isfinite(v) for v in values)


def test_fractional_gpus_pack_a_bf16_and_an_fp16_run(
    tmp_path: Path, fundus_csv: Path, ray_session: None
) -> None:
    config = tmp_path / "pack.yaml"
    config.write_text(
        f"""
name: pack
task: fundus
data: {{manifest: {fundus_csv}, image_size: 64, val_fraction: 0.25}}
model: {{backbone: resnet10t}}
train: {{epochs: 3, batch_size: 16}}
resources: {{workers: 1, cpus_per_worker: 1, gpus_per_worker: 0.5}}
store: {{root: {tmp_path / "store"}}}
sweep:
  sampler: grid
  max_concurrent: 2
  variants: {{bf16: {{train.amp: bf16}}, fp16: {{train.amp: fp16}}}}
"""
    )
    out = orchestrator.sweep(config, name="pack")
    assert (out.trials, out.errors) == (2, 0)
    store = ResultsStore(tmp_path / "store")
    runs = store.runs("pack")
    _on_the_gpu(runs)
    _finite(store, "pack")
    assert sorted(json.loads(c)["train"]["amp"] for c in runs["config"]) == ["bf16", "fp16"]
    # both runs held their half of the card at the same time
    first, second = runs.sort_values("start_time").itertuples()
    assert second.start_time < first.end_time


FAMILIES = {
    "simsiam": "data: {{images: {images}, image_size: 64}}\n"
    "model: {{backbone: resnet18, proj_dim: 64, pred_dim: 16}}\n",
    "detection": "data: {{train: {liver}, val: {val}, image_size: 64}}\n"
    "model: {{backbone: resnet18}}\neval: {{topk: 20}}\n",
    "abn": "data: {{manifest: {ct}, image_size: 32}}\nmodel: {{backbone: resnet10t}}\n"
    "eval: {{attention_samples: 2}}\n",
    "glow": "data: {{manifest: {cxr}, image_size: 16}}\nmodel: {{levels: 2, depth: 2, width: 8}}\n",
    "petct": "data: {{manifest: {petct}}}\nmodel: {{levels: 2, width: 4}}\neval: {{overlays: 2}}\n",
}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tasks.abn.synth import generate as generate_ct
    from tasks.anomaly.synth import generate_cxr, generate_petct
    from tasks.detection.synth import generate as generate_liver

    root = tmp_path_factory.mktemp("gpu-data")
    liver = generate_liver(root / "liver", n=24, size=64, seed=3)
    return {
        "liver": liver,
        "val": liver.parent / "val.json",
        "images": liver.parent.parent / "images",
        "ct": generate_ct(root / "ct", n=24, size=32, seed=5, slices_per_patient=4),
        "cxr": generate_cxr(root / "cxr", n=40, size=32, seed=1),
        "petct": generate_petct(root / "petct", n=24, size=32, seed=1),
    }


@pytest.mark.parametrize("task", sorted(FAMILIES))
def test_every_family_trains_in_bf16_on_the_gpu(
    task: str, tmp_path: Path, datasets: dict[str, Path], ray_session: None
) -> None:
    config = tmp_path / f"{task}.yaml"
    config.write_text(
        f"name: {task}-gpu\ntask: {task}\n"
        + FAMILIES[task].format(**datasets)
        + "train: {epochs: 2, batch_size: 8, amp: bf16}\n"
        + "resources: {workers: 1, cpus_per_worker: 1, gpus_per_worker: 1}\n"
        + f"store: {{root: {tmp_path / 'store'}}}\n"
    )
    out = orchestrator.run(config, name=task)
    assert out.errors == 0
    store = ResultsStore(tmp_path / "store")
    _on_the_gpu(store.runs(task))
    _finite(store, task)

"""GPU training throughput: images/s of resnet18, efficientnet_b0 and resnest50d at 224 and
512 px with bf16 autocast and channels_last, inside one Ray Train worker against a plain PyTorch
loop (target >= 0.98), and 4 small trials packed on one GPU (0.25 GPU each) against one trial.

Only runs where `torch.cuda.is_available()`; elsewhere it is skipped and earlier GPU figures are
kept. Synthetic batches live on the GPU (the data pipeline is bench_loader's); each measurement
warms up (cuDNN autotuning, allocator) before its timed steps. The plain loop runs in its own
process, so both sides start from a fresh CUDA context.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Skipped, local_ray, row

RAY = True  # quick mode runs on the Ray this process joined (tests: the shared one)

MODELS = ("resnet18", "efficientnet_b0", "resnest50d")
SIZES = {224: 64, 512: 16}  # image size -> batch size
WARMUP, STEPS = 10, 30
TARGET = 0.98
ROOT = Path(__file__).resolve().parent.parent


def train_rate(model_name: str, size: int, batch: int, warmup: int, steps: int) -> list[float]:
    """Images/s of `steps` bf16 + channels_last training steps (after `warmup`), in blocks."""
    import timm
    import torch

    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda", torch.cuda.current_device())
    model = timm.create_model(model_name, pretrained=False, num_classes=2)
    model = model.to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,), device=device)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    rates, block = [], max(1, steps // 5)
    for _ in range(steps // block):
        start = time.perf_counter()
        for _ in range(block):
            step()
        torch.cuda.synchronize()
        rates.append(block * batch / (time.perf_counter() - start))
    return rates


def _plain(model_name: str, size: int, batch: int, warmup: int, steps: int) -> list[float]:
    cmd = [sys.executable, "-m", "benchmarks.bench_gpu", model_name, str(size), str(batch)]
    cmd += [str(warmup), str(steps)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    rates: list[float] = json.loads(done.stdout.strip().splitlines()[-1])
    return rates


def _in_ray_train(
    model_name: str, size: int, batch: int, warmup: int, steps: int, gpus: float = 1.0
) -> list[float]:
    """The same loop as the only worker of a Ray Train run (as a medsweep trial's run)."""
    import ray.train
    from ray import cloudpickle
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers lack `benchmarks`

    def loop(config: dict[str, Any]) -> None:
        rates = train_rate(model_name, size, batch, warmup, steps)
        ray.train.report({"rates": rates})

    trainer = TorchTrainer(
        loop,
        scaling_config=ScalingConfig(
            num_workers=1, use_gpu=True, resources_per_worker={"GPU": gpus, "CPU": 1}
        ),
        run_config=RunConfig(storage_path="/tmp/medsweep-bench-gpu", name=f"{model_name}-{size}"),
    )
    result = trainer.fit()
    return list(result.metrics["rates"])  # type: ignore[index]


def _packing(warmup: int, steps: int) -> dict[str, Any]:
    """Aggregate images/s of 4 concurrent 0.25-GPU runs against one 1-GPU run (resnet18, 224)."""
    alone = _in_ray_train("resnet18", 224, 32, warmup, steps)
    results: list[list[float]] = []

    def one() -> None:
        results.append(_in_ray_train("resnet18", 224, 32, warmup, steps, gpus=0.25))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    per_block = [sum(rs) for rs in zip(*results, strict=False)] if len(results) == 4 else []
    return {"alone": alone, "packed": per_block}


def _device() -> str:
    import torch

    props = torch.cuda.get_device_properties(0)
    return (
        f"{props.name}, {props.total_memory / 2**30:.0f} GiB; CUDA {torch.version.cuda}, "
        f"cuDNN {torch.backends.cudnn.version()}, torch {torch.__version__}"
    )


def run(quick: bool = False, steps: int = STEPS) -> list[dict[str, Any]]:
    """Inside vs outside Ray Train per model and size, and packing; `quick`: resnet18 at 224."""
    import torch

    if not torch.cuda.is_available():
        raise Skipped("no CUDA device on this machine")
    models, sizes = (("resnet18",), {224: 32}) if quick else (MODELS, SIZES)
    warmup, steps = (2, 5) if quick else (WARMUP, steps)
    device = _device()
    rows = []
    with local_ray():
        for model_name in models:
            for size, batch in sizes.items():
                plain = _plain(model_name, size, batch, warmup, steps)
                inside = _in_ray_train(model_name, size, batch, warmup, steps)
                rows.append(
                    row(
                        f"{model_name} {size} px: Ray Train worker over plain PyTorch",
                        [i / p for i, p in zip(inside, plain, strict=False)],
                        size=f"batch {batch}, bf16 autocast, channels_last",
                        unit="×",
                        target=TARGET,
                        better="higher",
                        reference=[1.0],
                        reference_name=f"plain loop {sorted(plain)[len(plain) // 2]:,.0f} img/s",
                        note=f"inside {sorted(inside)[len(inside) // 2]:,.0f} img/s; {device}",
                        why="a Ray Train worker runs the same loop: a gap means CPU contention "
                        "from Ray's processes or a different cuDNN algorithm choice",
                    )
                )
        packing = _packing(warmup, steps)
    if packing["packed"]:
        alone = sorted(packing["alone"])[len(packing["alone"]) // 2]
        rows.append(
            row(
                "4 trials at 0.25 GPU each: aggregate over one trial alone",
                [p / alone for p in packing["packed"]],
                size="resnet18 224 px, batch 32, bf16, channels_last",
                unit="×",
                reference=[1.0],
                reference_name=f"one trial {alone:,.0f} img/s",
                note=f"fractional packing (resources.gpus_per_worker: 0.25); {device}",
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    """``MODEL SIZE BATCH WARMUP STEPS``: the plain loop in this process; prints its rates."""
    args = (argv if argv is not None else sys.argv[1:])[:5]
    name, size, batch, warmup, steps = args[0], *map(int, args[1:])
    print(json.dumps(train_rate(name, size, batch, warmup, steps)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""GPU training throughput: images/s of resnet18, efficientnet_b0 and resnest50d at 224 and
512 px with bf16 autocast and channels_last, inside one Ray Train worker against a plain PyTorch
loop (target >= 0.98), and 4 small trials packed on one GPU (0.25 GPU each) against one trial.

Only runs where `torch.cuda.is_available()`; elsewhere it is skipped and earlier GPU figures are
kept. Synthetic batches live on the GPU (the data pipeline is bench_loader's); each measurement
warms up (cuDNN autotuning, allocator) before its timed steps. The plain loop runs in its own
process, so both sides start from a fresh CUDA context. The Ray Train side is medsweep's own
trainer and backend (`SweepTorchTrainer`, `OneNodeTorchConfig`: NCCL), as a trial's run uses them;
packed runs wait for each other after warming up, so their timed blocks overlap.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import Skipped, local_ray, row

RAY = True  # quick mode runs on the Ray this process joined (tests: the shared one)

MODELS = ("resnet18", "efficientnet_b0", "resnest50d")
SIZES = {224: 64, 512: 16}  # image size -> batch size
WARMUP, STEPS = 10, 30
TARGET = 0.98
ROOT = Path(__file__).resolve().parent.parent


def train_rate(
    model_name: str, size: int, batch: int, warmup: int, steps: int, barrier: str = ""
) -> list[float]:
    """Images/s of `steps` bf16 + channels_last training steps (after `warmup`), in blocks;
    `barrier` ("DIR:N"): wait after warming up until N runs have (packed runs time together)."""
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
    if barrier:
        _wait_for_all(barrier)
    rates, block = [], max(1, steps // 5)
    for _ in range(steps // block):
        start = time.perf_counter()
        for _ in range(block):
            step()
        torch.cuda.synchronize()
        rates.append(block * batch / (time.perf_counter() - start))
    return rates


def _wait_for_all(barrier: str, timeout: float = 300.0) -> None:
    """A file barrier for runs on one machine: each leaves a file, then waits for N of them."""
    folder, n = barrier.rsplit(":", 1)
    Path(folder, uuid.uuid4().hex).touch()
    deadline = time.monotonic() + timeout
    while len(list(Path(folder).iterdir())) < int(n):
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(list(Path(folder).iterdir()))} of {n} runs arrived")
        time.sleep(0.01)


Combo = tuple[str, int, int]  # model, image size, batch


def rates_of(
    combos: list[Combo], warmup: int, steps: int, barrier: str = ""
) -> dict[str, list[float]]:
    """`train_rate` of each combination in turn, in this process (one CUDA context, as a trial's
    worker), keyed "MODEL SIZE"; progress goes to stderr (a run cut short shows how far it got)."""
    import torch

    out, start = {}, time.perf_counter()
    for model_name, size, batch in combos:
        rates = train_rate(model_name, size, batch, warmup, steps, barrier)
        out[f"{model_name} {size}"] = rates
        torch.cuda.empty_cache()
        mid = statistics.median(rates)
        took = time.perf_counter() - start
        print(f"  {model_name} {size} px: {mid:,.0f} img/s (+{took:.0f} s)", file=sys.stderr)
    return out


def _plain(combos: list[Combo], warmup: int, steps: int) -> dict[str, list[float]]:
    """The loop in a plain Python process of its own."""
    spec = json.dumps({"combos": combos, "warmup": warmup, "steps": steps})
    cmd = [sys.executable, "-m", "benchmarks.bench_gpu", spec]
    done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True)
    rates: dict[str, list[float]] = json.loads(done.stdout.strip().splitlines()[-1])
    return rates


def _in_ray_train(
    combos: list[Combo], warmup: int, steps: int, gpus: float = 1.0, barrier: str = ""
) -> dict[str, list[float]]:
    """The same loop as the only worker of a Ray Train run, through medsweep's trainer and NCCL
    backend (as a trial's run)."""
    from ray import cloudpickle
    from ray.train import RunConfig, ScalingConfig

    from orchestrator.trainer import OneNodeTorchConfig, SweepTorchTrainer

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers lack `benchmarks`
    name = f"gpu-{uuid.uuid4().hex[:8]}"
    # Train V2 keeps only metrics reported with a checkpoint: the rates come back in a file
    # (worker and driver share this machine).
    rates_file = Path(tempfile.gettempdir(), f"medsweep-bench-{name}.json")

    def loop(config: dict[str, Any]) -> None:
        rates_file.write_text(json.dumps(rates_of(combos, warmup, steps, barrier)))

    trainer = SweepTorchTrainer(
        loop,
        backend_config=OneNodeTorchConfig(backend="nccl"),
        scaling_config=ScalingConfig(
            num_workers=1, use_gpu=True, resources_per_worker={"GPU": gpus, "CPU": 1}
        ),
        run_config=RunConfig(storage_path="/tmp/medsweep-bench-gpu", name=name),
    )
    trainer.fit()
    rates: dict[str, list[float]] = json.loads(rates_file.read_text())
    rates_file.unlink()
    return rates


def _packing(warmup: int, steps: int) -> dict[str, list[float]]:
    """Aggregate images/s of 4 concurrent 0.25-GPU runs against one 1-GPU run (resnet18, 224)."""
    combo: list[Combo] = [("resnet18", 224, 32)]
    alone = _in_ray_train(combo, warmup, steps)["resnet18 224"]
    results: list[list[float]] = []
    with tempfile.TemporaryDirectory() as folder:

        def one() -> None:
            rates = _in_ray_train(combo, warmup, steps, 0.25, f"{folder}:4")
            results.append(rates["resnet18 224"])

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


def _say(what: str, since: float) -> None:
    print(f"{what} (+{time.perf_counter() - since:.0f} s)", file=sys.stderr, flush=True)


def run(quick: bool = False, steps: int = STEPS) -> list[dict[str, Any]]:
    """Inside vs outside Ray Train per model and size, and packing; `quick`: resnet18 at 224.

    One plain process and one Train run measure every model in turn (not a process per model:
    on the H200 machine lent here a fresh Ray Train run cost about 20 s before its first step)."""
    import torch

    if not torch.cuda.is_available():
        raise Skipped(
            'no CUDA device on this machine; on a GPU machine: make bench ARGS="--only gpu"'
        )
    models, sizes = (("resnet18",), {224: 32}) if quick else (MODELS, SIZES)
    warmup, steps = (2, 5) if quick else (WARMUP, steps)
    combos = [(m, size, batch) for m in models for size, batch in sizes.items()]
    device, start = _device(), time.perf_counter()
    with local_ray():
        _say("plain loop ...", start)
        plain = _plain(combos, warmup, steps)
        _say("inside one Ray Train worker ...", start)
        inside = _in_ray_train(combos, warmup, steps)
        _say("packing 4 runs at 0.25 GPU ...", start)
        packing = _packing(warmup, steps)
        _say("done", start)
    rows = [_ratio_row(m, size, batch, plain, inside, device) for m, size, batch in combos]
    if packing["packed"]:
        alone = statistics.median(packing["alone"])
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


def _ratio_row(
    model_name: str,
    size: int,
    batch: int,
    plain: dict[str, list[float]],
    inside: dict[str, list[float]],
    device: str,
) -> dict[str, Any]:
    mine, theirs = inside[f"{model_name} {size}"], plain[f"{model_name} {size}"]
    return row(
        f"{model_name} {size} px: Ray Train worker over plain PyTorch",
        [i / p for i, p in zip(mine, theirs, strict=False)],
        size=f"batch {batch}, bf16 autocast, channels_last",
        unit="×",
        target=TARGET,
        better="higher",
        reference=[1.0],
        reference_name=f"plain loop {statistics.median(theirs):,.0f} img/s",
        note=f"inside {statistics.median(mine):,.0f} img/s; {device}",
        why="a Ray Train worker runs the same loop: a gap means CPU contention from Ray's "
        "processes or a different cuDNN algorithm choice",
    )


def main(argv: list[str] | None = None) -> int:
    """``'{"combos": [[MODEL, SIZE, BATCH], ...], "warmup": W, "steps": S}'``: the plain loop in
    this process; prints its rates per combination as one JSON line."""
    spec = json.loads((argv if argv is not None else sys.argv[1:])[0])
    combos = [(str(m), int(size), int(batch)) for m, size, batch in spec["combos"]]
    print(json.dumps(rates_of(combos, int(spec["warmup"]), int(spec["steps"]))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Driver memory: peak RSS of the sweep driver over 1,000 trivial trials, and its growth per
trial, with medsweep's driver-side pieces (Optuna study search, results-store callback, metric
guard) against plain Ray Tune driving the same trials (no searcher, no callbacks).

Each driver runs in its own process (its peak RSS is its own) with its own local Ray; the trial
is a function trainable that reports one finished epoch, so the driver is all that is measured.
RSS is sampled as every trial completes; growth per trial is the slope of RSS over completed
trials in the second half of the sweep (after imports, caches and pools have warmed up).

RSS also counts what the allocator keeps (Tune's own driver holds about 1.7x its Python heap),
so one more medsweep driver runs under tracemalloc: its Python heap's growth over the last two
thirds of a shorter sweep (the first third warms up), by whose records grew; the two thirds are
also given apart (state kept per trial grows in both, a one-time cost in one). Each allocation
goes to the innermost of Ray Tune (its trial objects), Optuna (the study's trials, which TPE
samples from), fastparquet (inside a results-store write) or medsweep on its stack; what medsweep
itself keeps per trial is the figure with a target.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import local_ray, row

RAY = True  # quick mode runs on the Ray this process joined (tests: the shared one)

TRIALS, CONCURRENCY = 1000, 2
TRACED_TRIALS = 300  # the tracemalloc run (several times slower per trial)
TARGET_KIB = 1.0  # Python heap medsweep's own code keeps per finished trial
# fastparquet: what the Parquet writer keeps across writes, not records of medsweep's (its
# thrift and pandas objects level off: about 60 KiB after 200, 600 or 1,800 runs rows written).
OWNERS = (
    ("ray/tune", "/ray/"),
    ("optuna", "/optuna/"),
    ("fastparquet", "/fastparquet/"),
    ("medsweep", "/orchestrator/"),
)
ROOT = Path(__file__).resolve().parent.parent


def _rss_kib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1])
    return float("nan")


def _sampler(total: int, trace: bool) -> Any:
    """RSS at every completed trial; with `trace`, heap snapshots at a third and two thirds of
    the trials (the driver takes the last once the sweep is over)."""
    import gc
    import tracemalloc

    from ray.tune import Callback

    class RssSampler(Callback):
        def __init__(self) -> None:
            self.samples: list[float] = []
            self.snapshots: list[Any] = []

        def on_trial_complete(
            self, iteration: int, trials: list[Any], trial: Any, **info: Any
        ) -> None:
            self.samples.append(_rss_kib())
            if trace and len(self.samples) in (total // 3, 2 * total // 3):
                self.snapshot()

        def snapshot(self) -> None:
            gc.collect()
            self.snapshots.append(tracemalloc.take_snapshot())

    return RssSampler()


def owner(frames: list[str]) -> str:
    """Who an allocation belongs to: the innermost of Ray, Optuna or medsweep on its stack
    (`frames`: file names, innermost first); "other" when none is."""
    for filename in frames:
        for name, marker in OWNERS:
            if marker in filename:
                return name
    return "other"


def _heap_growth(snapshots: list[Any], trials: int) -> dict[str, dict[str, float]]:
    """Bytes per trial the Python heap grew, by owner: from the first snapshot to the last
    ("span") and within each third ("second", "third")."""
    marks = [trials // 3, 2 * trials // 3, trials]
    pairs = {"span": (0, 2), "second": (0, 1), "third": (1, 2)}
    out: dict[str, dict[str, float]] = {}
    for name, (a, b) in pairs.items():
        growth: dict[str, float] = {}
        per = max(1, marks[b] - marks[a])
        for stat in snapshots[b].compare_to(snapshots[a], "traceback"):
            who = owner([f.filename for f in reversed(stat.traceback)])
            growth[who] = growth.get(who, 0.0) + stat.size_diff / per
        out[name] = growth
    return out


def _medsweep_pieces(root: Path, trials: int, conc: int) -> tuple[Any, list[Any], Any]:
    """Searcher, callbacks and stopper exactly as the engine builds them for a toy sweep."""
    from orchestrator.config import from_dict
    from orchestrator.engine import _searcher, _sweep_info
    from orchestrator.results import ResultsStore
    from orchestrator.tune_callbacks import MetricGuard, ResultsCallback

    raw = {
        "name": "memory",
        "task": "toy",
        "store": {"root": str(root)},
        "sweep": {
            "num_samples": trials,
            "max_concurrent": conc,
            "sampler": "tpe",
            "space": {"model.x": {"type": "uniform", "low": -2, "high": 4}},
        },
    }
    config = from_dict(raw, source="<bench_driver_memory>")
    store = ResultsStore(root)
    info = _sweep_info(config, "sweep", "memory", store.sweep_dir("memory").resolve(), None)
    store.init_sweep("memory", info.to_json())
    guard = MetricGuard(info.metric)
    return _searcher(config, info), [ResultsCallback(info, guard)], guard


def drive(kind: str, trials: int, conc: int, trace: bool = False) -> dict[str, Any]:
    """Run `trials` trivial trials with the `kind` driver ("medsweep" or "plain"); with
    `trace`, under tracemalloc (its heap growth by owner)."""
    import tracemalloc

    from ray import tune

    def trivial(config: dict[str, Any]) -> None:
        from ray import tune as t

        value = float(sum(v * v for v in config.values() if isinstance(v, float)))
        t.report({"val_loss": value, "objective": value, "epoch": 1, "step": 1,
                  "best_epoch": 1, "finished": 1})  # fmt: skip

    sampler = _sampler(trials, trace)
    if trace:
        tracemalloc.start(25)
    with tempfile.TemporaryDirectory() as tmp, local_ray(num_cpus=conc):
        if kind == "medsweep":
            searcher, callbacks, stop = _medsweep_pieces(Path(tmp) / "store", trials, conc)
            space: dict[str, Any] = {}
        else:
            searcher, callbacks, stop = None, [], None
            space = {"model.x": tune.uniform(-2, 4)}
        tuner = tune.Tuner(
            tune.with_resources(trivial, tune.PlacementGroupFactory([{"memory": 1}])),
            param_space=space,
            tune_config=tune.TuneConfig(
                metric="objective",
                mode="min",
                search_alg=searcher,
                num_samples=trials,
                max_concurrent_trials=conc,
            ),
            run_config=tune.RunConfig(
                name="tune",
                storage_path=tmp,
                callbacks=[*callbacks, sampler],
                stop=stop,
                verbose=0,
            ),
        )
        tuner.fit()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    out: dict[str, Any] = {"samples": sampler.samples, "peak_kib": float(peak)}
    if trace:
        sampler.snapshot()
        tracemalloc.stop()
        if len(sampler.snapshots) != 3:
            raise RuntimeError(f"only {len(sampler.samples)} of {trials} trials completed")
        out["heap"] = _heap_growth(sampler.snapshots, trials)
    return out


def _measure(
    kind: str, trials: int, conc: int, isolated: bool, trace: bool = False
) -> dict[str, Any]:
    if not isolated:
        return drive(kind, trials, conc, trace)
    cmd = [sys.executable, "-m", "benchmarks.bench_driver_memory", "--worker", kind, str(trials)]
    cmd += ["--trace"] if trace else []
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def growth_kib(samples: list[float]) -> float:
    """Slope of RSS (KiB) over completed trials, in the second half of the run."""
    half = samples[len(samples) // 2 :]
    if len(half) < 2:
        return float("nan")
    return float(np.polyfit(np.arange(len(half)), np.asarray(half), 1)[0])


def run(
    quick: bool = False,
    trials: int = TRIALS,
    concurrency: int = CONCURRENCY,
    traced_trials: int = TRACED_TRIALS,
) -> list[dict]:
    """Peak RSS and growth per trial of both drivers, and the traced heap growth of medsweep's;
    `quick`: 6 trials in this process."""
    if quick:
        trials = traced_trials = 6
    ours = _measure("medsweep", trials, concurrency, isolated=not quick)
    plain = _measure("plain", trials, concurrency, isolated=not quick)
    traced = _measure("medsweep", traced_trials, concurrency, isolated=not quick, trace=True)
    return _rss_rows(ours, plain, trials, concurrency) + _heap_rows(
        traced["heap"], traced_trials, concurrency
    )


def _rss_rows(
    ours: dict[str, Any], plain: dict[str, Any], trials: int, concurrency: int
) -> list[dict]:
    size = f"{trials:,} trivial trials, concurrency {concurrency}"
    mine, base = growth_kib(ours["samples"]), growth_kib(plain["samples"])
    return [
        row(
            "driver peak RSS, medsweep driver",
            [ours["peak_kib"] / 1024],
            size=size,
            unit="MiB",
            reference=[plain["peak_kib"] / 1024],
            reference_name="plain Tune driver",
            note="ru_maxrss of the driver process (Ray's own processes not included)",
        ),
        row(
            "driver RSS growth per trial beyond plain Tune's",
            [mine - base],
            size=size,
            unit="KiB",
            note=f"medsweep {mine:.1f} KiB/trial, plain Tune {base:.1f} KiB/trial (Tune keeps "
            "every trial object); RSS also counts what the allocator keeps: the traced heap "
            "below says whose records grow",
        ),
    ]


def _heap_rows(heap: dict[str, dict[str, float]], trials: int, concurrency: int) -> list[dict]:
    size = f"{trials:,} trivial trials, concurrency {concurrency}, last two thirds traced"
    kib = {k: v / 1024 for k, v in heap["span"].items()}
    parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(kib.items(), key=lambda kv: -kv[1]))
    second, third = (heap[t].get("medsweep", 0.0) / 1024 for t in ("second", "third"))
    return [
        row(
            "driver heap growth per trial, medsweep's own records",
            [kib.get("medsweep", 0.0)],
            size=size,
            unit="KiB",
            target=TARGET_KIB,
            note=f"tracemalloc, KiB per trial by owner: {parts}; medsweep's in the second "
            f"third {second:.2f}, in the last {third:.2f}; Tune's are its trial objects, "
            "Optuna's the study's trials (what TPE samples from), fastparquet's what its writer "
            "keeps across writes (it levels off)",
            why="a figure steady across both thirds is state kept per trial: diffing the "
            "snapshots by traceback (tracemalloc's compare_to) names whose records grow",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    """``--worker KIND N``: drive N trials, print the samples as JSON (run by `run`)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_driver_memory")
    p.add_argument("--worker", nargs=2, metavar=("KIND", "TRIALS"), required=True)
    p.add_argument("--trace", action="store_true", help="under tracemalloc: heap growth by owner")
    a = p.parse_args(argv)
    print(json.dumps(drive(a.worker[0], int(a.worker[1]), CONCURRENCY, a.trace)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

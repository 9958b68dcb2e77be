"""Run the benchmarks and merge their figures into benchmarks/results.json and BENCHMARKS.md.

Usage::

    python -m benchmarks.run                       every benchmark, full size (`make bench`)
    python -m benchmarks.run --only store eval     some (names with or without `bench_`)
    python -m benchmarks.run --skip sweep          all but some
    python -m benchmarks.run --quick               tiny sizes, a smoke test; writes nothing
    python -m benchmarks.run --only sweep --set sweep.trials=4 --set sweep.epoch_s=2.5

Each benchmark runs in its own process (its memory, imports and Ray are its own), pinned to one
core when the module says ``CORES = 1`` (figures whose targets assume one core), else on every
usable core. A run replaces the entries of the benchmarks it ran and keeps the others, so
BENCHMARKS.md always shows the latest figures of every benchmark, each section with the machine,
the versions and the date of its own run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import inspect
import json
import os
import pkgutil
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.common import Skipped, meets

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results.json"
PACKAGES = (
    "ray",
    "torch",
    "optuna",
    "numpy",
    "pandas",
    "pyarrow",
    "fastparquet",
    "pycocotools",
    "faster-coco-eval",
)


class BenchError(Exception):
    """Bad arguments for the runner (exit 2)."""


# ----------------------------------------------------------------- discovery and parameters


def discover() -> list[str]:
    """Module names of the benchmarks (`benchmarks/bench_*.py`), sorted."""
    names = (m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]))
    return sorted(f"benchmarks.{n}" for n in names if n.startswith("bench_"))


def short(module: str) -> str:
    """`benchmarks.bench_store` -> `store`."""
    return module.rsplit(".", 1)[-1].removeprefix("bench_")


def select(only: list[str] | None, skip: list[str] | None) -> list[str]:
    modules = discover()
    known = {short(m): m for m in modules}

    def resolve(names: list[str]) -> list[str]:
        out = []
        for name in names:
            key = short(name)
            if key not in known:
                raise BenchError(f"no benchmark {name!r}; known: {', '.join(sorted(known))}")
            out.append(known[key])
        return out

    chosen = resolve(only) if only else modules
    dropped = set(resolve(skip or []))
    return [m for m in chosen if m not in dropped]


def parse_sets(items: list[str] | None, modules: list[str]) -> dict[str, dict[str, Any]]:
    """`["sweep.trials=4"]` -> `{"benchmarks.bench_sweep": {"trials": 4}}` (values as JSON,
    else text); a bare `trials=4` applies when one benchmark is selected."""
    out: dict[str, dict[str, Any]] = {m: {} for m in modules}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep:
            raise BenchError(f"--set expects NAME.KEY=VALUE, got {item!r}")
        name, dot, param = key.rpartition(".")
        if not dot:
            if len(modules) != 1:
                raise BenchError(f"--set {item!r}: say which benchmark, e.g. sweep.{key}=...")
            name, param = modules[0], key
        target = next((m for m in modules if short(m) == short(name)), None)
        if target is None:
            raise BenchError(f"--set {item!r}: benchmark {name!r} is not selected")
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = text
        out[target][param] = value
    return out


def _call_args(module: Any, quick: bool, params: dict[str, Any]) -> dict[str, Any]:
    accepted = inspect.signature(module.run).parameters
    bad = sorted(set(params) - set(accepted))
    if bad:
        names = ", ".join(p for p in accepted if p != "quick") or "none"
        raise BenchError(f"{module.__name__} has no parameter {bad[0]!r} (it takes: {names})")
    kwargs = dict(params)
    if quick:
        if "quick" not in accepted:
            raise BenchError(f"{module.__name__} has no quick mode (add run(quick: bool = False))")
        kwargs["quick"] = True
    return kwargs


def has_quick(module_name: str) -> bool:
    module = importlib.import_module(module_name)
    return "quick" in inspect.signature(module.run).parameters


# ----------------------------------------------------------------- environment


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float:
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return pages / 2**30
    except (ValueError, OSError, AttributeError):
        return float("nan")


def machine() -> str:
    """Cores (all and usable: affinity/taskset), CPU model, memory."""
    nproc = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else nproc
    return f"{nproc} cores ({usable} usable), {_cpu_model()}, {_memory_gib():.0f} GiB"


def versions() -> str:
    found = [f"Python {platform.python_version()}"]
    for name in PACKAGES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


# ----------------------------------------------------------------- running


def _title(module: Any) -> str:
    doc = (module.__doc__ or "").strip()
    return doc.split("\n\n")[0].replace("\n", " ") if doc else module.__name__


def normalise(row: dict[str, Any]) -> dict[str, Any]:
    """Rows of older benchmarks (``seconds``, ``target_s``, ``reference_s``) in the current form."""
    out = dict(row)
    if "value" not in out:
        out["value"] = out.pop("seconds")
        out.setdefault("unit", "s")
    if "target_s" in out:
        out.setdefault("target", out.pop("target_s"))
    if "reference_s" in out:
        out.setdefault("reference_value", out.pop("reference_s"))
    out.setdefault("unit", "s")
    out.setdefault("better", "lower")
    out.setdefault("target", None)
    out["range"] = list(out["range"]) if out.get("range") else None
    return out


def collect(module_name: str, quick: bool = False, params: dict[str, Any] | None = None) -> dict:
    """Run one benchmark in this process; its entry for results.json (``error`` on failure)."""
    module = importlib.import_module(module_name)
    kwargs = _call_args(module, quick, params or {})
    entry: dict[str, Any] = {
        "title": _title(module),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "versions": versions(),
        "mode": "quick" if quick else ("reduced" if params else "full"),
        "params": params or {},
        "rows": [],
        "error": None,
    }
    start = time.perf_counter()
    try:
        entry["rows"] = [normalise(r) for r in module.run(**kwargs)]
    except Skipped as why:
        entry["skipped"] = str(why)
    except Exception:
        entry["error"] = traceback.format_exc(limit=8)
    entry["elapsed_s"] = time.perf_counter() - start
    return entry


def _pin(module_name: str) -> set[int] | None:
    """The cores a benchmark runs on: one (``CORES = 1``) or every usable one."""
    cores = getattr(importlib.import_module(module_name), "CORES", None)
    if not cores or not hasattr(os, "sched_getaffinity"):
        return None
    usable = sorted(os.sched_getaffinity(0))
    return set(usable[: int(cores)])


def run_isolated(module_name: str, quick: bool, params: dict[str, Any]) -> dict[str, Any]:
    """`collect` in a fresh Python process, pinned as the module asks."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "entry.json"
        cmd = [sys.executable, "-m", "benchmarks.run", "--child", module_name, str(out)]
        cmd += ["--child-params", json.dumps(params)] + (["--quick"] if quick else [])
        cores = _pin(module_name)
        done = subprocess.run(
            cmd, cwd=ROOT, preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None
        )
        if out.is_file():
            entry: dict[str, Any] = json.loads(out.read_text())
            return entry
        return {"title": module_name, "rows": [], "error": f"exited with {done.returncode}"}


# ----------------------------------------------------------------- results.json and BENCHMARKS.md


def load_results(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"benchmarks": {}}
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) and "benchmarks" in data else {"benchmarks": {}}


def merge(
    old: dict[str, Any], new: dict[str, dict[str, Any]], known: list[str] | None = None
) -> dict[str, Any]:
    """New entries replace those of the same benchmark; a failed or skipped run keeps the last
    good figures (a CPU machine does not erase the GPU figures); benchmarks that no longer exist
    (`known`: the current modules) are dropped."""
    merged = dict(old.get("benchmarks", {}))
    for name, entry in new.items():
        kept = merged.get(name)
        if kept and kept.get("rows") and (entry.get("error") or entry.get("skipped")):
            merged[name] = {**kept, "last_error": entry.get("error") or entry["skipped"]}
        else:
            merged[name] = entry
    if known is not None:
        merged = {k: v for k, v in merged.items() if k in known}
    return {"benchmarks": dict(sorted(merged.items()))}


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s" and value < 1:
        return f"{value * 1000:.3g} ms"
    if unit == "×":
        return f"{value:.3g}×"
    text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return f"{text} {unit}".strip()


def _spread(value: float, lo_hi: list[float] | None, unit: str, n: int | None = None) -> str:
    text = fmt_value(value, unit)
    if lo_hi and lo_hi[0] != lo_hi[1]:
        text += f" [{fmt_value(lo_hi[0], unit)} – {fmt_value(lo_hi[1], unit)}]"
    return text + (f", n={n}" if n else "")


def _versus_target(r: dict[str, Any]) -> str:
    target = r.get("target")
    if target is None:
        return "-"
    ratio = r["value"] / target if target else float("inf")
    return f"{ratio:.2f} ({'met' if meets(r) else '**missed**'})"


def _reference(r: dict[str, Any]) -> tuple[str, str]:
    ref = r.get("reference_value")
    if ref is None:
        return (r.get("reference") or "-"), "-"
    text = f"{r.get('reference', '')}: {_spread(ref, r.get('reference_range'), r['unit'])}"
    return text.strip(": "), (f"{r['value'] / ref:.2f}" if ref else "-")


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(results: dict[str, Any]) -> str:
    head = [
        "# Benchmarks",
        "",
        'Written by `python -m benchmarks.run` (`make bench`; options: `make bench ARGS="--only '
        'store"`) from `benchmarks/results.json`; do not edit by hand. Every figure is the '
        "median over its repeats, with [min – max] and the number of repeats n. *vs target* is "
        "median ÷ target (for throughputs, where higher is better, met means ≥ 1); *vs "
        "reference* is median ÷ the reference's median (the same quantity measured another "
        "way in the same run). Each section names the machine, the versions and the date of "
        "its run; sections of benchmarks not run again keep their earlier figures.",
        "",
    ]
    body: list[str] = []
    missed: list[str] = []
    for name, entry in results["benchmarks"].items():
        body += _section(name, entry, missed)
    tail = ["## Missed targets", "", *missed, ""] if missed else []
    return "\n".join([*head, *body, *tail])


def _section(name: str, entry: dict[str, Any], missed: list[str]) -> list[str]:
    mode = entry.get("mode", "full")
    params = entry.get("params") or {}
    how = mode + (f" ({', '.join(f'{k}={v}' for k, v in params.items())})" if params else "")
    lines = [
        f"## {short(name)}: {entry.get('title', '')}",
        "",
        f"Run {entry.get('date', '?')}, {how}, on {entry.get('machine', '?')}; "
        f"{entry.get('versions', '?')}.",
        "",
    ]
    if entry.get("skipped") and not entry.get("rows"):
        return [*lines, f"Not run here: {_cell(entry['skipped'])}.", ""]
    if entry.get("error") and not entry.get("rows"):
        return [*lines, "Failed: " + _cell(entry["error"].strip().splitlines()[-1]), ""]
    lines += [
        "| figure | size | median [range], n | target | vs target | reference | vs reference "
        "| note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in entry.get("rows", []):
        ref, versus_ref = _reference(r)
        target = fmt_value(r.get("target"), r["unit"]) if r.get("target") is not None else "-"
        if r.get("target") is not None and r.get("better") == "higher":
            target = "≥ " + target
        cells = [
            r["name"],
            r.get("size", ""),
            _spread(r["value"], r.get("range"), r["unit"], r.get("n")),
            target,
            _versus_target(r),
            ref,
            versus_ref,
            r.get("note", ""),
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        if meets(r) is False:
            why = r.get("why") or "no explanation recorded"
            missed.append(f"- **{short(name)} / {r['name']}**: {why}")
    if entry.get("last_error"):
        lines += [
            "",
            "The latest attempt did not give figures ("
            + _cell(entry["last_error"].strip().splitlines()[-1])
            + "); the figures above are from the run before it.",
        ]
    return [*lines, ""]


# ----------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks")
    p.add_argument("--skip", nargs="+", metavar="NAME", help="run all but these")
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test); writes nothing")
    p.add_argument("--set", action="append", metavar="NAME.KEY=VALUE", help="a run() parameter")
    p.add_argument("--out", type=Path, help="BENCHMARKS.md to write (default: the repo's)")
    p.add_argument("--json", type=Path, help="results JSON (default: benchmarks/results.json)")
    p.add_argument("--no-write", action="store_true", help="print the figures only")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--child-params", default="{}", help=argparse.SUPPRESS)
    return p


def _print_entry(name: str, entry: dict[str, Any]) -> None:
    for r in entry.get("rows", []):
        status = {True: "met", False: "MISSED", None: ""}[meets(r)]
        spread = _spread(r["value"], r.get("range"), r["unit"], r.get("n"))
        print(f"  {r['name']}: {spread} {status}", file=sys.stderr, flush=True)
    if entry.get("skipped"):
        print(f"  skipped: {entry['skipped']}", file=sys.stderr, flush=True)
    if entry.get("error"):
        print(f"  FAILED:\n{entry['error']}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.child:
        name, out = args.child
        entry = collect(name, args.quick, json.loads(args.child_params))
        Path(out).write_text(json.dumps(entry))
        return 0
    try:
        modules = select(args.only, args.skip)
        if args.quick and not args.only:
            lacking = [m for m in modules if not has_quick(m)]
            for m in lacking:
                print(f"skipping {m}: it has no quick mode", file=sys.stderr)
            modules = [m for m in modules if m not in lacking]
        if args.list:
            print("\n".join(f"{short(m):16} {_title(importlib.import_module(m))}" for m in modules))
            return 0
        params = parse_sets(args.set, modules)
        for m in modules:  # refuse bad parameters before anything long starts
            _call_args(importlib.import_module(m), args.quick, params[m])
    except BenchError as err:
        print(f"benchmarks.run: {err}", file=sys.stderr)
        return 2
    write = not args.no_write and not (args.quick and args.out is None and args.json is None)
    new: dict[str, dict[str, Any]] = {}
    for m in modules:
        print(f"running {m} ...", file=sys.stderr, flush=True)
        new[m] = run_isolated(m, args.quick, params[m])
        _print_entry(m, new[m])
    if write:
        json_path, md_path = args.json or RESULTS, args.out or ROOT / "BENCHMARKS.md"
        results = merge(load_results(json_path), new, discover())
        json_path.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
        md_path.write_text(render(results))
        print(f"wrote {md_path} and {json_path}", file=sys.stderr)
    return 1 if any(e.get("error") for e in new.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())

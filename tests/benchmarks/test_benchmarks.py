"""The benchmark suite cannot rot: every benchmark's quick mode runs and gives well-formed
figures, and the runner selects, merges and renders them (machine, versions, median and range,
ratio to target or reference, why a target was missed)."""

from __future__ import annotations

import importlib
import json
import math
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from benchmarks import run as runner
from benchmarks.common import Skipped, meets, row

MODULES = runner.discover()


def _param(name: str) -> Any:
    module = importlib.import_module(name)
    marks = [pytest.mark.ray] if getattr(module, "RAY", False) else []
    return pytest.param(name, marks=marks, id=runner.short(name))


def _check_rows(rows: list[dict[str, Any]]) -> None:
    assert rows, "a benchmark gave no figures"
    for r in rows:
        assert r["name"] and isinstance(r["value"], float | int) and math.isfinite(r["value"])
        lo, hi = r["range"] if r.get("range") else (r["value"], r["value"])
        assert lo <= r["value"] <= hi
        assert r["better"] in ("lower", "higher") and r["unit"]
        if r.get("reference_value") is not None:
            assert r.get("reference"), f"{r['name']}: a reference needs its name"


@pytest.mark.parametrize("name", [_param(m) for m in MODULES])
def test_quick_mode_runs(name: str, request: pytest.FixtureRequest) -> None:
    if not runner.has_quick(name):
        pytest.skip(f"{name} has no quick mode (run(quick: bool = False))")
    if getattr(importlib.import_module(name), "SWEEPS", False):
        # a minute or more each on 2 cores: the suite's time budget goes to the sweep tests
        pytest.skip(f'{name} runs whole sweeps: checked by `make bench ARGS="--quick"`')
    if getattr(importlib.import_module(name), "RAY", False):
        request.getfixturevalue("ray_session")  # the shared local Ray (2 CPUs)
    entry = runner.collect(name, quick=True)
    assert entry["error"] is None, entry["error"]
    if entry.get("skipped"):
        pytest.skip(f"{name}: {entry['skipped']}")
    _check_rows(entry["rows"])
    assert "usable" in entry["machine"] and "Python" in entry["versions"]
    assert entry["mode"] == "quick"


# ---------------------------------------------------------------- the runner


def test_rows_carry_median_range_and_verdict() -> None:
    r = row("x", [3.0, 1.0, 2.0], target=2.5, reference=[4.0, 6.0], reference_name="old")
    assert (r["value"], r["range"], r["n"]) == (2.0, [1.0, 3.0], 3)
    assert r["reference_value"] == 5.0 and meets(r) is True
    slow = row("y", [3.0], target=2.0, why="because")
    assert meets(slow) is False and slow["why"] == "because"
    assert "why" not in row("z", [1.0], target=2.0, why="stale excuse")
    assert meets(row("t", [0.9], target=0.95, better="higher")) is False
    with pytest.raises(ValueError):
        row("empty", [])


def test_selection_and_parameters() -> None:
    assert runner.select(["store"], None) == ["benchmarks.bench_store"]
    assert "benchmarks.bench_store" not in runner.select(None, ["bench_store"])
    with pytest.raises(runner.BenchError, match="no benchmark 'nope'"):
        runner.select(["nope"], None)
    mods = ["benchmarks.bench_store", "benchmarks.bench_eval"]
    sets = runner.parse_sets(["store.rows=5", "eval.repeat=2"], mods)
    assert sets == {"benchmarks.bench_store": {"rows": 5}, "benchmarks.bench_eval": {"repeat": 2}}
    with pytest.raises(runner.BenchError, match="say which benchmark"):
        runner.parse_sets(["rows=5"], mods)
    with pytest.raises(runner.BenchError, match="has no parameter 'bogus'"):
        runner._call_args(importlib.import_module(mods[0]), False, {"bogus": 1})


def test_older_rows_are_normalised() -> None:
    old = {"name": "a", "size": "", "seconds": 2.0, "target_s": 1.0, "reference_s": 4.0}
    r = runner.normalise({**old, "note": "", "range": (1.5, 3.0)})
    assert (r["value"], r["target"], r["reference_value"], r["unit"]) == (2.0, 1.0, 4.0, "s")
    assert r["range"] == [1.5, 3.0] and meets(r) is False


def _entry(rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    base = {"title": "T", "date": "D", "machine": "M", "versions": "V", "mode": "full"}
    return {**base, "params": {}, "rows": rows, "error": None, **extra}


def test_merge_keeps_what_was_not_run_again() -> None:
    a, b = "benchmarks.bench_a", "benchmarks.bench_b"
    old = {"benchmarks": {a: _entry([row("a", [1.0])]), b: _entry([row("b", [1.0])])}}
    new = runner.merge(old, {a: _entry([row("a", [2.0])])}, [a, b])
    assert new["benchmarks"][a]["rows"][0]["value"] == 2.0
    assert new["benchmarks"][b]["rows"][0]["value"] == 1.0
    failed = runner.merge(new, {b: _entry([], error="Traceback\nBoom")}, [a, b])
    assert failed["benchmarks"][b]["rows"][0]["value"] == 1.0
    assert "Boom" in failed["benchmarks"][b]["last_error"]
    skipped = runner.merge(new, {b: _entry([], skipped="no GPU")}, [a, b])
    assert skipped["benchmarks"][b]["rows"] and skipped["benchmarks"][b]["last_error"] == "no GPU"
    assert list(runner.merge(new, {}, [a])["benchmarks"]) == [a]  # b's module is gone


def test_render_names_machine_versions_spread_ratio_and_why() -> None:
    rows = [
        row("fast", [0.2, 0.3, 0.25], size="big", target=0.5),
        row(
            "slow",
            [12.0, 14.0],
            target=10.0,
            reference=[20.0],
            reference_name="before",
            why="part files cost milliseconds each",
        ),
        row("rate", [0.97], unit="×", target=0.95, better="higher"),
    ]
    text = runner.render({"benchmarks": {"benchmarks.bench_x": _entry(rows, machine="2 cores")}})
    assert "## x: T" in text and "2 cores" in text and "V" in text
    assert "250 ms [200 ms – 300 ms], n=3" in text and "0.50 (met)" in text
    assert "13 s [12 s – 14 s], n=2" in text and "1.30 (**missed**)" in text
    assert "before: 20 s" in text and "| 0.65 |" in text
    assert "≥ 0.95×" in text and "1.02 (met)" in text
    assert "**x / slow**: part files cost milliseconds each" in text
    assert "x / fast" not in text.split("## Missed targets")[1]


@pytest.fixture
def fake_benchmarks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Two tiny benchmark modules, run in this process instead of in subprocesses."""
    names = []
    for short, value in (("one", 1.0), ("two", 2.0)):
        module = types.ModuleType(f"benchmarks.bench_{short}")
        module.__doc__ = f"Benchmark {short}."

        def run(quick: bool = False, scale: float = 1.0, value: float = value) -> list[dict]:
            if quick and scale < 0:
                raise Skipped("negative scale")
            return [row(f"{value}", [value * scale], target=1.5)]

        module.run = run  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, module.__name__, module)
        names.append(module.__name__)
    monkeypatch.setattr(runner, "discover", lambda: names)
    monkeypatch.setattr(runner, "run_isolated", runner.collect)
    return names


def test_main_writes_json_and_markdown_and_merges(
    fake_benchmarks: list[str], tmp_path: Path
) -> None:
    out, js = tmp_path / "B.md", tmp_path / "r.json"
    assert runner.main(["--out", str(out), "--json", str(js)]) == 0
    assert (
        runner.main(["--only", "one", "--set", "scale=3", "--out", str(out), "--json", str(js)])
        == 0
    )
    data = json.loads(js.read_text())["benchmarks"]
    assert data[fake_benchmarks[0]]["rows"][0]["value"] == 3.0  # run again, reduced
    assert data[fake_benchmarks[0]]["mode"] == "reduced" and data[fake_benchmarks[0]]["params"]
    assert data[fake_benchmarks[1]]["rows"][0]["value"] == 2.0  # kept
    text = out.read_text()
    assert "## one: Benchmark one." in text and "reduced (scale=3)" in text
    assert "**two / 2.0**" in text and "**one / 1.0**" in text  # both missed 1.5


def test_quick_writes_nothing_and_bad_arguments_exit_2(
    fake_benchmarks: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "RESULTS", tmp_path / "r.json")
    monkeypatch.setattr(runner, "ROOT", tmp_path)
    assert runner.main(["--quick"]) == 0
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "BENCHMARKS.md").exists()
    assert runner.main(["--only", "nope"]) == 2
    assert runner.main(["--set", "one.bogus=1"]) == 2


def test_packed_gpu_runs_wait_for_each_other(tmp_path: Path) -> None:
    import threading

    from benchmarks.bench_gpu import _wait_for_all

    arrived: list[int] = []
    threads = [
        threading.Thread(target=lambda i=i: (_wait_for_all(f"{tmp_path}:3"), arrived.append(i)))
        for i in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(arrived) == [0, 1, 2]
    with pytest.raises(TimeoutError, match="4 of 5 runs arrived"):
        _wait_for_all(f"{tmp_path}:5", timeout=0.05)


def test_heap_owner_is_the_innermost_known_package() -> None:
    from benchmarks.bench_driver_memory import owner

    store_write = ["/v/pandas/core/nanops.py", "/v/fastparquet/writer.py", "/r/orchestrator/x.py"]
    assert owner(store_write) == "fastparquet"  # the writer's own state, not medsweep's records
    assert owner(["/v/pandas/core/frame.py", "/r/orchestrator/x.py"]) == "medsweep"
    assert owner(["/r/orchestrator/search.py", "/v/ray/tune/search/x.py"]) == "medsweep"
    assert owner(["/v/ray/tune/x.py", "/r/orchestrator/x.py"]) == "ray/tune"
    assert owner(["/v/numpy/x.py"]) == "other"

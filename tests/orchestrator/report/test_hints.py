"""What users read after a command: every next-step command printed after a sweep runs as
printed, error texts fit the caller (Python API or CLI), results render in Jupyter, and the data
tools answer --help, summarise readably and refuse empty results with exit 2."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from rich.console import Console

import orchestrator
from orchestrator import api, cli
from orchestrator.engine import Outcome
from orchestrator.errors import UserError
from orchestrator.results.store import ResultsStore

REPO = Path(__file__).resolve().parents[3]


def _outcome(store: ResultsStore, sweep: str = "synth") -> Outcome:
    path = store.sweep_dir(sweep).resolve()
    return Outcome(sweep, path, "val_auc", "max", trials=12, errors=1)


def _medsweep() -> list[str]:
    script = Path(sys.executable).parent / "medsweep"
    return [str(script)] if script.exists() else [sys.executable, "-m", "orchestrator.cli"]


def _dashboard(argv: list[str]) -> None:
    """Run a printed `medsweep dashboard` hint: it prints a URL that serves, and stops on Ctrl-C."""
    proc = subprocess.Popen([*_medsweep(), *argv], stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # blocks until the server listens (pytest-timeout guards)
        url = next(w for w in line.split() if w.startswith("http://127.0.0.1:"))
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_every_printed_next_step_runs(
    synth: ResultsStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the report hint writes into the current folder
    console = Console(record=True, width=400, color_system=None)
    api.print_summary(_outcome(synth), console)
    text = console.export_text()
    hints = [line.strip() for line in text.splitlines() if line.startswith("  medsweep ")]
    kinds = [shlex.split(h)[1] for h in hints]
    assert kinds == ["results", "results", "results", "report", "dashboard"], text
    assert "RUN_ID" not in text  # a real run id, not a placeholder
    for hint in hints:
        argv = shlex.split(hint)[1:]
        if argv[0] == "dashboard":
            _dashboard(argv)
        else:
            assert cli.main(argv) == 0, hint
    assert (tmp_path / "synth-report.html").exists()


def test_results_best_exits_1_and_shows_causes_when_every_trial_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ResultsStore(tmp_path / "s")
    store.init_sweep("bad-20250101", {"task": "fundus", "command": "sweep", "metric": "val_auc"})
    for run_id, cause in (("x1", "ValueError: nope"), ("x2", "CUDA error: out of memory")):
        store.write_runs("bad-20250101", [{"run_id": run_id, "status": "error", "error": cause}])
    assert cli.main(["results", "best", "bad", "--store", str(store.root)]) == 1
    out = capsys.readouterr().out
    assert "x1 error: ValueError: nope" in out and "CUDA error: out of memory" in out
    assert cli.main(["results", "--store", str(store.root), "ls", "bad"]) == 0  # both places


def test_error_texts_fit_the_caller(
    synth: ResultsStore, capsys: pytest.CaptureFixture[str]
) -> None:
    config = REPO / "configs" / "fundus_demo.yaml"
    overrides = {"store.root": str(synth.root)}
    with pytest.raises(UserError, match="already exists") as taken:
        orchestrator.sweep(config, overrides, name="synth")
    assert "resume=True" in str(taken.value) and "name=" in str(taken.value)
    assert "--" not in str(taken.value)
    with pytest.raises(UserError, match="nothing to resume") as missing:
        orchestrator.sweep(config, overrides, name="never-ran", resume=True)
    assert "without resume=True" in str(missing.value)
    with pytest.raises(UserError, match="pass another name="):
        orchestrator.run(config, overrides, name="synth")
    argv = ["sweep", str(config), "--name", "synth", "--set", f"store.root={synth.root}"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--name" in err and "resume=True" not in err


def test_results_render_as_tables_in_jupyter(synth: ResultsStore) -> None:
    result = api.Result.of(_outcome(synth))
    html = result._repr_html_()
    best = synth.best("synth", 1)["run_id"].iloc[0]
    assert "<table" in html and f'data-run="{best}"' in html and "1 failed" in html
    assert result.best(3)["run_id"].iloc[0] == best
    assert hasattr(api.leaderboard(result), "_repr_html_")  # a DataFrame: pandas renders it


def test_validate_check_data_prints_a_data_summary(
    tmp_path: Path, fundus_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "v.yaml"
    cfg.write_text(
        f"name: v\ntask: fundus\ndata: {{manifest: {fundus_csv}, image_size: 32}}\n"
        f"store: {{root: {tmp_path / 'store'}}}\n"
    )
    assert cli.main(["validate", str(cfg)]) == 0
    plain = capsys.readouterr().out
    assert cli.main(["validate", str(cfg), "--check-data"]) == 0
    out = capsys.readouterr().out
    assert "images: 64" in out and "labels:" in out and "patients:" in out
    assert "images:" not in plain


def test_data_tools_help_summaries_and_empty_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tasks.detection.synth import generate

    for argv in (["data", "coco", "--help"], ["data", "clean", "-h"], ["data", "stats", "-h"]):
        with pytest.raises(SystemExit) as done:
            cli.main(argv)
        assert done.value.code == 0 and "usage: medsweep data" in capsys.readouterr().out
    generate(tmp_path / "liver", n=24, size=64, seed=2)
    cocos = [
        str(tmp_path / "liver" / "annotations" / f"{s}.json") for s in ("train", "val", "test")
    ]
    assert (
        cli.main(["data", "clean", *cocos, "--out", str(tmp_path / "c1"), "--min-size", "8"]) == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("kept ") and "cleaning_report.csv" in out and "{" not in out
    argv = ["data", "clean", *cocos, "--out", str(tmp_path / "c2"), "--min-size", "4096"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "every one of the 24 images was dropped" in err and "Traceback" not in err
    empty = tmp_path / "empty.json"
    empty.write_text('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "c"}]}')
    assert cli.main(["data", "stats", str(empty), "--out", str(tmp_path / "st")]) == 2
    assert "no images" in capsys.readouterr().err
    assert cli.main(["data", "stats", *cocos, "--out", str(tmp_path / "st")]) == 0
    assert "diagnoses; plots and stats.csv" in capsys.readouterr().out

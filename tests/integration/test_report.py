"""A real two-trial sweep on the shared local Ray, as a researcher sees it: the live view's lines
(no Tune or Ray noise), a compacted store that plain Parquet readers count right, weights-only
artifacts, next steps that run as printed, and a report whose numbers are the store's."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import torch
from rich.console import Console

import orchestrator
from orchestrator import api, cli
from orchestrator.report import build_report
from orchestrator.results import ResultsStore
from tests.orchestrator.report.test_report import Page

pytestmark = pytest.mark.ray


def _config(tmp_path: Path, csv: Path) -> Path:
    path = tmp_path / "rep.yaml"
    path.write_text(
        f"""
name: rep
task: fundus
seed: 0
data: {{manifest: {csv}, image_size: 32, val_fraction: 0.25}}
model: {{backbone: resnet10t}}
train: {{epochs: 2, batch_size: 16}}
store: {{root: {tmp_path / "store"}}}
sweep:
  num_samples: 2
  max_concurrent: 2
  space:
    train.lr: {{type: loguniform, low: 1.0e-4, high: 3.0e-3}}
"""
    )
    return path


def test_sweep_as_a_researcher_sees_it(
    tmp_path: Path,
    fundus_csv: Path,
    ray_session: None,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = orchestrator.sweep(_config(tmp_path, fundus_csv), name="rep", quiet=False)
    assert (out.trials, out.errors) == (2, 0)
    captured = capfd.readouterr()
    said = captured.out + captured.err
    assert "› checking the config and the data" in said and "› starting 2 trial(s)" in said
    assert said.count("epoch 2/2 val_auc") == 2 and "2/2 trials done" in said
    for noise in ("Configuration for experiment", "TensorBoard", "Tuner.restore", "[I 20"):
        assert noise not in said, noise

    store = ResultsStore(tmp_path / "store")
    runs = store.runs("rep")
    assert len(list((out.path / "runs").glob("part-*.parquet"))) == 1  # compacted at the end
    duckdb = pytest.importorskip("duckdb")
    raw = duckdb.sql(f"select * from read_parquet('{out.path}/runs/part-*.parquet')").df()
    assert len(raw) == len(runs) == 2  # a plain reader counts each run once
    for row in runs.itertuples():
        weights = torch.load(store.root / row.checkpoint, weights_only=True)
        assert all(isinstance(v, torch.Tensor) for v in weights.values())  # weights only
    assert not any((out.path / "train").glob("*/checkpoint_*"))  # resume state dropped

    monkeypatch.chdir(tmp_path)
    console = Console(record=True, width=400, color_system=None)
    api.print_summary(out, console)
    hints = [ln.strip() for ln in console.export_text().splitlines() if ln.startswith("  medsweep")]
    assert len(hints) >= 4
    for hint in hints:
        argv = shlex.split(hint)[1:]
        if argv[0] != "dashboard":  # served and fetched in tests/orchestrator/report
            assert cli.main(argv) == 0, hint

    page = Page((tmp_path / "rep-report.html").read_text())
    best = store.best("rep", n=None)
    assert [r["run"] for r in page.board] == best["run_id"].tolist()
    assert [float(r["objective"]) for r in page.board] == best["objective"].tolist()
    assert {"fig-curves", "fig-roc", "fig-confusion", "fig-history"} <= page.ids
    result = build_report(store, "rep", tmp_path / "again.html")
    assert result["trials"] == 2

"""`medsweep report`: one self-contained HTML file whose numbers are the store's."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from orchestrator import cli
from orchestrator.errors import UserError
from orchestrator.report import build_report
from orchestrator.results.store import ResultsStore
from tests.orchestrator.report.conftest import TRIALS


class Page(HTMLParser):
    """Element ids, <img> sources, links/scripts, leaderboard and failed-trial rows, facts."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.images: list[str] = []
        self.external: list[str] = []
        self.board: list[dict[str, Any]] = []
        self.failed: list[str] = []
        self.facts: dict[str, str] = {}
        self._table: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(str(a["id"]))
        if tag == "table":
            self._table = a.get("id")
        if tag == "img":
            self.images.append(str(a.get("src")))
        if tag in ("script", "link", "iframe") or (a.get("href") or "").startswith("http"):
            self.external.append(tag)
        if tag == "tr" and a.get("data-run"):
            if self._table == "leaderboard-table":
                self.board.append({"run": a["data-run"]})
            elif self._table == "failed-table":
                self.failed.append(str(a["data-run"]))
        if tag == "td" and a.get("data-col") and self._table == "leaderboard-table":
            self.board[-1][str(a["data-col"])] = a.get("data-value")
        if tag == "div" and a.get("data-key") is not None:
            self.facts[str(a["data-key"])] = str(a.get("data-value"))


def test_report_is_self_contained_and_shows_the_stored_numbers(
    synth: ResultsStore, tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    result = build_report(synth, "syn", out)  # a unique prefix of the sweep name
    assert result["sweep"] == "synth" and result["out"] == str(out)
    text = out.read_text(encoding="utf-8")
    page = Page(text)
    assert page.external == [] and "http://" not in text and "https://" not in text
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
    for ident in ("summary", "leaderboard", "best-trial", "sweep-plots", "failed"):
        assert ident in page.ids, ident
    for fig in ("curves", "overlay", "roc", "confusion", "history", "importances", "parallel"):
        assert f"fig-{fig}" in page.ids, fig
    best = synth.best("synth", n=None)
    assert [r["run"] for r in page.board] == best["run_id"].tolist()
    for row, objective in zip(page.board, best["objective"], strict=True):
        assert float(row["objective"]) == objective  # full precision in data-value
    runs = synth.runs("synth")
    assert page.facts["trials"] == str(TRIALS) == str(len(runs))
    assert page.facts["completed"] == str((runs["status"] == "completed").sum())
    assert page.facts["failed"] == str((runs["status"] == "error").sum())
    assert page.facts["best trial"] == best["run_id"].iloc[0]
    assert float(page.facts["best val_auc"]) == best["objective"].iloc[0]
    assert page.failed == runs.loc[runs["status"] == "error", "run_id"].tolist()
    assert "CUDA out of memory (synthetic)" in text


def test_report_writes_pngs_and_works_without_a_study(synth: ResultsStore, tmp_path: Path) -> None:
    (synth.sweep_dir("synth") / "optuna.journal").unlink()
    result = build_report(synth, "synth", tmp_path / "r.html", tmp_path / "png")
    assert "history" not in result["figures"] and "overlay" in result["figures"]
    assert "no Optuna study" in (tmp_path / "r.html").read_text()
    pngs = sorted(p.name for p in (tmp_path / "png").iterdir())
    assert "overlay.png" in pngs and "roc.png" in pngs
    assert sum(p.startswith("curves-") for p in pngs) == TRIALS  # every trial's curves
    assert all((tmp_path / "png" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_report_of_a_sweep_where_every_trial_failed(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "s")
    store.init_sweep("bad", {"task": "fundus", "command": "sweep", "metric": "val_auc"})
    store.write_runs("bad", [{"run_id": "x1", "status": "error", "error": "ValueError: nope"}])
    build_report(store, "bad", tmp_path / "bad.html")
    page = Page((tmp_path / "bad.html").read_text())
    assert page.board == [] and page.failed == ["x1"]
    assert "No trial finished" in (tmp_path / "bad.html").read_text()


def test_report_refuses_a_folder_and_an_unknown_sweep(synth: ResultsStore, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="folder"):
        build_report(synth, "synth", tmp_path)
    with pytest.raises(UserError, match="unknown sweep"):
        build_report(synth, "nope", tmp_path / "x.html")


def test_report_cli(
    synth: ResultsStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli.html"
    argv = ["report", "synth", "--store", str(synth.root), "--out", str(out), "--json"]
    assert cli.main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["out"] == str(out) and out.stat().st_size == data["bytes"]
    assert cli.main(["report", "nope", "--store", str(synth.root), "--out", str(out)]) == 2

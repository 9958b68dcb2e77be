"""The HTML report in headless Chromium, offline: the browser parses it, the key elements are in
its DOM, and a screenshot shows the embedded figures (not a blank page)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orchestrator.report import build_report
from orchestrator.results.store import ResultsStore

REPO = Path(__file__).resolve().parents[3]
NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _find() -> str | None:
    return next((found for name in NAMES if (found := shutil.which(name))), None)


@pytest.fixture(scope="module")
def chromium() -> str:
    """The browser; installed by deploy/system-deps.sh (as `make test` does) when missing."""
    found = _find()
    if found is None:
        subprocess.run(["bash", str(REPO / "deploy" / "system-deps.sh")], timeout=900, check=False)
        found = _find()
    if found is None:
        pytest.skip("chromium is not installed and deploy/system-deps.sh could not install it")
    return found


def _run(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: any network fetch would fail
        f"--user-data-dir={profile}", *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_report_in_headless_chromium(chromium: str, synth: ResultsStore, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    build_report(synth, "synth", out)
    url = out.resolve().as_uri()
    dom = _run(chromium, tmp_path / "profile", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for ident in ("summary", "leaderboard-table", "best-trial", "fig-roc", "fig-history", "failed"):
        assert f'id="{ident}"' in dom.stdout, ident
    assert dom.stdout.count("data:image/png;base64,") >= 6
    shot = tmp_path / "report.png"
    run = _run(
        chromium, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2400", url
    )
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (2400, 1280)
    assert pixels.std() > 20  # text, tables and plots, not an empty page
    dark = (pixels < 100).mean(axis=1)  # rows with dark ink (text, axes, heatmap cells)
    assert (dark > 0.01).sum() > 200

"""`medsweep dashboard`: optuna-dashboard on the sweep's journal, on 127.0.0.1 and a free port."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from orchestrator.dashboard import serve
from orchestrator.errors import UserError
from orchestrator.results.store import ResultsStore
from tests.orchestrator.report.conftest import TRIALS


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read()


def test_dashboard_serves_the_sweeps_study(synth: ResultsStore) -> None:
    lines: list[str] = []
    started = threading.Event()
    servers: list[Any] = []

    def ready(server: Any) -> None:
        servers.append(server)
        started.set()

    thread = threading.Thread(target=serve, args=(synth, "syn", 0, lines.append, ready))
    thread.start()
    try:
        assert started.wait(60), "the dashboard did not start"
        url = lines[0].split(": ", 1)[1].split()[0]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/dashboard")
        assert servers[0].server_address[0] == "127.0.0.1"
        status, _ = _get(url)
        assert status == 200
        base = url.rsplit("/dashboard", 1)[0]
        status, body = _get(f"{base}/api/studies")
        studies = json.loads(body)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["synth"]
        status, body = _get(f"{base}/api/studies/{studies[0]['study_id']}")
        assert len(json.loads(body)["trials"]) == TRIALS
    finally:
        for server in servers:
            server.shutdown()
        thread.join(30)
    assert not thread.is_alive()


def test_dashboard_needs_a_study(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "s")
    store.init_sweep("one-run", {"task": "fundus", "command": "run"})
    with pytest.raises(UserError, match="has no Optuna study"):
        serve(store, "one-run", announce=lambda _: None)
    store.init_sweep("rdb", {"config": {"sweep": {"storage": "postgresql://u:***@db/x"}}})
    with pytest.raises(UserError, match="password is not stored"):
        serve(store, "rdb", announce=lambda _: None)

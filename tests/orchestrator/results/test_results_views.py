"""The `medsweep results` views on a small synthetic store: data for --json and rich output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from orchestrator.errors import UserError
from orchestrator.results import views
from orchestrator.results.schema import metrics_rows
from orchestrator.results.store import ResultsStore

Run = tuple[str, float, object, float | None]
RUNS: dict[str, list[Run]] = {
    "fund": [
        ("f-a1", 0.01, "resnet18", 0.81),
        ("f-b2", 0.001, "vit", 0.93),
        ("f-c3", 0.1, 3, None),
    ],
    "det": [("d-a1", 0.02, "yolo", 0.40), ("d-b2", 0.2, "yolo", 0.55)],
}


def build(root: Path) -> ResultsStore:
    store = ResultsStore(root)
    for sweep, runs in RUNS.items():
        mode = "min" if sweep == "det" else "max"
        store.init_sweep(
            sweep, {"task": sweep, "command": "sweep", "metric": "val_auc", "mode": mode}
        )
        for i, (rid, lr, model, score) in enumerate(runs):
            status = "error" if score is None else "completed"
            row: dict[str, Any] = {
                "run_id": rid,
                "status": status,
                "params": {"train.lr": lr, "model": model},
                "objective": score,
                "epochs": 2,
                "best": {"val_auc": score},
                "final": {"val_auc": score, "train_loss": 0.3},
                "config": {"train": {"lr": lr, "epochs": 2}},
                "duration_s": 12.5,
                "written_at": 1_700_000_000.0 + i,
            }
            store.write_runs(sweep, [row])
            for epoch in (1, 2):
                report = {"train_loss": 1 / epoch, "val_auc": (score or 0) * epoch / 2, "lr": lr}
                store.write_metrics(sweep, metrics_rows(sweep, rid, epoch, report, 5.0 + epoch))
    artifacts = store.artifacts_dir("fund", "f-b2")
    (artifacts / "plots").mkdir(parents=True)
    (artifacts / "confusion.json").write_text("{}")
    (artifacts / "plots" / "roc.png").write_bytes(b"png")
    return store


@pytest.fixture
def store(tmp_path: Path) -> ResultsStore:
    return build(tmp_path / "res")


def render(fn: Any, data: Any) -> str:
    console = Console(record=True, width=240, color_system=None)
    fn(console, data)
    return console.export_text()


def as_json(data: Any) -> Any:
    return json.loads(json.dumps(data, allow_nan=False))  # --json must be strict JSON


def test_ls(store: ResultsStore) -> None:
    rows = as_json(views.ls(store))
    by_sweep = {r["sweep"]: r for r in rows}
    assert [r["sweep"] for r in rows] == ["det", "fund"]
    assert by_sweep["fund"]["runs"] == 3 and by_sweep["fund"]["completed"] == 2
    assert by_sweep["fund"]["best"] == 0.93 and by_sweep["det"]["best"] == 0.40  # det: min
    assert by_sweep["fund"]["last_written"] == "2023-11-14T22:13:22Z"
    text = render(views.render_ls, rows)
    assert "0.9300 (val_auc)" in text and "fund" in text


def test_show(store: ResultsStore) -> None:
    data = as_json(views.show(store, "f-b"))
    assert (data["sweep"], data["run_id"], data["status"]) == ("fund", "f-b2", "completed")
    assert data["params"] == {"model": "vit", "train.lr": 0.001}
    assert data["config"] == {"train": {"epochs": 2, "lr": 0.001}}
    assert data["artifacts"] == ["confusion.json", "plots/roc.png"]
    assert data["metric_columns"] == ["train_loss", "val_auc", "lr"]
    assert [r["epoch"] for r in data["epochs_table"]] == [1, 2]
    assert data["epochs_table"][1]["val_auc"] == pytest.approx(0.93)
    text = render(views.render_show, data)
    for needle in ("fund/f-b2", "per-epoch metrics", "plots/roc.png", "vit", "0.9300"):
        assert needle in text


def test_best_and_leaderboard(store: ResultsStore) -> None:
    data = as_json(views.best(store, "fund", n=5))
    assert [r["run_id"] for r in data["rows"]] == ["f-b2", "f-a1"]  # error run has no objective
    assert data["params"] == ["model", "train.lr"] and data["mode"] == "max"
    text = render(views.render_best, data)
    assert "trial" in text and "0.9300" in text and "12.5" in text
    table = views.leaderboard_table(store.best("fund"), "val_auc", "max", ["param.train.lr"])
    headers = [str(c.header) for c in table.columns]
    assert headers == ["trial", "lr", "val_auc", "epochs", "time (s)", "status"]
    with pytest.raises(UserError, match="--n"):
        views.best(store, "fund", n=0)


def test_compare(store: ResultsStore) -> None:
    rows = as_json(views.compare(store, ["fund", "det", "fund"]))
    assert [(r["sweep"], r["run_id"], r["objective"]) for r in rows] == [
        ("fund", "f-b2", 0.93),
        ("det", "d-a1", 0.40),
    ]
    text = render(views.render_compare, rows)
    assert "f-b2" in text and "d-a1" in text and "train.lr" in text
    with pytest.raises(UserError, match=r"unknown sweep 'nope'.*det, fund"):
        views.compare(store, ["fund", "nope"])


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export(store: ResultsStore, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "exports" / f"fund.{fmt}"
    data = as_json(views.export(store, "fund", fmt, out))
    metrics_path = tmp_path / "exports" / f"fund.metrics.{fmt}"
    assert data["runs"] == str(out) and data["metrics"] == str(metrics_path)
    if fmt == "csv":
        runs, metrics = pd.read_csv(out), pd.read_csv(metrics_path)
    else:
        runs, metrics = pq.read_table(out).to_pandas(), pq.read_table(metrics_path).to_pandas()
    assert len(runs) == 3 and len(metrics) == 3 * 2 * 3
    assert sorted(runs["run_id"]) == ["f-a1", "f-b2", "f-c3"]
    # "model" mixes strings and an int across runs: exported as JSON text, one column type.
    assert sorted(map(str, runs["param.model"])) == ['"resnet18"', '"vit"', "3"]
    assert "Wrote 3 runs" in render(views.render_export, data)
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []


def test_export_rejects_bad_format_and_unknown_sweep(store: ResultsStore, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--format"):
        views.export(store, "fund", "xlsx", tmp_path / "x.xlsx")
    with pytest.raises(UserError, match="unknown sweep"):
        views.export(store, "nope", "csv", tmp_path / "x.csv")
    with pytest.raises(UserError, match="folder"):
        views.export(store, "fund", "csv", tmp_path)


def test_views_on_empty_store(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "empty")
    assert views.ls(store) == []
    assert "No sweeps" in render(views.render_ls, [])
    store.init_sweep("new", {"task": "fundus", "command": "sweep", "metric": "val_auc"})
    assert views.best(store, "new")["rows"] == []
    assert as_json(views.compare(store, ["new"]))[0]["objective"] is None


def test_render_dispatch_covers_every_cli_command(store: ResultsStore, tmp_path: Path) -> None:
    store.init_sweep("unix", {"task": "t", "command": "run", "created": 1_700_000_000.0})
    datas: dict[str, Any] = {
        "ls": views.ls(store),
        "show": views.show(store, "d-b2"),
        "best": views.best(store, "det"),
        "compare": views.compare(store, ["det", "fund"]),
        "export": views.export(store, "det", "csv", tmp_path / "det.csv"),
        "compact": store.compact("fund"),
    }
    for command, data in datas.items():
        console = Console(record=True, width=200, color_system=None)
        views.render(command, as_json(data), console)
        assert console.export_text().strip(), command
    unix = next(r for r in datas["ls"] if r["sweep"] == "unix")
    assert unix["created"] == "2023-11-14T22:13:20Z"  # unix seconds shown as ISO
    assert "-> 1 part" in render(views.render_compact, datas["compact"])


def test_leaderboard_for(store: ResultsStore) -> None:
    console = Console(record=True, width=200, color_system=None)
    console.print(views.leaderboard_for(store, "det"))
    text = console.export_text()
    assert text.index("d-a1 ") < text.index("d-b2 ")  # det is mode=min: 0.40 before 0.55
    assert "lower is better" in text

"""The `medsweep results` views on a small synthetic store: data for --json and rich output."""

from __future__ import annotations

import json
import shutil
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
FIXTURE_V1 = Path(__file__).resolve().parents[2] / "fixtures" / "store_v1"


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
                "best_epoch": None if score is None else 2,
                "best": {"val_auc": score},
                "final": {"val_auc": score, "train_loss": 0.3},
                "config": {"train": {"lr": lr, "epochs": 2, "label_smoothing": 0.0}},
                "duration_s": 12.5,
                "written_at": 1_700_000_000.0 + i,
            }
            if score is None:
                row.update(error="RuntimeError: boom", traceback="Traceback ...\nRuntimeError")
            else:
                row["checkpoint"] = f"{sweep}/artifacts/{rid}/model_best.pt"
            store.write_runs(sweep, [{**row, "status": "running", "objective": None}])
            store.write_runs(sweep, [row])
            for epoch in (1, 2):
                report = {"train_loss": 1 / epoch, "val_auc": (score or 0) * epoch / 2, "lr": lr}
                store.write_metrics(sweep, metrics_rows(sweep, rid, epoch, report, 5.0 + epoch))
    artifacts = store.artifacts_dir("fund", "f-b2")
    (artifacts / "plots").mkdir(parents=True)
    (artifacts / "confusion.json").write_text("{}")
    (artifacts / "plots" / "roc.png").write_bytes(b"png")
    (artifacts / ".done.json").write_text("{}")  # bookkeeping: not listed
    (artifacts / "model_best.pt").write_bytes(b"w" * 1000)
    (store.artifacts_dir("fund", "f-a1")).mkdir(parents=True)
    (store.artifacts_dir("fund", "f-a1") / "model_best.pt").write_bytes(b"w" * 500)
    resume = store.sweep_dir("fund") / "train" / "f-a1" / "checkpoint_1"
    resume.mkdir(parents=True)
    (resume / "state.pt").write_bytes(b"s" * 70)
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


def test_ls_counts_failed_and_running_and_lists_runs(store: ResultsStore) -> None:
    store.write_runs("fund", [{"run_id": "f-d4", "status": "running", "start_time": 1e9}])
    rows = as_json(views.ls(store))
    by_sweep = {r["sweep"]: r for r in rows}
    assert [r["sweep"] for r in rows] == ["det", "fund"]
    fund = by_sweep["fund"]
    assert (fund["runs"], fund["completed"], fund["failed"], fund["running"]) == (4, 2, 1, 1)
    assert fund["best"] == 0.93 and by_sweep["det"]["best"] == 0.40  # det: min
    text = render(views.render_ls, rows)
    assert "0.9300 (val_auc)" in text and "failed" in text and "running" in text
    runs = as_json(views.ls(store, "fu"))  # a unique prefix lists that sweep's runs
    assert runs["sweep"] == "fund" and len(runs["runs"]) == 4
    failed = next(r for r in runs["runs"] if r["run_id"] == "f-c3")
    assert failed["status"] == "error" and failed["error"] == "RuntimeError: boom"
    assert "RuntimeError: boom" in render(views.render_ls, runs)


def test_show_lists_artifacts_with_paths_and_the_checkpoint_where_it_is(
    store: ResultsStore, tmp_path: Path
) -> None:
    moved = ResultsStore(shutil.copytree(store.root, tmp_path / "copy"))  # a copied store
    data = as_json(views.show(moved, "f-b"))
    assert (data["sweep"], data["run_id"], data["status"]) == ("fund", "f-b2", "completed")
    assert data["params"] == {"model": "vit", "train.lr": 0.001}
    assert data["artifacts"] == ["confusion.json", "model_best.pt", "plots/roc.png"]
    folder = (tmp_path / "copy" / "fund" / "artifacts" / "f-b2").resolve()
    assert data["artifact_paths"][2] == str(folder / "plots" / "roc.png")
    assert data["checkpoint_path"] == str(folder / "model_best.pt") and data["checkpoint_exists"]
    assert data["best_epoch"] == 2
    assert data["metric_columns"] == ["train_loss", "val_auc", "lr"]
    assert data["epochs_table"][1]["val_auc"] == pytest.approx(0.93)
    text = render(views.render_show, data)
    for needle in ("fund/f-b2", "per-epoch metrics", str(folder / "plots" / "roc.png"), "vit"):
        assert needle in text
    assert "best epoch (2)" in text
    failed = as_json(views.show(moved, "fund/f-c3"))
    assert "RuntimeError" in render(views.render_show, failed)  # the stored traceback


def test_show_rebases_schema_1_absolute_checkpoints(tmp_path: Path) -> None:
    store = ResultsStore(shutil.copytree(FIXTURE_V1, tmp_path / "v1"))
    data = views.show(store, "50b5d9d8")
    expected = (tmp_path / "v1" / data["sweep"] / "train" / "50b5d9d8").resolve()
    assert data["checkpoint_path"].startswith(str(expected))  # not /tmp/demo_before/...
    assert "missing" in render(views.render_show, data)  # that checkpoint was never copied


def test_best_with_prefix_metric_sort_filter_and_failures(store: ResultsStore) -> None:
    data = as_json(views.best(store, "fu", n=5))
    assert data["sweep"] == "fund"
    assert [r["run_id"] for r in data["rows"]] == ["f-b2", "f-a1"]  # the error run has none
    assert data["failures"] == [
        {"run_id": "f-c3", "status": "error", "error": "RuntimeError: boom"}
    ]
    text = render(views.render_best, data)
    assert "0.9300" in text and "2/2" in text and "RuntimeError: boom" in text
    by_loss = views.best(store, "fund", metric="train_loss")  # a loss: lowest first
    assert by_loss["sort"] == "asc" and by_loss["rows"][0]["value"] == pytest.approx(0.5)
    flipped = views.best(store, "fund", sort="asc")
    assert [r["run_id"] for r in flipped["rows"]] == ["f-a1", "f-b2"]
    assert [r["run_id"] for r in views.best(store, "fund", n=1)["rows"]] == ["f-b2"]
    cases = {
        "lr<0.005": ["f-b2"],
        "train.lr>=0.01": ["f-a1"],
        "param.model=resnet18,vit": ["f-b2", "f-a1"],
        "model!=vit": ["f-a1"],
        "val_auc>0.9": ["f-b2"],
        "status=error": [],
    }
    for text_filter, expected in cases.items():
        got = views.best(store, "fund", filters=[text_filter])
        assert [r["run_id"] for r in got["rows"]] == expected, text_filter
    assert views.best(store, "fund", filters=["lr<1", "val_auc<0.9"])["matched"] == 1
    assert "No trial of fund matches" in render(
        views.render_best, views.best(store, "fund", filters=["val_auc>2"])
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, "--n"),
        ({"filters": ["nonsense"]}, "KEY OP VALUE"),
        ({"filters": ["bogus>1"]}, "unknown key 'bogus'.*train.lr"),
        ({"filters": ["lr<abc"]}, "needs a number"),
        ({"metric": "nope"}, "unknown key 'nope'"),
        ({"sort": "up"}, "--sort"),
    ],
)
def test_best_rejects_bad_options(store: ResultsStore, kwargs: Any, match: str) -> None:
    with pytest.raises(UserError, match=match):
        views.best(store, "fund", **kwargs)


def test_exact_sweep_name_wins_over_prefix(store: ResultsStore) -> None:
    store.init_sweep("fundus-2", {"task": "fundus", "command": "sweep"})
    assert views.best(store, "fund")["sweep"] == "fund"
    with pytest.raises(UserError, match="matches 2 sweeps"):
        views.best(store, "fu")


def test_compare_shows_every_config_field_that_differs(store: ResultsStore) -> None:
    for alpha in (0.0, 0.05, 0.1):  # the README's ms.run(..., name=f"alpha-{alpha}") loop
        name = f"alpha-{alpha}"
        store.init_sweep(name, {"task": "fundus", "command": "run", "metric": "val_auc"})
        config = {"train": {"lr": 0.001, "label_smoothing": alpha}, "seed": 0}
        store.write_runs(
            name,
            [{"run_id": f"r{alpha}", "status": "completed", "objective": 0.9 - alpha,
              "config": config, "final": {"val_auc": 0.9, "test_auc": 0.8 + alpha}}],
        )  # fmt: skip
    columns = as_json(views.compare(store, ["alpha-0.0", "alpha-0.05", "alpha-0.1"]))
    assert [c["differs"] for c in columns] == [
        {"train.label_smoothing": 0.0},
        {"train.label_smoothing": 0.05},
        {"train.label_smoothing": 0.1},
    ]
    assert [c["test"] for c in columns] == pytest.approx([0.8, 0.85, 0.9])  # AUC(inner_test)
    text = render(views.render_compare, columns)
    assert "train.label_smoothing" in text and "test_auc" in text and "0.8500" in text
    full = views.compare(store, ["alpha-0.0", "alpha-0.1"], all_fields=True)
    assert set(full[0]["differs"]) == {"seed", "train.lr", "train.label_smoothing"}
    runs = as_json(views.compare(store, ["fund/f-a1", "f-b2", "fund", "det"]))
    assert [c["run_id"] for c in runs] == ["f-a1", "f-b2", "f-b2", "d-a1"]
    assert runs[0]["differs"]["train.lr"] == 0.01
    with pytest.raises(UserError, match=r"unknown sweep 'nope'.*det, fund"):
        views.compare(store, ["fund", "nope"])


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_files_and_columns(store: ResultsStore, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "exports" / "fund"  # no extension: .csv/.parquet is added
    data = as_json(views.export(store, "fund", fmt, out))
    runs_path, metrics_path = out.with_name(f"fund.{fmt}"), out.with_name(f"fund.metrics.{fmt}")
    assert data["runs"] == str(runs_path) and data["metrics"] == str(metrics_path)
    if fmt == "csv":
        runs, metrics = pd.read_csv(runs_path), pd.read_csv(metrics_path)
    else:
        runs = pq.read_table(runs_path).to_pandas()
        metrics = pq.read_table(metrics_path).to_pandas()
    assert len(runs) == 3 and len(metrics) == 3 * 2 * 3
    assert {"best.val_auc", "final.val_auc", "final.train_loss", "param.train.lr"} <= set(runs)
    assert sorted(map(str, runs["param.model"])) == ['"resnet18"', '"vit"', "3"]
    assert "Wrote 3 runs" in render(views.render_export, data)
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []


def test_export_rejects_bad_format_suffix_and_unknown_sweep(
    store: ResultsStore, tmp_path: Path
) -> None:
    with pytest.raises(UserError, match="--format"):
        views.export(store, "fund", "xlsx", tmp_path / "x.xlsx")
    with pytest.raises(UserError, match=r"ends in '\.parquet'"):
        views.export(store, "fund", "csv", tmp_path / "x.parquet")
    with pytest.raises(UserError, match="unknown sweep"):
        views.export(store, "nope", "csv", tmp_path / "x.csv")
    with pytest.raises(UserError, match="folder"):
        views.export(store, "fund", "csv", tmp_path)


def _rows(store: ResultsStore, sweep: str) -> pd.DataFrame:
    return store.runs(sweep, folds=True)


def test_prune_deletes_weights_and_checkpoints_but_never_rows(store: ResultsStore) -> None:
    before = _rows(store, "fund")
    plan = views.prune(store, "fund", keep="best", dry_run=True)
    assert (plan["weights_deleted"], plan["checkpoint_dirs_deleted"]) == (1, 1)
    assert plan["bytes_freed"] == 500 + 70 and plan["kept_trial"] == "f-b2"
    assert (store.artifacts_dir("fund", "f-a1") / "model_best.pt").exists()  # dry run
    done = views.prune(store, "fund", keep="best")
    assert not (store.artifacts_dir("fund", "f-a1") / "model_best.pt").exists()
    assert (store.artifacts_dir("fund", "f-b2") / "model_best.pt").exists()
    assert not (store.sweep_dir("fund") / "train" / "f-a1").exists()
    assert "freed 570 B" in render(views.render_prune, done) and "f-b2" in render(
        views.render_prune, done
    )
    views.prune(store, "fund", keep="none")
    assert not (store.artifacts_dir("fund", "f-b2") / "model_best.pt").exists()
    assert (store.artifacts_dir("fund", "f-b2") / "confusion.json").exists()  # not weights
    pd.testing.assert_frame_equal(_rows(store, "fund"), before)  # rows untouched
    assert "missing" in render(views.render_show, views.show(store, "f-b2"))


def test_prune_refuses_a_sweep_with_unfinished_trials(store: ResultsStore) -> None:
    store.write_runs("fund", [{"run_id": "f-d4", "status": "running"}])
    with pytest.raises(UserError, match="unfinished"):
        views.prune(store, "fund", keep="none")
    assert (store.artifacts_dir("fund", "f-a1") / "model_best.pt").exists()
    views.prune(store, "fund", keep="none", force=True)
    assert not (store.artifacts_dir("fund", "f-a1") / "model_best.pt").exists()
    with pytest.raises(UserError, match="--keep"):
        views.prune(store, "fund", keep="some")


def test_documented_sql_reads_one_row_per_run(store: ResultsStore) -> None:
    """Raw parts hold a `running` and a final row per run; the SQL of `medsweep results sql`
    (the README's DuckDB pattern) returns what the store returns."""
    duckdb = pytest.importorskip("duckdb")
    raw = duckdb.sql(f"select * from read_parquet('{store.root}/*/runs/part-*.parquet')").df()
    assert len(raw) == 10  # 5 runs, each written twice: the double count of a plain select
    latest = duckdb.sql(views.sql(store)["sql"]).df()
    assert len(latest) == 5
    expected = store.runs().set_index("run_id")
    for row in latest.itertuples():
        assert row.status == expected.at[row.run_id, "status"]
    one = duckdb.sql(views.sql(store, "metrics", "fu")["sql"]).df()
    assert len(one) == len(store.metrics("fund"))
    assert "QUALIFY" in render(views.render_sql, views.sql(store))


def test_views_on_empty_store(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "empty")
    assert views.ls(store) == []
    assert "No sweeps" in render(views.render_ls, [])
    store.init_sweep("new", {"task": "fundus", "command": "sweep", "metric": "val_auc"})
    data = views.best(store, "new")
    assert data["rows"] == [] and "no trial with an objective" in render(views.render_best, data)
    assert as_json(views.compare(store, ["new"]))[0]["objective"] is None
    assert "no runs yet" in render(views.render_ls, views.ls(store, "new"))


def test_render_dispatch_covers_every_cli_command(store: ResultsStore, tmp_path: Path) -> None:
    store.init_sweep("unix", {"task": "t", "command": "run", "created": 1_700_000_000.0})
    datas: dict[str, Any] = {
        "ls": views.ls(store),
        "show": views.show(store, "d-b2"),
        "best": views.best(store, "det"),
        "compare": views.compare(store, ["det", "fund"]),
        "export": views.export(store, "det", "csv", tmp_path / "det.csv"),
        "compact": store.compact("fund"),
        "prune": views.prune(store, "det", keep="best", dry_run=True),
        "sql": views.sql(store),
    }
    for command, data in datas.items():
        console = Console(record=True, width=200, color_system=None)
        views.render(command, as_json(data), console)
        assert console.export_text().strip(), command
    unix = next(r for r in datas["ls"] if r["sweep"] == "unix")
    assert unix["created"] == "2023-11-14T22:13:20Z"  # unix seconds shown as ISO
    assert "-> 1 part" in render(views.render_compact, datas["compact"])


def test_leaderboard_table_and_leaderboard_for(store: ResultsStore) -> None:
    table = views.leaderboard_table(store.best("fund"), "val_auc", "max", ["param.train.lr"])
    headers = [str(c.header) for c in table.columns]
    assert headers == ["trial", "lr", "val_auc", "best/epochs", "time (s)", "status"]
    console = Console(record=True, width=200, color_system=None)
    console.print(views.leaderboard_for(store, "det"))
    text = console.export_text()
    assert text.index("d-a1 ") < text.index("d-b2 ")  # det is mode=min: 0.40 before 0.55
    assert "lower is better" in text
    console = Console(record=True, width=200, color_system=None)
    console.print(views.leaderboard_for(store, "fund", failures=False))
    assert "RuntimeError" not in console.export_text()

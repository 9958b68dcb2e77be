"""Row coercion and metric-name helpers of the results schema."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from orchestrator.results.schema import (
    METRICS_COLUMNS,
    RUNS_COLUMNS,
    RowError,
    coerce_metrics_row,
    coerce_runs_row,
    flatten,
    metrics_rows,
    split_metric_name,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("val_auc", ("val", "auc")),
        ("train_loss", ("train", "loss")),
        ("test_macro_f1", ("test", "macro_f1")),
        ("train/loss", ("train", "loss")),
        ("lr", ("", "lr")),
        ("validation_auc", ("", "validation_auc")),
        ("val_", ("", "val_")),
        ("val", ("", "val")),
    ],
)
def test_split_metric_name(name: str, expected: tuple[str, str]) -> None:
    assert split_metric_name(name) == expected


def test_metrics_rows_keeps_numbers_and_nan_only() -> None:
    report = {
        "val_auc": 0.9,
        "train_loss": np.float32(0.5),
        "epoch_images": 12,
        "lr": float("nan"),
        "done": True,
        "flag": np.bool_(True),
        "note": "text",
        "config": {"a": 1},
        "training_iteration": 3,
    }
    rows = metrics_rows("s", "r1", 3, report, 100.0, 7.5, skip=["training_iteration"])
    got = {(r["split"], r["name"]): r["value"] for r in rows}
    assert set(got) == {("val", "auc"), ("train", "loss"), ("", "epoch_images"), ("", "lr")}
    assert got[("val", "auc")] == 0.9 and math.isnan(got[("", "lr")])
    assert all(r["epoch"] == 3 and r["wall_time"] == 100.0 for r in rows)
    assert all(r["time_total_s"] == 7.5 and r["run_id"] == "r1" for r in rows)


def test_runs_row_defaults_and_json() -> None:
    row = coerce_runs_row(
        {
            "sweep": "s",
            "run_id": "r",
            "params": {"train": {"lr": np.float64(0.1)}, "model": "resnet"},
            "best": {"val_auc": float("nan"), "val_loss": 0.2},
        },
        now=5.0,
    )
    assert list(row) == list(RUNS_COLUMNS)
    assert json.loads(row["params"]) == {"train.lr": 0.1, "model": "resnet"}
    assert json.loads(row["best"]) == {"val_auc": None, "val_loss": 0.2}  # strict JSON
    assert row["status"] == "running" and row["epochs"] == 0 and row["seed"] is None
    assert row["written_at"] == 5.0 and math.isnan(row["end_time"])


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"sweep": "s"}, "missing"),
        ({"sweep": "s", "run_id": ""}, "non-empty"),
        ({"sweep": "s", "run_id": "r", "status": "done"}, "status"),
        ({"sweep": "s", "run_id": "r", "mode": "up"}, "mode"),
        ({"sweep": "s", "run_id": "r", "epochs": 1.5}, "integer"),
        ({"sweep": "s", "run_id": "r", "objective": "high"}, "number"),
        ({"sweep": "s", "run_id": "r", "config": "{not json"}, "JSON"),
        ({"sweep": "s", "run_id": "r", "colour": "red"}, "unknown"),
    ],
)
def test_runs_row_rejects(row: dict[str, object], match: str) -> None:
    with pytest.raises(RowError, match=match):
        coerce_runs_row(row, now=0.0)


def test_metrics_row_validates_split() -> None:
    ok = coerce_metrics_row({"sweep": "s", "run_id": "r", "epoch": 1, "name": "auc", "value": 1}, 9)
    assert list(ok) == list(METRICS_COLUMNS) and ok["split"] == "" and ok["wall_time"] == 9
    with pytest.raises(RowError, match="split"):
        coerce_metrics_row(
            {"sweep": "s", "run_id": "r", "epoch": 1, "split": "dev", "name": "a", "value": 1}, 0
        )


def test_flatten() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": {}}) == {"a.b": 1, "a.c.d": 2, "e": {}}


def test_json_text_is_canonical_strict_json() -> None:
    row = coerce_runs_row(
        {"sweep": "s", "run_id": "r", "params": '{"b": {"c": 1}}', "final": '{"x": NaN}'}, 0.0
    )
    assert row["params"] == '{"b.c": 1}' and row["final"] == '{"x": null}'

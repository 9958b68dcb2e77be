"""The report's figures: each draws what its data holds, and nothing when the data is absent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from sklearn.metrics import roc_auc_score

from orchestrator.report import plots
from orchestrator.results.schema import metrics_rows


def _metrics(per_run: dict[str, list[dict[str, float]]]) -> pd.DataFrame:
    rows = [
        {**row, "parent_run_id": "", "fold": None, "round": None}
        for run_id, epochs in per_run.items()
        for epoch, report in enumerate(epochs, start=1)
        for row in metrics_rows("s", run_id, epoch, report, float(epoch))
    ]
    return pd.DataFrame(rows)


CURVES = _metrics(
    {
        "a": [{"val_auc": 0.6, "val_loss": 0.7, "train_loss": 0.9}, {"val_auc": 0.8}],
        "b": [{"val_auc": 0.5, "train_unfrozen": 1, "train_lr": 1e-3}, {"val_auc": 0.7,
              "train_unfrozen": 2, "train_lr": 5e-4}],
    }
)  # fmt: skip


def test_learning_curves_and_overlay() -> None:
    fig = plots.learning_curves(CURVES, "a", "val_auc")
    assert fig is not None
    lines = {line.get_label(): line.get_ydata().tolist() for line in fig.axes[0].get_lines()}
    assert lines == {"val_auc": [0.6, 0.8]}
    assert plots.learning_curves(CURVES, "zzz", "val_auc") is None
    overlay = plots.overlay_curves(CURVES, "val_auc", "a")
    assert overlay is not None
    drawn = [line.get_ydata().tolist() for line in overlay.axes[0].get_lines()]
    assert [0.6, 0.8] in drawn and [0.5, 0.7] in drawn and len(drawn) == 2
    assert plots.overlay_curves(CURVES, "val_map", "a") is None
    assert plots.png_bytes(overlay)[:4] == b"\x89PNG"


def test_roc_and_confusion_of_predictions() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    frame = pd.DataFrame({"label": labels, "score": labels * 0.3 + rng.random(200) * 0.7})
    fig = plots.roc_figure({"val": frame})
    assert fig is not None
    legend = fig.axes[0].get_legend().get_texts()[0].get_text()
    assert f"AUC {roc_auc_score(frame['label'], frame['score']):.3f}" in legend
    assert plots.roc_figure({"val": frame.assign(label=1)}) is None  # one class: no ROC
    assert plots.roc_figure({"val": frame.drop(columns="score")}) is None
    conf = plots.classification_confusion(frame, threshold=0.5)
    assert conf is not None
    cells = [t.get_text() for t in conf.axes[0].texts]
    predicted = frame["score"] >= 0.5
    expected = [
        ((frame["label"] == t) & (predicted == bool(p))).sum() for t in (0, 1) for p in (0, 1)
    ]
    assert cells == [str(v) for v in expected]
    assert "score >= 0.50" in conf.axes[0].get_title()


def test_lesion_confusion_and_froc_from_stored_files(tmp_path: Path) -> None:
    from tasks.common.froc import FrocResult

    lesion = {
        "confusion": [[3, 1, 0], [0, 2, 1], [1, 0, 0]],
        "labels": ["cyst", "HCC", "None"],
        "iou": 0.25,
        "threshold": 0.4,
    }
    (tmp_path / "val_lesion.json").write_text(json.dumps(lesion))
    fig = plots.lesion_confusion(tmp_path / "val_lesion.json")
    assert fig is not None and "IoU >= 0.25" in fig.axes[0].get_title()
    result = FrocResult(
        thresholds=np.array([0.9, 0.5, 0.1]),
        mean_fps=np.array([0.0, 0.5, 2.0]),
        sensitivity=np.array([0.4, 0.7, 0.9]),
        fps_per_case=(0.5, 1.0),
        sensitivity_at=(0.7, 0.7),
        n_cases=4,
        n_lesions=10,
        n_candidates=12,
        hit="overlap",
    )
    (tmp_path / "val_predictions_froc.json").write_text(json.dumps(result.to_dict()))
    froc = plots.froc(tmp_path / "val_predictions_froc.json")
    assert froc is not None and "10 lesions in 4 cases" in froc.axes[0].get_title()
    assert plots.froc(tmp_path / "missing.json") is None
    assert plots.lesion_confusion(tmp_path / "missing.json") is None


def test_schedule_timeline() -> None:
    fig = plots.schedule_timeline(CURVES, "b")
    assert fig is not None
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels == ["unfrozen stages", "learning rate"]
    assert fig.axes[0].get_lines()[0].get_ydata().tolist() == [1, 2]
    assert plots.schedule_timeline(CURVES, "a") is None  # no schedule reported


def test_optuna_figures() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_int("n", 1, 3), n_trials=6)
    figures = plots.optuna_figures(study)
    assert set(figures) == {"history", "importances", "parallel"}
    for fig in figures.values():
        assert plots.png_bytes(fig)[:4] == b"\x89PNG"
        plots.close(fig)
    assert plots.optuna_figures(optuna.create_study()) == {}


def test_png_bytes_are_stable() -> None:
    """The same figure gives the same bytes (no timestamps or versions in the file)."""
    a = plots.png_bytes(plots.learning_curves(CURVES, "a", "val_auc"))
    b = plots.png_bytes(plots.learning_curves(CURVES, "a", "val_auc"))
    assert a == b

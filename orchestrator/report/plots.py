"""Figures of a sweep (matplotlib, written as PNG): learning curves per trial and overlaid per
sweep, ROC curves, confusion heatmaps (seed 000's figure-4 style, the detection family's own
function), FROC curves, Optuna's optimisation history / parameter importances / parallel
coordinates, and the schedule timeline of a trial (unfrozen stages, alpha, learning rate).

Every builder returns a `matplotlib.figure.Figure` drawn on an Agg canvas (no pyplot state), or
None when the data it needs is absent. Optuna's plots need pyplot; they run with the Agg backend
and their figures are closed after use.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

# Metric rows a trial writes about its schedule (tasks/common/schedules.py, tasks/abn).
SCHEDULE_METRICS = {"unfrozen": "unfrozen stages", "alpha": "alpha", "lr": "learning rate"}
_DPI = 90


def new_figure(width: float = 6.0, height: float = 3.6) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Any) -> bytes:
    """A figure as PNG bytes (no timestamps or versions in the file: stable for a stable input)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def _label(split: str, name: str) -> str:
    return f"{split}_{name}" if split else name


# ----- learning curves ----------------------------------------------------------------------


def learning_curves(metrics: pd.DataFrame, run_id: str, metric: str) -> Figure | None:
    """One trial: its sweep metric (validation, and test where scored) and its losses per epoch."""
    rows = metrics[(metrics["run_id"] == run_id) & (metrics["parent_run_id"].fillna("") == "")]
    if rows.empty:
        return None
    split, _, name = metric.partition("_")
    fig = new_figure(9.0, 3.4)
    left, right = fig.subplots(1, 2)
    for s in ("train", "val", "test"):
        curve = _curve(rows, s, name if split in ("train", "val", "test") else metric)
        if len(curve):
            left.plot(curve.index, curve.to_numpy(), marker="o", ms=3, label=_label(s, name))
        loss = _curve(rows, s, "loss")
        if len(loss):
            right.plot(loss.index, loss.to_numpy(), marker="o", ms=3, label=f"{s} loss")
    for ax, title in ((left, metric), (right, "loss")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"trial {run_id}", fontsize=10)
    fig.tight_layout()
    return fig


def _curve(rows: pd.DataFrame, split: str, name: str) -> pd.Series:
    """Values per epoch (the last round's where pseudo-label rounds repeat epochs)."""
    picked = rows[(rows["split"].fillna("") == split) & (rows["name"] == name)]
    if picked.empty:
        return pd.Series(dtype="float64")
    ordered = picked.sort_values(["round", "epoch", "wall_time"], na_position="first")
    return ordered.groupby("epoch")["value"].last().sort_index()


def overlay_curves(
    metrics: pd.DataFrame, metric: str, best_run: str | None, limit: int = 400
) -> Figure | None:
    """Every trial's validation metric per epoch on one axis; the best trial highlighted."""
    split, _, name = metric.partition("_")
    if split not in ("train", "val", "test"):
        split, name = "", metric
    rows = metrics[
        (metrics["split"].fillna("") == split)
        & (metrics["name"] == name)
        & (metrics["parent_run_id"].fillna("") == "")
    ]
    if rows.empty:
        return None
    fig = new_figure(7.0, 3.8)
    ax = fig.add_subplot()
    wide = rows.pivot_table(index="epoch", columns="run_id", values="value", aggfunc="last")
    others = [c for c in wide.columns if c != best_run][:limit]
    if others:
        ax.plot(wide.index, wide[others].to_numpy(), color="0.6", lw=0.8, alpha=0.5)
    if best_run in wide.columns:
        ax.plot(wide.index, wide[best_run], color="C3", lw=2.2, label=f"best: {best_run}")
        ax.legend(fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} of {wide.shape[1]} trial(s)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# ----- ROC, confusion, FROC -----------------------------------------------------------------


def roc_figure(curves: Mapping[str, pd.DataFrame]) -> Figure | None:
    """ROC curves of per-case predictions (`label` 0/1 and `score` columns), one per entry."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig = new_figure(4.6, 4.2)
    ax = fig.add_subplot()
    drawn = 0
    for name, frame in curves.items():
        labels, scores = _labels_scores(frame)
        if labels is None or scores is None or len(set(labels.tolist())) < 2:
            continue
        fpr, tpr, _ = roc_curve(labels, scores)
        auc = roc_auc_score(labels, scores)
        ax.plot(fpr, tpr, lw=1.8, label=f"{name} (AUC {auc:.3f}, n={len(labels)})")
        drawn += 1
    if not drawn:
        return None
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("ROC")
    fig.tight_layout()
    return fig


def _labels_scores(frame: pd.DataFrame) -> tuple[np.ndarray | None, np.ndarray | None]:
    if "label" not in frame.columns or "score" not in frame.columns:
        return None, None
    clean = frame[["label", "score"]].apply(pd.to_numeric, errors="coerce").dropna()
    return clean["label"].astype(int).to_numpy(), clean["score"].astype(float).to_numpy()


def classification_confusion(frame: pd.DataFrame, threshold: float = 0.5) -> Figure | None:
    """The 2x2 confusion of per-case predictions at `threshold`, drawn by the detection
    family's figure-4 heatmap (rows: label, columns: prediction, counts in the cells)."""
    from tasks.common.detection_metrics import lesion_confusion_figure

    labels, scores = _labels_scores(frame)
    if labels is None or scores is None or not len(labels):
        return None
    predicted = (scores >= threshold).astype(int)
    matrix = [[int(((labels == t) & (predicted == p)).sum()) for p in (0, 1)] for t in (0, 1)]
    result = {"confusion": matrix, "labels": ["0", "1"], "iou": 0.0, "threshold": threshold}
    return lesion_confusion_figure(result, title=f"score >= {threshold:.2f}, n={len(labels)}")


def lesion_confusion(path: Path) -> Figure | None:
    """The stored lesion-level result (`val_lesion.json`) as seed 000's figure 4."""
    from tasks.common.detection_metrics import lesion_confusion_figure

    result = _read_json(path)
    if not result or "confusion" not in result:
        return None
    return lesion_confusion_figure(result)


def froc(path: Path) -> Figure | None:
    """The stored FROC curve (`*_froc.json`) drawn by the anomaly family's own function."""
    from tasks.common.froc import FrocResult, froc_figure

    data = _read_json(path)
    curve = (data or {}).get("curve")
    if not data or not curve:
        return None
    at = data.get("sensitivity_at") or {}
    result = FrocResult(
        thresholds=np.asarray(curve["threshold"], dtype=np.float64),
        mean_fps=np.asarray(curve["mean_fp_per_case"], dtype=np.float64),
        sensitivity=np.asarray(curve["sensitivity"], dtype=np.float64),
        fps_per_case=tuple(float(r) for r in at),
        sensitivity_at=tuple(math.nan if v is None else float(v) for v in at.values()),
        n_cases=int(data.get("n_cases", 0)),
        n_lesions=int(data.get("n_lesions", 0)),
        n_candidates=int(data.get("n_candidates", 0)),
        hit=str(data.get("hit", "")),
    )
    return froc_figure(result)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ----- schedules ----------------------------------------------------------------------------


def schedule_timeline(metrics: pd.DataFrame, run_id: str) -> Figure | None:
    """A trial's schedule over epochs: unfrozen backbone stages, the ABN loss weight alpha and
    the learning rate (whichever the trial reported); None when it reported none but the LR."""
    rows = metrics[(metrics["run_id"] == run_id) & (metrics["parent_run_id"].fillna("") == "")]
    series = {
        label: _curve(rows, "train", name)
        for name, label in SCHEDULE_METRICS.items()
        if len(_curve(rows, "train", name))
    }
    if not set(series) - {"learning rate"}:
        return None
    fig = new_figure(7.0, 1.6 * len(series) + 0.6)
    axes = fig.subplots(len(series), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (label, curve) in zip(axes, series.items(), strict=True):
        ax.step(curve.index, curve.to_numpy(), where="post", marker="o", ms=3)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1].set_xlabel("epoch")
    axes[0].set_title(f"schedule of trial {run_id}")
    fig.tight_layout()
    return fig


# ----- Optuna -------------------------------------------------------------------------------


def optuna_figures(study: Any, params: Sequence[str] = ()) -> dict[str, Any]:
    """Optuna's matplotlib plots of a study: optimisation history, parameter importances and
    parallel coordinates (each only where the study has what it needs)."""
    import matplotlib

    if "matplotlib.pyplot" not in __import__("sys").modules:
        matplotlib.use("Agg")
    import optuna
    from optuna.visualization import matplotlib as ovm

    complete = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    figures: dict[str, Any] = {}
    if not complete:
        return figures
    names = sorted({p for t in complete for p in t.params})
    plots = {"history": lambda: ovm.plot_optimization_history(study)}
    if len(complete) >= 2 and names:
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        plots["importances"] = lambda: ovm.plot_param_importances(study, evaluator=evaluator)
        plots["parallel"] = lambda: ovm.plot_parallel_coordinate(study, params=names[:12])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        for key, make in plots.items():
            try:
                axes = make()
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue  # e.g. importances of parameters that never varied
            figures[key] = _figure_of(axes)
    return figures


def _figure_of(axes: Any) -> Any:
    first = axes.flat[0] if isinstance(axes, np.ndarray) else axes
    fig = first.figure
    fig.set_size_inches(7.5, 4.2)
    return fig


def close(fig: Any) -> None:
    """Release a pyplot figure (ours are plain Figures, garbage-collected on their own)."""
    import sys

    if "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt

        plt.close(fig)

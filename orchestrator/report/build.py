"""`medsweep report SWEEP --out report.html`: collect, plot, render, write atomically.

With `plots_dir`, every figure is also written there as PNG, plus the learning curves of every
trial (`curves-<trial>.png`), which the HTML leaves out to stay small for large sweeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.errors import UserError
from orchestrator.report import plots
from orchestrator.report.collect import ReportData, collect
from orchestrator.report.html import page
from orchestrator.results import parquet_io as pio
from orchestrator.results.store import ResultsStore

Figures = dict[str, tuple[bytes, str]]


def build_report(
    store: ResultsStore, sweep: str, out: str | Path, plots_dir: str | Path | None = None
) -> dict[str, Any]:
    """Write the report of `sweep` to `out` (one HTML file); return what was written."""
    start = time.perf_counter()
    out = Path(out)
    if out.is_dir():
        raise UserError("--out names a folder; give a file path such as report.html", source=out)
    data = collect(store, sweep)
    figures = make_figures(data)
    text = page(data, figures, time.time())
    try:
        with pio.atomic_path(out) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write the report: {exc}", source=out) from exc
    written = [str(out)]
    if plots_dir is not None:
        written += write_pngs(data, figures, Path(plots_dir))
    return {
        "sweep": data.sweep,
        "out": str(out),
        "bytes": len(text.encode("utf-8")),
        "figures": sorted(figures),
        "files": written,
        "trials": data.summary["trials"],
        "seconds": round(time.perf_counter() - start, 3),
    }


def make_figures(data: ReportData) -> Figures:
    """The report's figures as PNG bytes with captions; absent data means an absent figure."""
    metric = data.board["metric"]
    best = data.best["run_id"] if data.best else None
    makers: dict[str, tuple[Callable[[], Any], str]] = {
        "overlay": (
            lambda: plots.overlay_curves(data.metrics, metric, best),
            f"{metric} per epoch, every trial (best in red)",
        ),
    }
    if best is not None:
        makers["curves"] = (
            lambda: plots.learning_curves(data.metrics, best, metric),
            f"learning curves of trial {best}",
        )
        makers["schedule"] = (
            lambda: plots.schedule_timeline(data.metrics, best),
            "schedule over epochs (unfrozen stages, alpha, learning rate)",
        )
        makers["roc"] = (lambda: plots.roc_figure(data.predictions), "ROC of the best trial")
        makers["confusion"] = (lambda: _confusion(data), "confusion matrix of the best trial")
        if data.froc_file is not None:
            froc_file = data.froc_file
            makers["froc"] = (lambda: plots.froc(froc_file), f"FROC ({froc_file.name})")
    figures: Figures = {}
    for key, (make, caption) in makers.items():
        fig = make()
        if fig is not None:
            figures[key] = (plots.png_bytes(fig), caption)
    if data.study is not None:
        captions = {
            "history": "Optuna optimisation history",
            "importances": "parameter importances (PED-ANOVA)",
            "parallel": "parallel coordinates of the searched parameters",
        }
        for key, fig in plots.optuna_figures(data.study).items():
            figures[key] = (plots.png_bytes(fig), captions[key])
            plots.close(fig)
    return figures


def _confusion(data: ReportData) -> Any:
    """Detection: the lesion-level figure 4; classification: the test (else val) predictions at
    the 0.5 threshold."""
    if data.lesion_file is not None:
        return plots.lesion_confusion(data.lesion_file)
    for name in sorted(data.predictions, key=lambda n: not n.startswith("test")):
        fig = plots.classification_confusion(data.predictions[name])
        if fig is not None:
            fig.axes[0].set_title(f"{name}: {fig.axes[0].get_title()}", pad=28)
            return fig
    return None


def write_pngs(data: ReportData, figures: Figures, folder: Path) -> list[str]:
    """Every report figure plus each trial's learning curves as PNG files in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for key, (png, _) in figures.items():
        written.append(_write(folder / f"{key}.png", png))
    metric = data.board["metric"]
    trials = data.metrics.loc[data.metrics["parent_run_id"].fillna("") == "", "run_id"].unique()
    for run_id in trials:
        fig = plots.learning_curves(data.metrics, str(run_id), metric)
        if fig is not None:
            written.append(_write(folder / f"curves-{run_id}.png", plots.png_bytes(fig)))
    return written


def _write(path: Path, png: bytes) -> str:
    with pio.atomic_path(path) as tmp:
        tmp.write_bytes(png)
    return str(path)

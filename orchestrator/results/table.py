"""`medsweep results table`: one row per trial (and pseudo-label round) with its variant or
searched settings, its cross-validated metric (seed 002's AUC(CV): the fold mean at the best
epoch) and its test-split metric (AUC(inner_test): the fold ensemble on the test split), plus the
Pearson and Spearman correlation between the two columns — the seed's question of whether CV
predicts test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from orchestrator.errors import UserError
from orchestrator.results.store import ResultsStore


def test_metric(metric: str) -> str:
    """`val_auc` -> `test_auc`: the test split's counterpart of a validation metric."""
    return "test_" + metric.split("_", 1)[1] if "_" in metric else f"test_{metric}"


def _per_round(metrics: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """Per (trial, round): the best epoch's validation metric and the test metric."""
    split, name = metric.split("_", 1) if "_" in metric else ("", metric)
    val = metrics[(metrics["split"] == split) & (metrics["name"] == name)]
    test_name = test_metric(metric).split("_", 1)[1]
    test = metrics[(metrics["split"] == "test") & (metrics["name"] == test_name)]
    keys = ["run_id", "round"]
    cv = val.groupby(keys, dropna=False)["value"].agg("max" if mode == "max" else "min")
    out = cv.rename("cv").to_frame()
    out["test"] = test.groupby(keys, dropna=False)["value"].last()
    return out.reset_index()


def table(store: ResultsStore, sweep: str) -> dict[str, Any]:
    from orchestrator.results.views_common import resolve_sweep

    sweep = resolve_sweep(store, sweep)  # a unique prefix is enough (demo names are timestamped)
    info = store.sweep_info(sweep)
    metric, mode = str(info.get("metric") or ""), str(info.get("mode") or "max")
    runs = store.runs(sweep)
    metrics = store.metrics(sweep)
    trials = metrics[metrics["parent_run_id"].fillna("") == ""]
    scores = _per_round(trials, metric, mode) if len(trials) else pd.DataFrame()
    rows = []
    runs_iter: Any = runs.itertuples(index=False)
    for run in runs_iter:
        mine: Any = scores[scores["run_id"] == run.run_id] if len(scores) else scores
        label = run.variant or _settings(run.params)
        for score in mine.itertuples(index=False) if len(mine) else [None]:
            rows.append(
                {
                    "run_id": run.run_id,
                    "variant": label,
                    "round": None if score is None or pd.isna(score.round) else int(score.round),
                    "cv": None if score is None else _num(score.cv),
                    "test": None if score is None else _num(score.test),
                    "status": run.status,
                }
            )
    return {
        "sweep": sweep,
        "metric": metric,
        "test_metric": test_metric(metric),
        "mode": mode,
        "transductive": bool(info.get("transductive")),
        "rows": rows,
        "correlation": correlation(rows),
    }


def _settings(params: str) -> str:
    values = json.loads(params or "{}")
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in sorted(values.items()))


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _num(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def correlation(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Pearson and Spearman correlation (with p-values) of the cv and test columns."""
    from scipy import stats

    pairs = [(r["cv"], r["test"]) for r in rows if r["cv"] is not None and r["test"] is not None]
    out: dict[str, Any] = {"n": len(pairs), "pearson": None, "spearman": None}
    if len(pairs) < 3 or len({p[0] for p in pairs}) < 2 or len({p[1] for p in pairs}) < 2:
        return out
    cv, test = zip(*pairs, strict=True)
    pearson, spearman = stats.pearsonr(cv, test), stats.spearmanr(cv, test)
    out["pearson"] = {"r": float(pearson.statistic), "p": float(pearson.pvalue)}
    out["spearman"] = {"rho": float(spearman.statistic), "p": float(spearman.pvalue)}
    return out


def render_table(console: Console, data: dict[str, Any]) -> None:
    metric, test = data["metric"], data["test_metric"]
    table = Table(title=f"{data['sweep']}: {metric} (CV) and {test}", title_justify="left")
    table.add_column("trial", style="bold")
    table.add_column("variant / settings", overflow="fold")
    if any(r["round"] is not None for r in data["rows"]):
        table.add_column("round", justify="right")
    table.add_column(f"{metric} (CV)", justify="right", style="magenta")
    table.add_column(test, justify="right", style="cyan")
    table.add_column("status")
    has_round = len(table.columns) == 6
    for r in data["rows"]:
        cells = [r["run_id"], r["variant"] or "—"]
        if has_round:
            cells.append("—" if r["round"] is None else str(r["round"]))
        cells += [_cell(r["cv"]), _cell(r["test"]), r["status"]]
        table.add_row(*cells)
    console.print(table)
    c = data["correlation"]
    if c["pearson"] is None:
        console.print(f"correlation: needs 3 or more trials with both values (have {c['n']})")
    else:
        console.print(
            f"correlation of {metric} (CV) and {test} over {c['n']} rows: Pearson r = "
            f"{c['pearson']['r']:.3f} (p = {c['pearson']['p']:.3g}), Spearman rho = "
            f"{c['spearman']['rho']:.3f} (p = {c['spearman']['p']:.3g})"
        )
    if data["transductive"]:
        console.print(
            "[yellow]transductive: pseudo-labels were drawn from the test split itself[/yellow]"
        )


def _cell(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.4f}"


def write_csv(data: dict[str, Any], path: Path | None) -> str:
    frame = pd.DataFrame(data["rows"]).rename(
        columns={"cv": f"{data['metric']}_cv", "test": data["test_metric"]}
    )
    text = frame.to_csv(index=False)
    if path is not None:
        path.write_text(text)
    return text


def scatter(data: dict[str, Any], path: Path) -> Path:
    """The CV-versus-test scatter (one point per row, labelled with the variant)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tasks.common.io import atomic_save_figure

    points = [r for r in data["rows"] if r["cv"] is not None and r["test"] is not None]
    if not points:
        raise UserError("no trial has both a CV and a test value to plot", where="--plot")
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter([p["cv"] for p in points], [p["test"] for p in points], color="tab:blue")
    for p in points:
        label = p["variant"] or p["run_id"]
        label += f" r{p['round']}" if p["round"] is not None else ""
        ax.annotate(
            label, (p["cv"], p["test"]), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
    lo = min(min(p["cv"], p["test"]) for p in points)
    hi = max(max(p["cv"], p["test"]) for p in points)
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
    ax.set_xlabel(f"{data['metric']} (CV)")
    ax.set_ylabel(data["test_metric"])
    c = data["correlation"]
    if c["pearson"] is not None:
        ax.set_title(f"Pearson r={c['pearson']['r']:.2f}, Spearman ρ={c['spearman']['rho']:.2f}")
    return atomic_save_figure(fig, path)

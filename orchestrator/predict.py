"""`medsweep predict`: per-case predictions of a stored run (or a sweep's best trial) on a new
manifest. A cross-validated trial predicts with its fold ensemble (the folds of its last round),
combined by the task's `ensemble` (mean probability); test-time augmentation applies as in
training. Output tables pass the store's privacy filter, like every file medsweep writes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from orchestrator.errors import UserError


def _trial(store: Any, ident: str) -> tuple[str, pd.Series]:
    """The runs row of a trial: a sweep's best (by name or a unique prefix), or a run id (or a
    unique prefix of one)."""
    sweeps = [s for s in store.sweeps() if s.startswith(ident)]
    if ident in sweeps or len(sweeps) == 1:
        ident = ident if ident in sweeps else sweeps[0]
        best = store.best(ident, n=1)
        if best.empty:
            raise UserError(f"sweep {ident!r} has no finished trial to predict with", where="RUN")
        return ident, best.iloc[0]
    sweep, run_id = store.resolve_run(ident)
    runs = store.runs(sweep, folds=True)
    return sweep, runs[runs["run_id"] == run_id].iloc[0]  # a fold run predicts alone


def weight_files(store: Any, sweep: str, row: pd.Series) -> list[Path]:
    """The best-epoch weights that make the trial's prediction (one per fold of its last round)."""
    runs = store.runs(sweep, folds=True)
    folds = runs[runs["parent_run_id"].fillna("") == row["run_id"]]
    if len(folds):
        last = folds["round"].max()
        if pd.notna(last):
            folds = folds[folds["round"] == last]
        rows = list(folds.itertuples(index=False))
    else:
        rows = [row]
    files = [store.root / str(r.checkpoint) for r in rows if getattr(r, "checkpoint", "")]
    missing = [str(f) for f in files if not f.is_file()]
    if not files or missing:
        raise UserError(
            f"run {row['run_id']} has no stored best weights ({', '.join(missing) or 'none'}); "
            "was it pruned or did it fail before its first epoch?",
            where="RUN",
        )
    return files


def predict(
    store_root: str, ident: str, data: Path, out: Path, device: str = "cpu"
) -> dict[str, Any]:
    import torch

    from orchestrator.config import from_dict
    from orchestrator.privacy import store_secret, table_filter
    from orchestrator.registry import get_task
    from orchestrator.results import ResultsStore
    from tasks.base import RunContext

    store = ResultsStore(store_root)
    sweep, row = _trial(store, ident)
    _check_output(out)
    if not Path(data).is_file() and not Path(data).is_dir():
        raise UserError("no such file or folder", source=data, where="--data")
    config = from_dict(json.loads(row["config"]), source=f"{sweep}/{row['run_id']} (stored)")
    task = get_task(config.experiment.task)(config.task)
    task.setup_inference(RunContext(run_id="predict", seed=0, device=device))
    tables = []
    files = weight_files(store, sweep, row)
    for path in files:
        task.load_model_state(torch.load(path, map_location="cpu", weights_only=True))
        tables.append(task.predict(Path(data)))
    preds = task.ensemble(tables) if len(tables) > 1 else tables[0]
    privacy = table_filter(
        config.to_dict().get("privacy") or {}, store_secret(store.root), Path(data).resolve().parent
    )
    task.write_predictions(privacy(preds), out)
    return {
        "sweep": sweep,
        "run_id": row["run_id"],
        "models": len(files),
        "cases": len(preds),
        "out": str(out),
    }


def _check_output(out: Path) -> None:
    parent = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise UserError("is a folder; give a file name", source=out, where="--out")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UserError(
            "cannot write here (no such folder, or no permission)", source=out, where="--out"
        )

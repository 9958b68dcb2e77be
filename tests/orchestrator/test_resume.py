"""Resuming: a config that differs from the stored one is refused, naming the fields; lineage
references are pinned by run id and checksum and a changed file is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.config import from_dict, load
from orchestrator.errors import ConfigError, UserError
from orchestrator.lineage import resolve_artifacts, sha256
from orchestrator.results import ResultsStore
from orchestrator.resume import check_same_config, stored_info


def _write(tmp_path: Path, csv: Path) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(
        f"name: r\ntask: fundus\ndata: {{manifest: {csv}}}\n"
        f"train: {{epochs: 2, lr: 1.0e-3}}\nstore: {{root: {tmp_path / 'store'}}}\n"
    )
    return path


def test_resume_refuses_a_changed_config_naming_the_fields(
    tmp_path: Path, fundus_csv: Path
) -> None:
    config = load(_write(tmp_path, fundus_csv))
    store = ResultsStore(tmp_path / "store")
    store.init_sweep(
        "r",
        {
            "command": "sweep",
            "task": "fundus",
            "metric": "val_auc",
            "mode": "max",
            "config": config.to_dict(),
        },
    )
    info = stored_info(store.sweep_dir("r"))
    check_same_config(info, config)  # the same config resumes
    changed = load(_write(tmp_path, fundus_csv), {"train.lr": 3e-3, "train.epochs": 5})
    with pytest.raises(UserError, match=r"differs .* in: train\.epochs, train\.lr"):
        check_same_config(info, changed)
    elsewhere = load(_write(tmp_path, fundus_csv), {"store.root": str(tmp_path / "other")})
    check_same_config(info, elsewhere)  # the store may be reached by another path


def _ssl_store(tmp_path: Path) -> tuple[ResultsStore, Path]:
    store = ResultsStore(tmp_path / "store")
    store.init_sweep(
        "ssl", {"command": "run", "task": "simsiam", "metric": "val_loss", "mode": "min"}
    )
    store.write_runs("ssl", [{"run_id": "a1", "status": "completed", "objective": 0.1}])
    weights = store.artifacts_dir("ssl", "a1") / "backbone.pt"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"weights v1")
    return store, weights


def _detection(tmp_path: Path) -> dict[str, object]:
    return {
        "name": "det",
        "task": "detection",
        "store": {"root": str(tmp_path / "store")},
        "data": {"train": "t.json", "val": "v.json"},
        "model": {"weights_from": {"sweep": "ssl"}},
    }


def test_lineage_is_pinned_and_a_changed_file_is_refused(tmp_path: Path) -> None:
    _, weights = _ssl_store(tmp_path)
    config = resolve_artifacts(from_dict(_detection(tmp_path)))
    ref = config.task.model.weights_from  # type: ignore[attr-defined]
    assert ref.run_id == "a1" and ref.sha256 == sha256(weights)
    assert Path(ref.path) == weights.resolve()
    pinned = json.loads(json.dumps(config.to_dict()))
    again = resolve_artifacts(from_dict(_detection(tmp_path)), pinned=pinned)
    assert again.task.model.weights_from == ref  # type: ignore[attr-defined]
    weights.write_bytes(b"weights v2")
    with pytest.raises(ConfigError, match="changed since the sweep started"):
        resolve_artifacts(from_dict(_detection(tmp_path)), pinned=pinned)


def test_searching_a_lineage_reference_is_refused(tmp_path: Path) -> None:
    raw = _detection(tmp_path)
    raw["sweep"] = {"space": {"model.weights_from.sweep": {"type": "choice", "values": ["a"]}}}
    with pytest.raises(ConfigError, match="lineage reference cannot be searched"):
        from_dict(raw)

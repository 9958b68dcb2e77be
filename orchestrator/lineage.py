"""Multi-stage lineage: resolve `ArtifactRef` fields to files of an earlier sweep's best run.

A resolved reference is pinned: its path, run id and sha256 go into the resolved config of every
run. A resumed sweep takes the pins stored with it and checks that the file is unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from orchestrator.config import Config
from orchestrator.errors import ConfigError
from tasks.base import ArtifactRef


def _refs(model: BaseModel, prefix: str = "") -> Iterator[tuple[str, ArtifactRef]]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        path = f"{prefix}{name}"
        if isinstance(value, ArtifactRef):
            yield path, value
        elif isinstance(value, BaseModel):
            yield from _refs(value, path + ".")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pinned(pinned: dict[str, Any] | None, field: str) -> dict[str, Any] | None:
    node: Any = pinned
    for part in field.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node if isinstance(node, dict) and node.get("path") else None


def resolve_artifacts(config: Config, pinned: dict[str, Any] | None = None) -> Config:
    """Fill in and pin every ArtifactRef of the task config (driver side).

    With `pinned` (the config stored with a sweep being resumed) the stored pins are reused and
    the file must still have the stored checksum.
    """
    overrides: dict[str, Any] = {}
    for field, ref in _refs(config.task):
        stored = _pinned(pinned, field)
        if stored is not None:
            _check_unchanged(config, field, stored)
            overrides.update({f"{field}.{k}": stored[k] for k in ("path", "run_id", "sha256")})
        elif not ref.path:
            overrides.update(_resolve(config, field, ref))
    return config.with_overrides(overrides) if overrides else config


def _resolve(config: Config, field: str, ref: ArtifactRef) -> dict[str, Any]:
    from orchestrator.results import ResultsStore

    store = ResultsStore(ref.store or config.experiment.store.root)
    where = f"field {field}.sweep"
    if ref.sweep not in store.sweeps():
        raise ConfigError(
            f"no sweep {ref.sweep!r} in results store {store.root}",
            source=config.source,
            where=where,
        )
    best = store.best(ref.sweep, n=1)
    if best.empty:
        raise ConfigError(
            f"sweep {ref.sweep!r} has no finished run to take {ref.file!r} from",
            source=config.source,
            where=where,
        )
    run_id = str(best["run_id"].iloc[0])
    path = store.artifacts_dir(ref.sweep, run_id) / ref.file
    if not path.is_file():
        raise ConfigError(
            f"best run {run_id} of sweep {ref.sweep!r} has no artifact {ref.file!r} ({path})",
            source=config.source,
            where=f"field {field}.file",
        )
    return {
        f"{field}.path": str(path.resolve()),
        f"{field}.run_id": run_id,
        f"{field}.sha256": sha256(path),
    }


def _check_unchanged(config: Config, field: str, stored: dict[str, Any]) -> None:
    path = Path(stored["path"])
    if not path.is_file():
        raise ConfigError(
            f"the pinned file {path} (run {stored.get('run_id')}) is gone",
            source=config.source,
            where=f"field {field}",
        )
    if stored.get("sha256") and sha256(path) != stored["sha256"]:
        raise ConfigError(
            f"the pinned file {path} changed since the sweep started (sha256 differs); "
            "a resumed sweep uses exactly the file it started with",
            source=config.source,
            where=f"field {field}",
        )

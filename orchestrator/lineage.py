"""Multi-stage lineage: resolve `ArtifactRef` fields to files of an earlier sweep's best run."""

from __future__ import annotations

from collections.abc import Iterator
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


def resolve_artifacts(config: Config) -> Config:
    """Fill in `path` of every unresolved ArtifactRef in the task config (driver side)."""
    from orchestrator.results import ResultsStore

    overrides: dict[str, Any] = {}
    for field, ref in _refs(config.task):
        if ref.path:
            continue
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
        overrides[f"{field}.path"] = str(path.resolve())
    return config.with_overrides(overrides) if overrides else config

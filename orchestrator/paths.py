"""Make every path of a config absolute on the driver, before any trial starts.

A relative path in a config means "relative to where the user ran the command" (under
`ray job submit`: the job's unpacked working directory on the head node). Trials, fold runs and
their Ray Train workers run in other processes, often on other nodes with another current
directory, so they must only ever see absolute paths.

What is resolved:

* the orchestrator's own path fields, always: `store.root`, `pseudo.pool` (unless ``test``), a
  relative SQLite `sweep.storage` URL, and the `store` of every `ArtifactRef`;
* in the task's sections (which the orchestrator does not know by name): every string value that
  names an existing file or folder relative to the current directory (or under ``~``).

Why by existence rather than by field name: task configs are free to name their fields, so no
list of names is complete, while every input a trial reads exists on the driver by the time the
task's `check_data` has passed (demo data is synthesised there first; `execute` resolves again
after it). Three guards keep non-paths out: `Literal` and non-string fields are skipped,
`ArtifactRef` sections are skipped (their `file` is relative to the earlier sweep's artifacts),
and a resolved value that the config model rejects (e.g. a timm backbone name that is also a
folder name here) keeps its original value. URIs (``s3://``, ``hf-hub:``) are never touched.
"""

from __future__ import annotations

import copy
import os
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from orchestrator.config import Config, from_dict
from orchestrator.errors import UserError
from tasks.base import ArtifactRef

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_SQLITE = re.compile(r"^sqlite:///(?!/)(?P<path>.+)$")
Location = tuple[str | int, ...]


def is_uri(value: str) -> bool:
    """``s3://bucket``, ``hf-hub:timm/x``, ``postgresql://...`` (not a local path)."""
    return bool(_SCHEME.match(value)) and not re.match(r"^[A-Za-z]:[\\/]", value)


def absolute(value: str, cwd: Path) -> str:
    """`value` as an absolute, normalised local path (``~`` expanded) relative to `cwd`."""
    path = Path(value).expanduser()
    return os.path.normpath(path if path.is_absolute() else cwd / path)


def resolve_paths(config: Config, cwd: Path | None = None) -> Config:
    """The config with every path absolute (see the module docstring); idempotent."""
    cwd = Path.cwd() if cwd is None else cwd
    raw = config.to_dict()
    fixed = copy.deepcopy(raw)
    _resolve_orchestrator(fixed, cwd)
    candidates = list(_task_candidates(config.task, raw, cwd))
    for loc, value in candidates:
        _set(fixed, loc, value)
    if fixed == raw:
        return config
    try:
        return from_dict(fixed, source=config.source, check_sweep=False)
    except UserError:
        pass
    # Some resolved value is not a path after all: keep each one only if the config accepts it.
    for loc, value in candidates:
        _set(fixed, loc, _get(raw, loc))
        trial = copy.deepcopy(fixed)
        _set(trial, loc, value)
        try:
            from_dict(trial, source=config.source, check_sweep=False)
        except UserError:
            continue
        fixed = trial
    return config if fixed == raw else from_dict(fixed, source=config.source, check_sweep=False)


def _resolve_orchestrator(raw: dict[str, Any], cwd: Path) -> None:
    store = raw["store"]
    if not is_uri(store["root"]):
        store["root"] = absolute(store["root"], cwd)
    pseudo = raw.get("pseudo")
    if pseudo and pseudo.get("pool") not in (None, "test") and not is_uri(pseudo["pool"]):
        pseudo["pool"] = absolute(pseudo["pool"], cwd)
    sweep = raw["sweep"]
    match = _SQLITE.match(sweep.get("storage") or "")
    if match and match.group("path") != ":memory:":
        sweep["storage"] = "sqlite:///" + absolute(match.group("path"), cwd)


def _task_candidates(
    model: BaseModel, raw: dict[str, Any], cwd: Path
) -> Iterator[tuple[Location, str]]:
    """(location, absolute path) of each relative string in the task's sections that names an
    existing file or folder, and of each `ArtifactRef.store`."""
    for loc, text in _texts(model, raw):
        path = absolute(text, cwd)
        if text != path and not is_uri(text) and os.path.exists(path):
            yield loc, path
    for loc, ref in _refs(model):
        if ref.store and not is_uri(ref.store):
            yield (*loc, "store"), absolute(ref.store, cwd)


def _texts(model: BaseModel, raw: dict[str, Any]) -> Iterator[tuple[Location, str]]:
    """Every string of a model's free-text fields (not inside an ArtifactRef), with its place."""
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, ArtifactRef) or name not in raw or not _may_hold_text(info.annotation):
            continue
        for loc, text in _strings(raw[name], value):
            yield (name, *loc), text


def _strings(raw: Any, value: Any) -> Iterator[tuple[Location, str]]:
    if isinstance(value, BaseModel) and isinstance(raw, dict):
        yield from _texts(value, raw)
    elif isinstance(raw, str):
        yield (), raw
    elif isinstance(raw, list):
        items = value if isinstance(value, list) else [None] * len(raw)
        for i, (item_raw, item) in enumerate(zip(raw, items, strict=False)):
            for loc, text in _strings(item_raw, item):
                yield (i, *loc), text


def _refs(model: BaseModel) -> Iterator[tuple[Location, ArtifactRef]]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, ArtifactRef):
            yield (name,), value
        elif isinstance(value, BaseModel):
            for loc, ref in _refs(value):
                yield (name, *loc), ref


def _may_hold_text(annotation: Any) -> bool:
    """Whether a field can hold free text (not only a Literal, number, flag or dict key)."""
    if annotation is str:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Literal or annotation in (int, float, bool, type(None)):
        return False
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    if origin is dict:
        return False
    if isinstance(annotation, types.UnionType) or origin in (typing.Union, list, tuple):
        return any(_may_hold_text(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _may_hold_text(typing.get_args(annotation)[0])
    return False


def _get(raw: Any, loc: Location) -> Any:
    for part in loc:
        raw = raw[part]
    return raw


def _set(raw: Any, loc: Location, value: Any) -> None:
    _get(raw, loc[:-1])[loc[-1]] = value


def path_values(config: Config) -> list[tuple[str, str]]:
    """(dotted field, path) of every absolute local path in the config's task sections and
    `pseudo.pool`: what every node that runs a trial must see."""
    out: list[tuple[str, str]] = []
    pool = config.experiment.pseudo.pool if config.experiment.pseudo else "test"
    if pool != "test" and os.path.isabs(pool):
        out.append(("pseudo.pool", pool))
    for name in type(config.task).model_fields:
        for loc, text in _all_strings(getattr(config.task, name)):
            if os.path.isabs(text):
                out.append((".".join(str(p) for p in (name, *loc)), text))
    return out


def _all_strings(value: Any) -> Iterator[tuple[Location, str]]:
    if isinstance(value, str):
        yield (), value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            for loc, text in _all_strings(getattr(value, name)):
                yield (name, *loc), text
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            for loc, text in _all_strings(item):
                yield (i, *loc), text


T = typing.TypeVar("T")


def with_checked_task(config: Config, check: typing.Callable[[Config], T]) -> tuple[Config, T]:
    """`check(config)` (build the task, check its data), then resolve paths again: checking may
    have created inputs (demo data) that a relative path names; then check the resolved config."""
    task = check(config)
    resolved = resolve_paths(config)
    return (config, task) if resolved is config else (resolved, check(resolved))

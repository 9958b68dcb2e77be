"""Experiment configs: YAML -> validated pydantic models, `--set` overrides, resolved dumps.

The top level of an experiment YAML holds the orchestrator's sections (below) and the task's own
sections (`data`, `model`, `train`, ...), which the task's config model validates. Unknown keys
are errors everywhere.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from orchestrator.errors import ConfigError, UserError
from orchestrator.space import Dimension, corners
from tasks.base import StrictModel, TaskConfig

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Resources(StrictModel):
    """Ray Train workers of one run (one trial)."""

    workers: int = Field(1, ge=1, description="Ray Train workers (DDP ranks) per run.")
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0, description="Fractional values pack runs per GPU.")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"

    @field_validator("gpus_per_worker")
    def _fraction_or_whole(cls, v: float) -> float:
        if v > 1 and not float(v).is_integer():
            raise ValueError("more than one GPU per worker must be a whole number")
        return v


class Checkpointing(StrictModel):
    num_to_keep: int | None = Field(2, ge=1, description="Best checkpoints kept per run.")


class Scheduler(StrictModel):
    type: Literal["none", "asha"] = "none"
    grace_period: int = Field(1, ge=1, description="Epochs before ASHA may stop a trial.")
    reduction_factor: float = Field(2.0, gt=1)


class Sweep(StrictModel):
    metric: str | None = Field(None, description="Defaults to the task's metric (e.g. val_auc).")
    mode: Literal["max", "min"] | None = None
    objective: Literal["best", "last"] = Field(
        "best", description="Optuna value: the best epoch's metric or the last epoch's."
    )
    num_samples: int = Field(8, ge=1)
    max_concurrent: int = Field(1, ge=1)
    sampler: Literal["tpe", "random"] = "tpe"
    seed: int | None = Field(None, description="Sampler seed; defaults to the experiment seed.")
    storage: str | None = Field(
        None, description="Optuna RDB URL; default a journal file in the sweep folder."
    )
    scheduler: Scheduler = Field(default_factory=Scheduler)
    space: dict[str, Dimension] = Field(default_factory=dict)


class Store(StrictModel):
    root: str = Field("medsweep_results", description="Results store folder (shared on clusters).")


class Experiment(StrictModel):
    """The orchestrator's part of an experiment config."""

    name: str
    task: str
    seed: int = 0
    description: str = ""
    resources: Resources = Field(default_factory=Resources)
    checkpoint: Checkpointing = Field(default_factory=Checkpointing)
    sweep: Sweep = Field(default_factory=Sweep)
    store: Store = Field(default_factory=Store)

    @field_validator("name")
    def _safe_name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("use letters, digits, '.', '_' and '-' only")
        return v


ORCHESTRATOR_KEYS = frozenset(Experiment.model_fields)


@dataclass(frozen=True)
class Config:
    """A validated experiment: the orchestrator's part, the task's part, and where it came from."""

    experiment: Experiment
    task: TaskConfig
    source: str

    @property
    def metric(self) -> str:
        from orchestrator.registry import get_task

        return self.experiment.sweep.metric or get_task(self.experiment.task).default_metric

    @property
    def mode(self) -> Literal["max", "min"]:
        from orchestrator.registry import get_task

        return self.experiment.sweep.mode or get_task(self.experiment.task).default_mode

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved config (defaults filled in), JSON-compatible."""
        out = self.experiment.model_dump(mode="json")
        out.update(self.task.model_dump(mode="json"))
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def with_overrides(self, overrides: dict[str, Any], source: str | None = None) -> Config:
        """A new validated config with dotted-path overrides applied."""
        raw = self.to_dict()
        for key, value in overrides.items():
            set_path(raw, key, value, source=source or self.source)
        return from_dict(raw, source=source or self.source)


def parse_value(text: str) -> Any:
    """A `--set` value: YAML scalars/lists, with `1e-3` read as a float (YAML 1.1 would not)."""
    value = yaml.safe_load(text) if text.strip() else ""
    if isinstance(value, str):
        try:
            return float(value) if re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value) else value
        except ValueError:
            return value
    return value


def set_path(raw: dict[str, Any], dotted: str, value: Any, *, source: str) -> None:
    """Set `a.b.c` in a nested dict, creating sections as needed."""
    parts = dotted.split(".")
    if not all(parts):
        raise ConfigError(f"bad field path {dotted!r}", source=source, where="--set")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise ConfigError(f"{where} is a value, not a section", source=source, where=dotted)
        node = child
    node[parts[-1]] = value


def parse_overrides(items: list[str] | None, source: str = "--set") -> dict[str, Any]:
    """`["train.lr=0.01", ...]` -> `{"train.lr": 0.01}`."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"expected KEY=VALUE, got {item!r}", where=source)
        out[key.strip()] = parse_value(text)
    return out


def _validation_error(err: ValidationError, source: str) -> ConfigError:
    """One ConfigError listing every problem as `field a.b: what was expected`."""
    problems = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-"))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in e and not isinstance(e["input"], dict | list):
            msg += f" (got {e['input']!r})"
        problems.append((f"field {loc or '(top level)'}", msg))
    if len(problems) == 1:
        return ConfigError(problems[0][1], source=source, where=problems[0][0])
    return ConfigError("; ".join(f"{w}: {m}" for w, m in problems), source=source)


def from_dict(raw: dict[str, Any], source: str = "<config>") -> Config:
    """Validate a raw config dict (orchestrator part + the task's part)."""
    from orchestrator.registry import get_task

    if not isinstance(raw, dict):
        raise ConfigError("expected a mapping of sections at the top level", source=source)
    raw = copy.deepcopy(raw)
    ours = {k: v for k, v in raw.items() if k in ORCHESTRATOR_KEYS}
    theirs = {k: v for k, v in raw.items() if k not in ORCHESTRATOR_KEYS}
    try:
        experiment = Experiment.model_validate(ours)
    except ValidationError as err:
        raise _validation_error(err, source) from None
    try:
        task_cls = get_task(experiment.task)
    except UserError as err:
        raise ConfigError(err.message, source=source, where="field task") from None
    try:
        task_cfg = task_cls.config_model.model_validate(theirs)
    except ValidationError as err:
        raise _validation_error(err, source) from None
    config = Config(experiment=experiment, task=task_cfg, source=source)
    _check_space(config)
    return config


def load(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read, override and validate an experiment YAML file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError("config file not found", source=path) from None
    except OSError as err:
        raise ConfigError(f"cannot read config file: {err.strerror}", source=path) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"not valid YAML: {problem}", source=path, where=where) from None
    if not isinstance(raw, dict):
        raise ConfigError("expected a mapping of sections at the top level", source=path)
    for key, value in (overrides or {}).items():
        set_path(raw, key, value, source=str(path))
    return from_dict(raw, source=str(path))


def _check_space(config: Config) -> None:
    """Every searched key must address a config field and accept the values the space yields."""
    base = config.to_dict()
    for key, dim in config.experiment.sweep.space.items():
        if key.split(".")[0] in {"sweep", "store", "name", "task"}:
            raise ConfigError(
                f"{key} cannot be searched", source=config.source, where=f"field sweep.space.{key}"
            )
        if _lookup(base, key) is _MISSING:
            raise ConfigError(
                "no such config field", source=config.source, where=f"field sweep.space.{key}"
            )
        for value in corners(dim):
            raw = copy.deepcopy(base)
            raw["sweep"]["space"] = {}
            try:
                set_path(raw, key, value, source=config.source)
                from_dict(raw, source=config.source)
            except UserError as err:
                msg = f"value {value!r} is not accepted by the config: {err.message}"
                raise ConfigError(
                    msg, source=config.source, where=f"field sweep.space.{key}"
                ) from None


_MISSING = object()


def _lookup(raw: dict[str, Any], dotted: str) -> Any:
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def dumps(config: Config) -> str:
    """Canonical JSON of the resolved config (stored with every run)."""
    return json.dumps(config.to_dict(), sort_keys=True)

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
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

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
    custom: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources per worker, e.g. {node_b: 1} (`ray start --resources`).",
    )

    @field_validator("custom")
    def _custom_names(cls, v: dict[str, float]) -> dict[str, float]:
        builtin = {"CPU", "GPU", "memory", "object_store_memory"} & set(v)
        if builtin:
            raise ValueError(f"{sorted(builtin)[0]} is not a custom resource; use its own field")
        if any(amount <= 0 for amount in v.values()):
            raise ValueError("amounts must be greater than 0")
        return v

    @field_validator("gpus_per_worker")
    def _fraction_or_whole(cls, v: float) -> float:
        if v > 1 and not float(v).is_integer():
            raise ValueError("more than one GPU per worker must be a whole number")
        return v

    @model_validator(mode="after")
    def _ranks_on_whole_gpus(self) -> Resources:
        # Ray packs fractions onto one card, and NCCL refuses two ranks of a process group on
        # one GPU ("Duplicate GPU detected"): fractions pack whole runs, never a run's ranks.
        if self.workers > 1 and 0 < self.gpus_per_worker < 1:
            raise ValueError(
                f"gpus_per_worker: {self.gpus_per_worker:g} with workers: {self.workers} would "
                "put two DDP ranks on one GPU, which NCCL refuses; give each worker whole GPUs "
                "(gpus_per_worker: 1), or use workers: 1 to pack whole runs onto a GPU"
            )
        return self


class Checkpointing(StrictModel):
    num_to_keep: int = Field(
        1, ge=1, description="Latest resume checkpoints kept per run while it trains."
    )
    keep_completed: bool = Field(
        False,
        description="Keep a finished run's resume checkpoints (its best weights are always "
        "kept with its artifacts).",
    )


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
    num_samples: int = Field(8, ge=1, description="Trials (grid sweeps: one per grid point).")
    max_concurrent: int = Field(1, ge=1)
    sampler: Literal["tpe", "random", "grid"] = Field(
        "tpe", description="grid: every variant (or point of a finite space) exactly once."
    )
    seed: int | None = Field(None, description="Sampler seed; defaults to the experiment seed.")
    storage: str | None = Field(
        None, description="Optuna RDB URL; default a journal file in the sweep folder."
    )
    scheduler: Scheduler = Field(default_factory=Scheduler)
    space: dict[str, Dimension] = Field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Grid sweeps: named sets of dotted overrides of the base config, one trial "
        "each (seed 002's experiments 000-029).",
    )

    @model_validator(mode="after")
    def _grid(self) -> Sweep:
        if self.variants and self.sampler != "grid":
            raise ValueError("variants need sampler: grid")
        if self.variants and self.space:
            raise ValueError("a grid sweep takes variants or a space, not both")
        if self.sampler == "grid" and not self.variants and not self.space:
            raise ValueError("sampler: grid needs variants or a space")
        if self.sampler == "grid" and self.space:
            from orchestrator.space import grid

            grid(self.space)  # ValueError names a continuous dimension
        bad = [n for n in self.variants if not NAME_RE.match(str(n))]
        if bad:
            raise ValueError(f"variant name {bad[0]!r}: use letters, digits, '.', '_' and '-'")
        return self


class Store(StrictModel):
    root: str = Field("medsweep_results", description="Results store folder (shared on clusters).")

    @field_validator("root")
    def _a_folder(cls, v: str) -> str:
        path = Path(v).expanduser()
        if path.exists() and not path.is_dir():
            raise ValueError(f"{v} is a file, not a folder; give a folder (created if missing)")
        return v


class CrossValidation(StrictModel):
    """Every trial trains `folds` fold runs; the test split and folds are made once per sweep."""

    folds: int = Field(4, ge=1, description="k; 1 = one hold-out validation split.")
    test_fraction: float = Field(
        0.0, ge=0, lt=1, description="Held-out test split (share of patients); 0 = none."
    )
    val_fraction: float = Field(0.25, gt=0, lt=1, description="Validation share when folds = 1.")
    group_by: str | None = Field(
        "patient_id", description="Case column that keeps a patient on one side of every split."
    )
    stratify: bool = Field(True, description="Stratify folds and the test split by label.")
    seed: int = Field(0, description="Split seed; fixed for the sweep (a resume checks it).")
    parallel: Literal["auto", "always", "never"] = Field(
        "auto", description="Run a trial's folds at once (auto: when the cluster has room)."
    )
    split_column: str | None = Field(
        None, description="Use this case column as the split (0..k-1, test, train) instead."
    )


class PseudoLabels(StrictModel):
    """Seed 002's pseudo-label rounds: the fold ensemble labels a pool, then training repeats."""

    rounds: int = Field(0, ge=0, description="Pseudo-label rounds after round 0.")
    high: float = Field(0.98, gt=0, le=1, description="Scores >= high become label 1.")
    low: float = Field(0.02, ge=0, lt=1, description="Scores <= low become label 0.")
    pool: str = Field(
        "test", description="'test' (transductive, as the seed) or a manifest of unlabelled cases."
    )
    objective: Literal["best", "last"] = Field(
        "best", description="Optuna value: the best round's objective or the last round's."
    )

    @model_validator(mode="after")
    def _order(self) -> PseudoLabels:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class Privacy(StrictModel):
    pseudonymise: bool = Field(
        True, description="Replace patient ids in written tables by a keyed hash (HMAC)."
    )
    relative_paths: bool = Field(True, description="Write image paths relative to the data root.")


class Failure(StrictModel):
    max_retries: int = Field(
        1, ge=0, description="Restarts of a run from its last checkpoint after a worker dies."
    )


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
    cv: CrossValidation | None = Field(None, description="Cross-validated trials (and test split).")
    pseudo: PseudoLabels | None = Field(None, description="Pseudo-label rounds (needs cv).")
    failure: Failure = Field(default_factory=Failure)
    privacy: Privacy = Field(default_factory=Privacy)

    @model_validator(mode="after")
    def _pseudo_needs_test_or_pool(self) -> Experiment:
        p = self.pseudo
        if p is not None and p.rounds > 0 and self.cv is None:
            raise ValueError("pseudo-label rounds need a `cv` section (the fold ensemble labels)")
        cv = self.cv
        no_test = cv is not None and cv.test_fraction <= 0 and cv.split_column is None
        if p is not None and p.rounds > 0 and p.pool == "test" and no_test:
            raise ValueError("pseudo.pool 'test' needs a test split (cv.test_fraction > 0)")
        return self

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

    def with_overrides(
        self, overrides: dict[str, Any], source: str | None = None, *, check_sweep: bool = True
    ) -> Config:
        """A new validated config with dotted-path overrides applied."""
        raw = self.to_dict()
        for key, value in overrides.items():
            set_path(raw, key, value, source=source or self.source)
        return from_dict(raw, source=source or self.source, check_sweep=check_sweep)


def parse_value(text: str, where: str = "--set") -> Any:
    """A `--set` value: YAML scalars/lists, with `1e-3` read as a float (YAML 1.1 would not)."""
    from orchestrator import yaml_io

    value = yaml_io.loads(text, "--set", where=where) if text.strip() else ""
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
        out[key.strip()] = parse_value(text, where=f"value of {key.strip()}")
    return out


def _validation_error(err: ValidationError, source: str) -> ConfigError:
    """One ConfigError listing every problem as `field a.b: what was expected`."""
    problems = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-"))
        msg = e["msg"]
        if e["type"] == "value_error":  # our validators' own sentence, without pydantic's tag
            msg = str(e.get("ctx", {}).get("error", msg))
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in e and not isinstance(e["input"], dict | list):
            msg += f" (got {e['input']!r})"
        problems.append((f"field {loc or '(top level)'}", msg))
    if len(problems) == 1:
        return ConfigError(problems[0][1], source=source, where=problems[0][0])
    return ConfigError("; ".join(f"{w}: {m}" for w, m in problems), source=source)


def from_dict(raw: dict[str, Any], source: str = "<config>", *, check_sweep: bool = True) -> Config:
    """Validate a raw config dict (orchestrator part + the task's part).

    `check_sweep` also checks the search space and grid variants against the config (once, at
    the user's boundary; a trial's own config skips it).
    """
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
    if check_sweep:
        _check_space(config)
        _check_variants(config)
    return config


def load(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read, override and validate an experiment YAML file."""
    from orchestrator import yaml_io

    path = Path(path)
    raw = yaml_io.load_file(path)  # UTF-8, no duplicate keys, no tags: ConfigError otherwise
    if not isinstance(raw, dict):
        raise ConfigError("expected a mapping of sections at the top level", source=path)
    for key, value in (overrides or {}).items():
        set_path(raw, key, value, source=str(path))
    return from_dict(raw, source=str(path))


NOT_SEARCHABLE = frozenset({"sweep", "store", "name", "task", "cv", "failure", "privacy"})


def _check_space(config: Config) -> None:
    """Every searched key must address a config field and accept the values the space yields.

    Each value is validated against its field alone (linear in the size of the space); the
    whole config is validated at the first and last value, for checks across fields.
    """
    base = config.to_dict()
    refs = _artifact_fields(config.task)
    for key, dim in config.experiment.sweep.space.items():
        where = f"field sweep.space.{key}"
        if key.split(".")[0] in NOT_SEARCHABLE:
            raise ConfigError(f"{key} cannot be searched", source=config.source, where=where)
        if any(key == r or key.startswith(r + ".") for r in refs):
            raise ConfigError(
                "a lineage reference cannot be searched: a sweep pins one file to start from",
                source=config.source,
                where=where,
            )
        if _lookup(base, key) is _MISSING:
            raise ConfigError("no such config field", source=config.source, where=where)
        values = corners(dim)
        owner = _owner(config, key)
        for value in values if owner is not None else []:
            try:  # validate_assignment runs the field's and its model's validators
                setattr(owner.model_copy(), key.rsplit(".", 1)[-1], value)  # type: ignore[union-attr]
            except ValidationError as err:
                raise ConfigError(
                    f"value {value!r} is not accepted by the config: {err.errors()[0]['msg']}",
                    source=config.source,
                    where=where,
                ) from None
        ends = {repr(v): v for v in (values[0], values[-1])} if owner is not None else None
        for value in values if ends is None else ends.values():
            _check_whole(config, base, key, value, where)


def _check_variants(config: Config) -> None:
    """Every variant's overrides address config fields and give a valid config."""
    sw = config.experiment.sweep
    if not sw.variants:
        return
    if sw.sampler == "grid" and not sw.space:
        base = config.to_dict()
        for name, overrides in sw.variants.items():
            for key in overrides:
                where = f"field sweep.variants.{name}.{key}"
                if key.split(".")[0] in NOT_SEARCHABLE:
                    raise ConfigError(f"{key} cannot vary", source=config.source, where=where)
                if _lookup(base, key) is _MISSING:
                    raise ConfigError("no such config field", source=config.source, where=where)
            _check_variant(config, base, name, overrides)


def _check_variant(
    config: Config, base: dict[str, Any], name: str, overrides: dict[str, Any]
) -> None:
    raw = copy.deepcopy(base)
    try:
        for key, value in overrides.items():
            set_path(raw, key, value, source=config.source)
        from_dict(raw, source=config.source, check_sweep=False)
    except UserError as err:
        raise ConfigError(
            f"variant {name!r} does not give a valid config: {err.message}",
            source=config.source,
            where=f"field sweep.variants.{name}" + (f" ({err.where})" if err.where else ""),
        ) from None


def _check_whole(config: Config, base: dict[str, Any], key: str, value: Any, where: str) -> None:
    raw = copy.deepcopy(base)
    try:
        set_path(raw, key, value, source=config.source)
        from_dict(raw, source=config.source, check_sweep=False)
    except UserError as err:
        msg = f"value {value!r} is not accepted by the config: {err.message}"
        raise ConfigError(msg, source=config.source, where=where) from None


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside `annotation` (`Model` or `Model | None`), if any."""
    import types
    import typing

    candidates = (
        typing.get_args(annotation)
        if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union
        else (annotation,)
    )
    models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
    return models[0] if len(models) == 1 else None


def _owner(config: Config, dotted: str) -> BaseModel | None:
    """The config model that holds the field at `dotted` (None when a section is unset)."""
    parts = dotted.split(".")
    node: Any = config.experiment if parts[0] in ORCHESTRATOR_KEYS else config.task
    for part in parts[:-1]:
        node = getattr(node, part, None)
    if isinstance(node, BaseModel) and parts[-1] in type(node).model_fields:
        return node
    return None


def _artifact_fields(model: BaseModel, prefix: str = "") -> list[str]:
    from tasks.base import ArtifactRef

    out = []
    for name, info in type(model).model_fields.items():
        inner = _model_of(info.annotation)
        if inner is not None and issubclass(inner, ArtifactRef):
            out.append(prefix + name)
        value = getattr(model, name)
        if isinstance(value, BaseModel) and not isinstance(value, ArtifactRef):
            out += _artifact_fields(value, prefix + name + ".")
    return out


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

"""Search spaces written in YAML, mapped to Optuna distributions.

```yaml
sweep:
  space:
    train.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}
    model.backbone: {type: choice, values: [resnet18, efficientnet_b0]}
    schedule.order: {type: permutation, items: [layer4, layer3, layer2, layer1]}
```
Keys are dotted config paths. A `permutation` over n items becomes n-1 integer parameters (a
Lehmer code: at position i pick one of the n-i items still left), so TPE can model it and every
sampled point decodes to a valid order.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, model_validator

from tasks.base import StrictModel

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

PERM_SEP = "#"


class Uniform(StrictModel):
    type: Literal["uniform"]
    low: float
    high: float
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _order(self) -> Uniform:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class LogUniform(Uniform):
    type: Literal["loguniform"]  # type: ignore[assignment]

    @model_validator(mode="after")
    def _positive(self) -> LogUniform:
        if self.low <= 0:
            raise ValueError("loguniform needs low > 0")
        if self.step is not None:
            raise ValueError("loguniform takes no step")
        return self


class IntRange(StrictModel):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _order(self) -> IntRange:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and (self.low < 1 or self.step != 1):
            raise ValueError("log int ranges need low >= 1 and step 1")
        return self


class Choice(StrictModel):
    type: Literal["choice"]
    values: list[Any] = Field(min_length=1)


class Permutation(StrictModel):
    type: Literal["permutation"]
    items: list[str] = Field(min_length=2)

    @model_validator(mode="after")
    def _unique(self) -> Permutation:
        if len(set(self.items)) != len(self.items):
            raise ValueError("permutation items must be unique")
        return self


Dimension = Annotated[
    Uniform | LogUniform | IntRange | Choice | Permutation, Field(discriminator="type")
]


def to_optuna(space: dict[str, Dimension]) -> dict[str, BaseDistribution]:
    """Optuna distributions for a YAML space; permutations expand to Lehmer-code digits."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, BaseDistribution] = {}
    for key, dim in space.items():
        if isinstance(dim, LogUniform):
            out[key] = FloatDistribution(dim.low, dim.high, log=True)
        elif isinstance(dim, Uniform):
            out[key] = FloatDistribution(dim.low, dim.high, step=dim.step)
        elif isinstance(dim, IntRange):
            out[key] = IntDistribution(dim.low, dim.high, step=dim.step, log=dim.log)
        elif isinstance(dim, Choice):
            out[key] = CategoricalDistribution(dim.values)
        else:
            for i in range(len(dim.items) - 1):
                out[f"{key}{PERM_SEP}{i}"] = IntDistribution(0, len(dim.items) - 1 - i)
    return out


def decode_permutation(items: list[str], code: list[int]) -> list[str]:
    """Order of `items` given a Lehmer code of length len(items) - 1."""
    left = list(items)
    order = [left.pop(c) for c in code]
    return order + left


def encode_permutation(items: list[str], order: list[str]) -> list[int]:
    """Inverse of `decode_permutation` (used to seed a search with a known order)."""
    left = list(items)
    code = []
    for item in order[:-1]:
        code.append(left.index(item))
        left.remove(item)
    return code


def decode(space: dict[str, Dimension], params: dict[str, Any]) -> dict[str, Any]:
    """Sampled Optuna params -> dotted config overrides (permutations reassembled)."""
    out: dict[str, Any] = {}
    for key, dim in space.items():
        if isinstance(dim, Permutation):
            code = [int(params[f"{key}{PERM_SEP}{i}"]) for i in range(len(dim.items) - 1)]
            out[key] = decode_permutation(dim.items, code)
        else:
            out[key] = params[key]
    return out


def decode_json(space: dict[str, dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """`decode` for a space in its stored JSON form (no validation: trials start fast)."""
    out: dict[str, Any] = {}
    for key, dim in space.items():
        if dim.get("type") == "permutation":
            items = list(dim["items"])
            code = [int(params[f"{key}{PERM_SEP}{i}"]) for i in range(len(items) - 1)]
            out[key] = decode_permutation(items, code)
        else:
            out[key] = params[key]
    return out


def corners(dim: Dimension) -> list[Any]:
    """Representative values used to check a dimension against the config model up front."""
    if isinstance(dim, Uniform | IntRange):
        return [dim.low, dim.high]
    if isinstance(dim, Choice):
        return list(dim.values)
    return [list(dim.items)]


def grid(space: dict[str, Dimension]) -> dict[str, list[Any]]:
    """Optuna GridSampler search space: every value of every (expanded) parameter.

    Raises:
        ValueError: a dimension is continuous (a uniform without step, a loguniform).
    """
    out: dict[str, list[Any]] = {}
    for key, dim in space.items():
        if isinstance(dim, Choice):
            out[key] = list(dim.values)
        elif isinstance(dim, IntRange) and not dim.log:
            out[key] = list(range(dim.low, dim.high + 1, dim.step))
        elif isinstance(dim, Uniform) and not isinstance(dim, LogUniform) and dim.step:
            n = round((dim.high - dim.low) / dim.step)
            out[key] = [dim.low + i * dim.step for i in range(n + 1)]
        elif isinstance(dim, Permutation):
            for i in range(len(dim.items) - 1):
                out[f"{key}{PERM_SEP}{i}"] = list(range(len(dim.items) - i))
        else:
            raise ValueError(f"{key}: a grid needs finite values (choice, int, uniform with step)")
    return out


def size(space: dict[str, Dimension]) -> float:
    """Number of distinct points (inf when any dimension is continuous)."""
    total = 1.0
    for dim in space.values():
        if isinstance(dim, Choice):
            total *= len(dim.values)
        elif isinstance(dim, Permutation):
            total *= math.factorial(len(dim.items))
        elif isinstance(dim, IntRange) and not dim.log:
            total *= (dim.high - dim.low) // dim.step + 1
        else:
            return math.inf
    return total

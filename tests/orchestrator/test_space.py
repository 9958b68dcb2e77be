from __future__ import annotations

import itertools
import math

import optuna
import pytest
from pydantic import TypeAdapter, ValidationError

from orchestrator.space import (
    Dimension,
    decode,
    decode_permutation,
    encode_permutation,
    size,
    to_optuna,
)

SPACE = TypeAdapter(dict[str, Dimension])


def test_mapping_to_optuna_distributions() -> None:
    space = SPACE.validate_python(
        {
            "a": {"type": "uniform", "low": 0, "high": 1},
            "b": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
            "c": {"type": "int", "low": 8, "high": 64, "step": 8},
            "d": {"type": "choice", "values": ["x", "y"]},
            "e": {"type": "permutation", "items": ["s1", "s2", "s3"]},
        }
    )
    dist = to_optuna(space)
    assert dist["a"] == optuna.distributions.FloatDistribution(0, 1)
    assert dist["b"] == optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    assert dist["c"] == optuna.distributions.IntDistribution(8, 64, step=8)
    assert dist["d"] == optuna.distributions.CategoricalDistribution(["x", "y"])
    assert dist["e#0"] == optuna.distributions.IntDistribution(0, 2)
    assert dist["e#1"] == optuna.distributions.IntDistribution(0, 1)
    assert "e" not in dist
    assert math.isinf(size(space))


def test_permutation_code_is_a_bijection() -> None:
    items = ["layer4", "layer3", "layer2", "layer1"]
    seen = set()
    for code in itertools.product(range(4), range(3), range(2)):
        order = decode_permutation(items, list(code))
        assert sorted(order) == sorted(items)
        assert encode_permutation(items, order) == list(code)
        seen.add(tuple(order))
    assert len(seen) == math.factorial(4)


def test_decode_reassembles_permutations() -> None:
    space = SPACE.validate_python(
        {
            "lr": {"type": "uniform", "low": 0, "high": 1},
            "o": {"type": "permutation", "items": ["a", "b", "c"]},
        }
    )
    assert decode(space, {"lr": 0.5, "o#0": 2, "o#1": 1}) == {"lr": 0.5, "o": ["c", "b", "a"]}
    assert (
        size(SPACE.validate_python({"o": {"type": "permutation", "items": ["a", "b", "c"]}})) == 6
    )


def test_optuna_samples_decode_to_valid_orders() -> None:
    space = SPACE.validate_python({"o": {"type": "permutation", "items": ["a", "b", "c", "d"]}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask(to_optuna(space))
        order = decode(space, trial.params)["o"]
        assert sorted(order) == ["a", "b", "c", "d"]
        study.tell(trial, 0.0)


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "uniform", "low": 1, "high": 1},
        {"type": "loguniform", "low": 0, "high": 1},
        {"type": "int", "low": 0, "high": 4, "log": True},
        {"type": "choice", "values": []},
        {"type": "permutation", "items": ["a", "a"]},
        {"type": "normal", "mu": 0},
    ],
)
def test_bad_dimensions_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SPACE.validate_python({"k": bad})

"""`SweepTorchTrainer` leaves out the callbacks medsweep does without (see orchestrator/trainer.py)
and sets up its process group through `OneNodeTorchConfig`."""

from __future__ import annotations

from typing import Any

from ray.train import ScalingConfig
from ray.train.torch import TorchTrainer
from ray.train.v2._internal.callbacks import DatasetsCallback
from ray.train.v2._internal.callbacks.placement_group_callback import (
    PlacementGroupCleanerCallback,
)

from orchestrator.trainer import OneNodeTorchConfig, SweepTorchTrainer, _OneNodeTorchBackend


def _kinds(trainer: Any) -> set[type]:
    return {type(cb) for cb in trainer._create_default_callbacks()}


def _loop(config: dict[str, Any]) -> None:
    pass


def test_without_datasets_no_data_callback_and_no_cleaner() -> None:
    scaling = ScalingConfig(num_workers=1)
    ours = _kinds(SweepTorchTrainer(_loop, scaling_config=scaling))
    theirs = _kinds(TorchTrainer(_loop, scaling_config=scaling))
    assert {DatasetsCallback, PlacementGroupCleanerCallback} <= theirs  # what there is to drop
    assert theirs - ours == {DatasetsCallback, PlacementGroupCleanerCallback}


def test_with_datasets_the_data_callback_stays() -> None:
    data = _loop  # a dataset factory (never called here: no Ray needed)
    trainer = SweepTorchTrainer(
        _loop, scaling_config=ScalingConfig(num_workers=1), datasets={"t": data}
    )
    kinds = _kinds(trainer)
    assert DatasetsCallback in kinds and PlacementGroupCleanerCallback not in kinds


def test_one_node_config_uses_its_backend() -> None:
    assert OneNodeTorchConfig(backend="gloo").backend_cls is _OneNodeTorchBackend

"""`SweepTorchTrainer` leaves out the callbacks medsweep does without, and neither the trial that
builds it nor the Train controller that unpickles its config and callbacks imports torch (see
orchestrator/trainer.py)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from ray import cloudpickle
from ray.train import ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.train.v2._internal.callbacks import DatasetsCallback
from ray.train.v2._internal.callbacks.placement_group_callback import (
    PlacementGroupCleanerCallback,
)
from ray.train.v2._internal.callbacks.state_manager import StateManagerCallback
from ray.train.v2._internal.util import TrainingFramework

from orchestrator.trainer import (
    OneNodeTorchBackend,
    OneNodeTorchConfig,
    StateCallback,
    SweepTorchTrainer,
    TorchContext,
    _framework_versions,
)

STATE_TRACKING = "RAY_TRAIN_ENABLE_STATE_TRACKING"


def _ours(**kwargs: Any) -> SweepTorchTrainer:
    return SweepTorchTrainer(
        _loop,
        backend_config=OneNodeTorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(num_workers=1),
        **kwargs,
    )


def _kinds(trainer: Any) -> set[type]:
    return {type(cb) for cb in trainer._create_default_callbacks()}


def _loop(config: dict[str, Any]) -> None:
    pass


def test_without_datasets_no_data_callback_and_no_cleaner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STATE_TRACKING, raising=False)
    ours = _kinds(_ours())
    theirs = _kinds(TorchTrainer(_loop, scaling_config=ScalingConfig(num_workers=1)))
    assert {DatasetsCallback, PlacementGroupCleanerCallback} <= theirs  # what there is to drop
    assert theirs - ours == {DatasetsCallback, PlacementGroupCleanerCallback}
    assert ours <= theirs


def test_with_datasets_the_data_callback_stays() -> None:
    data = _loop  # a dataset factory (never called here: no Ray needed)
    kinds = _kinds(_ours(datasets={"t": data}))
    assert DatasetsCallback in kinds and PlacementGroupCleanerCallback not in kinds


def test_state_tracking_uses_the_callback_that_returns_plain_versions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(STATE_TRACKING, "1")
    kinds = _kinds(_ours())
    assert StateCallback in kinds and StateManagerCallback not in kinds
    versions = _framework_versions(TrainingFramework.TORCH)
    assert {"ray", "torch"} <= set(versions)
    # torch.__version__ is a TorchVersion: unpickling one in the controller imports torch
    assert all(type(v) is str for v in versions.values())


def test_config_has_torchconfigs_fields_and_backend() -> None:
    ours, theirs = OneNodeTorchConfig(backend="gloo"), TorchConfig(backend="gloo")
    names = [f.name for f in dataclasses.fields(theirs)]
    assert [f.name for f in dataclasses.fields(ours)] == names
    assert ours.to_dict() == theirs.to_dict()
    assert ours.framework is theirs.framework is TrainingFramework.TORCH
    assert ours.backend_cls is OneNodeTorchBackend
    assert OneNodeTorchBackend.share_cuda_visible_devices  # one CUDA_VISIBLE_DEVICES per node
    assert ours.train_func_context is TorchContext
    if not torch.cuda.is_available():  # with CUDA it asks Train for the worker's device
        with ours.train_func_context():
            pass


def test_the_controller_unpickles_config_and_callbacks_without_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What Train's controller receives, loaded in a fresh process: torch stays out."""
    monkeypatch.setenv(STATE_TRACKING, "1")
    trainer = _ours()
    payload = tmp_path / "controller.pkl"
    payload.write_bytes(
        cloudpickle.dumps((trainer.backend_config, trainer._create_default_callbacks()))
    )
    code = (
        "import pickle, sys; "
        f"config, callbacks = pickle.loads(open({str(payload)!r}, 'rb').read()); "
        "import orchestrator.trainer; "
        "print(config.backend, len(callbacks), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["gloo", str(len(trainer._create_default_callbacks())), "False"]

"""Our `TorchTrainer`: Ray Train V2's data-parallel trainer with a torch backend, minus the
detached placement-group cleaner, the Ray Data callback and the preemption watcher, in a module
that does not import torch.

In Ray 2.60 every trainer launches a detached `PlacementGroupCleaner` that polls the state API
and removes the run's placement group once it believes the controller is dead. With several
trainers running side by side (concurrent Tune trials on a busy 2-core machine) we saw it remove
the placement group of a live run (GCS log: group removed 0.4 s before its controller ended),
killing a healthy trial. A controller removes its own group on shutdown, and groups that are not
detached die with the sweep driver, so dropping the cleaner loses nothing we rely on.

Ray 2.60's preemption watcher is one more actor process per run, and it imports Ray Train: about
1 s of CPU, shared with the runs starting beside it (on 2 cores a trial's overhead fell by about
1.2 s without it). It only logs node drains and answers `ray.train.get_preemption_info()`, which
no task asks; a node that goes away still fails the run's workers, and Train's retries apply.
RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=1 in the workers' environment (the driver's, for an embedded
Ray) brings it back.

Why no torch here: each Train run is launched from its Tune trial's process and run by a fresh
controller process, and neither touches a tensor. Yet three things made both import torch, about
1 s of CPU in each process, on the critical path of every run's start-up:

- `TorchTrainer` (its module and its constructor) imports torch in the trial's process;
  `SweepTorchTrainer` is Ray's `DataParallelTrainer` given the torch backend config, as
  `TorchTrainer` is.
- Ray's `TorchConfig` lives in a module that imports torch, and the controller unpickles it.
  `OneNodeTorchConfig` has the same fields; its backend sends the workers functions that import
  torch there, where it is loaded anyway.
- Train's run-state tracking (the dashboard's Train view) asks a worker for the framework's
  version: `torch.__version__` is a `TorchVersion`, and unpickling one imports torch.
  `StateCallback` brings the versions back as plain strings.

On one node the workers rendezvous through a torch FileStore instead of Ray's TCPStore: rank 0
opens that store on every interface (torch has no bind-address option), so each run of an
embedded, loopback-only Ray still listened on 0.0.0.0. Workers that share a node share its file
system and need no port. Runs spread over several nodes keep Ray's own torch backend.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import uuid
from dataclasses import dataclass
from typing import Any

import ray
from ray._private import ray_constants
from ray.train import Result
from ray.train.backend import Backend, BackendConfig
from ray.train.constants import (
    DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S,
    TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S,
)
from ray.train.v2._internal.callbacks import DatasetsCallback
from ray.train.v2._internal.callbacks.placement_group_callback import (
    PlacementGroupCleanerCallback,
)
from ray.train.v2._internal.callbacks.state_manager import (
    StateManagerCallback,
    _get_framework_version,
)
from ray.train.v2._internal.constants import ENABLE_PREEMPTION_WATCHER_ENV_VAR
from ray.train.v2._internal.util import TrainingFramework
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

logger = logging.getLogger(__name__)

# Without Ray Datasets (tasks read their own files), Train's datasets callback still starts a
# `DatasetManager` actor, one more worker process per run: about 0.2 s of every run's start-up
# and a second of CPU that concurrent trials share.
_DROPPED = (PlacementGroupCleanerCallback, DatasetsCallback)


class SweepTorchTrainer(DataParallelTrainer):
    """`TorchTrainer` as medsweep runs it: give it a `OneNodeTorchConfig` as `backend_config`."""

    def fit(self) -> Result:
        # Read by the controller, which Train gives the variables set in this process.
        os.environ.setdefault(ENABLE_PREEMPTION_WATCHER_ENV_VAR, "0")
        return super().fit()

    def _create_default_callbacks(self) -> list[Any]:
        callbacks: list[Any] = super()._create_default_callbacks()
        dropped = _DROPPED if not self.datasets else (PlacementGroupCleanerCallback,)
        return [
            StateCallback(datasets=cb._datasets) if type(cb) is StateManagerCallback else cb
            for cb in callbacks
            if not isinstance(cb, dropped)
        ]


@dataclass
class OneNodeTorchConfig(BackendConfig):
    """Ray's `TorchConfig` (same fields and meaning), set up by `OneNodeTorchBackend`."""

    backend: str | None = None
    init_method: str = "env"
    timeout_s: int = 1800

    @property
    def backend_cls(self) -> type[OneNodeTorchBackend]:
        return OneNodeTorchBackend

    @property
    def train_func_context(self) -> type[TorchContext]:
        return TorchContext

    @property
    def framework(self) -> TrainingFramework:
        return TrainingFramework.TORCH

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class OneNodeTorchBackend(Backend):
    share_cuda_visible_devices: bool = True

    def on_start(self, worker_group: Any, backend_config: Any) -> None:
        nodes = {worker.metadata.node_id for worker in worker_group.get_workers()}
        if len(nodes) != 1 or backend_config.backend is None:
            from ray.train.torch.config import _TorchBackend  # imports torch here

            _TorchBackend().on_start(worker_group, backend_config)
            return
        url = "file://" + worker_group.execute_single(0, _rendezvous_file)
        worker_group.execute(_set_distributed_env_vars)
        setups = [
            worker_group.execute_single_async(
                rank,
                _setup_process_group,
                backend=backend_config.backend,
                world_rank=rank,
                world_size=len(worker_group),
                init_method=url,
                timeout_s=backend_config.timeout_s,
            )
            for rank in range(len(worker_group))
        ]
        ray.get(setups)

    def on_shutdown(self, worker_group: Any, backend_config: Any) -> None:
        # Ray's `_TorchBackend.on_shutdown`, restated: delegating would import torch here, a
        # second of controller CPU per run while the next run starts beside it.
        futures = worker_group.execute_async(_shutdown, destroy_process_group=len(worker_group) > 1)
        timeout_s = ray_constants.env_integer(
            TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S, DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S
        )
        try:
            ray.get(futures, timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            logger.warning("Torch process group shutdown timed out after %s seconds", timeout_s)


class TorchContext:
    """Ray's `TorchConfigContextManager` (sets a worker's CUDA device), imported on the worker."""

    def __enter__(self) -> None:
        from ray.train.torch.config import TorchConfigContextManager

        TorchConfigContextManager().__enter__()

    def __exit__(self, *exc: object) -> None:
        return None


class StateCallback(StateManagerCallback):
    """Ray's run-state tracking callback, with the framework versions sent back as strings."""

    def after_worker_group_start(self, worker_group: Any) -> None:
        # Ray's own method, but for the function the worker runs (see the module's docstring).
        context = worker_group.get_worker_group_context()
        self._state_manager.update_train_run_attempt_running(
            run_id=self._run_id,
            attempt_id=context.run_attempt_id,
            workers=worker_group.get_worker_group_state().workers,
        )
        framework = self._state_manager.get_train_run_framework(self._run_id)
        versions = worker_group.execute_single(0, _framework_versions, framework)
        self._state_manager.update_train_run_framework_versions(
            run_id=self._run_id, framework_versions=versions
        )


# ----- run on the workers (each imports torch there) ------------------------------------------


def _rendezvous_file() -> str:
    """A fresh path (FileStore needs a new or empty file) in the node's Ray session folder: the
    store's destructor rewrites the file when a worker exits, so it stays with the session's
    logs (a few hundred bytes per run) instead of being left in /tmp."""
    from ray._private import worker

    node = worker.global_worker.node
    folder = node.get_session_dir_path() if node is not None else tempfile.gettempdir()
    return os.path.join(folder, f"medsweep-pg-{uuid.uuid4().hex}")


def _set_distributed_env_vars() -> None:
    from ray.train.torch.config import _set_torch_distributed_env_vars

    _set_torch_distributed_env_vars()


def _setup_process_group(**kwargs: Any) -> None:
    from ray.train.torch.config import _setup_torch_process_group

    _setup_torch_process_group(**kwargs)


def _shutdown(destroy_process_group: bool) -> None:
    from ray.train.torch.config import _shutdown_torch

    _shutdown_torch(destroy_process_group=destroy_process_group)


def _framework_versions(framework: TrainingFramework | None) -> dict[str, str]:
    return {name: str(version) for name, version in _get_framework_version(framework).items()}

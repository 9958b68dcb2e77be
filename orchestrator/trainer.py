"""Our `TorchTrainer`: Ray Train V2's, minus the detached placement-group cleaner and the Ray Data
callback, and a torch backend that rendezvouses through a file on one node (see below).

In Ray 2.60 every trainer launches a detached `PlacementGroupCleaner` that polls the state API
and removes the run's placement group once it believes the controller is dead. With several
trainers running side by side (concurrent Tune trials on a busy 2-core machine) we saw it remove
the placement group of a live run (GCS log: group removed 0.4 s before its controller ended),
killing a healthy trial. A controller removes its own group on shutdown, and groups that are not
detached die with the sweep driver, so dropping the cleaner loses nothing we rely on.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from dataclasses import dataclass
from typing import Any

import ray
from ray.train.torch import TorchConfig, TorchTrainer
from ray.train.torch.config import (
    _set_torch_distributed_env_vars,
    _setup_torch_process_group,
    _TorchBackend,
)
from ray.train.v2._internal.callbacks import DatasetsCallback
from ray.train.v2._internal.callbacks.placement_group_callback import (
    PlacementGroupCleanerCallback,
)

# Without Ray Datasets (tasks read their own files), Train's datasets callback still starts a
# `DatasetManager` actor, one more worker process per run: about 0.2 s of every run's start-up
# and a second of CPU that concurrent trials share.
_DROPPED = (PlacementGroupCleanerCallback, DatasetsCallback)


class SweepTorchTrainer(TorchTrainer):
    def _create_default_callbacks(self) -> list[Any]:
        callbacks = super()._create_default_callbacks()  # type: ignore[misc]
        dropped = _DROPPED if not self.datasets else (PlacementGroupCleanerCallback,)
        return [cb for cb in callbacks if not isinstance(cb, dropped)]


# ----- process-group rendezvous -------------------------------------------------------------
#
# Ray Train's torch backend rendezvouses through a TCPStore that rank 0 opens on every interface
# (torch has no bind-address option), so each run of an embedded, loopback-only Ray still
# listened on 0.0.0.0. Workers that share a node share its file system: they rendezvous through a
# torch FileStore instead and open no port. Runs spread over several nodes keep Ray's TCPStore.


def _rendezvous_file() -> str:
    """A fresh path (FileStore needs a new or empty file) in the node's Ray session folder: the
    store's destructor rewrites the file when a worker exits, so it stays with the session's
    logs (a few hundred bytes per run) instead of being left in /tmp."""
    from ray._private import worker

    node = worker.global_worker.node
    folder = node.get_session_dir_path() if node is not None else tempfile.gettempdir()
    return os.path.join(folder, f"medsweep-pg-{uuid.uuid4().hex}")


class _OneNodeTorchBackend(_TorchBackend):
    def on_start(self, worker_group: Any, backend_config: Any) -> None:
        nodes = {worker.metadata.node_id for worker in worker_group.get_workers()}
        if len(nodes) != 1 or backend_config.backend is None:
            super().on_start(worker_group, backend_config)
            return
        url = "file://" + worker_group.execute_single(0, _rendezvous_file)
        worker_group.execute(_set_torch_distributed_env_vars)
        setups = [
            worker_group.execute_single_async(
                rank,
                _setup_torch_process_group,
                backend=backend_config.backend,
                world_rank=rank,
                world_size=len(worker_group),
                init_method=url,
                timeout_s=backend_config.timeout_s,
            )
            for rank in range(len(worker_group))
        ]
        ray.get(setups)


@dataclass
class OneNodeTorchConfig(TorchConfig):
    """`TorchConfig` whose process group rendezvouses through a file when all workers share a
    node (see above)."""

    @property
    def backend_cls(self) -> type[_TorchBackend]:
        return _OneNodeTorchBackend

"""Our `TorchTrainer`: Ray Train V2's, minus the detached placement-group cleaner.

In Ray 2.60 every trainer launches a detached `PlacementGroupCleaner` that polls the state API
and removes the run's placement group once it believes the controller is dead. With several
trainers running side by side (concurrent Tune trials on a busy 2-core machine) we saw it remove
the placement group of a live run (GCS log: group removed 0.4 s before its controller ended),
killing a healthy trial. A controller removes its own group on shutdown, and groups that are not
detached die with the sweep driver, so dropping the cleaner loses nothing we rely on.
"""

from __future__ import annotations

from typing import Any

from ray.train.torch import TorchTrainer
from ray.train.v2._internal.callbacks.placement_group_callback import (
    PlacementGroupCleanerCallback,
)


class SweepTorchTrainer(TorchTrainer):
    def _create_default_callbacks(self) -> list[Any]:
        callbacks = super()._create_default_callbacks()  # type: ignore[misc]
        return [cb for cb in callbacks if not isinstance(cb, PlacementGroupCleanerCallback)]

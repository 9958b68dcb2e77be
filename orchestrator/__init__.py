"""medsweep's orchestrator: configs, registry, sweep engine, Ray Train glue, results store, CLI.

The public API is imported lazily so that `import orchestrator` stays cheap:
`orchestrator.run`, `orchestrator.sweep`, `orchestrator.load_config`, `orchestrator.results`.
"""

from __future__ import annotations

import importlib
from typing import Any

_API = {"run", "sweep", "load_config", "leaderboard", "demo"}

__all__ = [*sorted(_API), "results"]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module("orchestrator.api"), name)
    if name == "results":
        return importlib.import_module("orchestrator.results")
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")

"""Plots (matplotlib PNG) and the self-contained HTML report of a sweep.

Imports are lazy so `import orchestrator.report` stays cheap for the CLI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.report.build import build_report
    from orchestrator.report.collect import collect

_LAZY = {"build_report": "build", "collect": "collect"}

__all__ = ["build_report", "collect"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)

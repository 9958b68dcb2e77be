"""Resuming a sweep: the stored sweep record, and the refusal of a config that changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.config import Config
from orchestrator.errors import UserError
from orchestrator.plan import SweepInfo
from orchestrator.privacy import redact_tree
from orchestrator.results.schema import flatten

# Fields a resume may change: where the store is (the same store, reached by another path).
_MAY_DIFFER = ("store.root",)


def stored_info(sweep_dir: Path) -> SweepInfo:
    path = sweep_dir / "sweep.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read the sweep record: {err}", source=path) from None
    if "command" not in data and "kind" in data:  # written by schema 1
        data["command"] = data["kind"]
    data.setdefault("objective", (data.get("config") or {}).get("sweep", {}).get("objective"))
    data.setdefault("store_root", str(sweep_dir.parent))
    return SweepInfo.from_json(data)


def differing_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted paths whose values differ between two resolved configs."""
    a, b = flatten(old), flatten(new)
    keys = sorted(set(a) | set(b))
    return [k for k in keys if k not in _MAY_DIFFER and a.get(k, "<unset>") != b.get(k, "<unset>")]


def check_same_config(previous: SweepInfo, config: Config) -> None:
    """Refuse to resume a sweep with a config other than the one it started with."""
    diff = differing_fields(previous.config, redact_tree(config.to_dict()))
    if diff:
        shown = ", ".join(diff[:12]) + (f" (and {len(diff) - 12} more)" if len(diff) > 12 else "")
        raise UserError(
            f"the config differs from the one stored with this sweep in: {shown}; resume with "
            "the original config, or start a new sweep under another name (nothing was changed)",
            source=config.source,
        )

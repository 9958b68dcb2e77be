from __future__ import annotations

import ast
from pathlib import Path

import pytest

from orchestrator.errors import UserError
from orchestrator.registry import find_synth, get_task, task_names
from tasks.base import Task, TaskConfig

REPO = Path(__file__).resolve().parents[2]


def test_every_registered_task_honours_the_contract() -> None:
    assert "fundus" in task_names()
    for name in task_names():
        cls = get_task(name)
        assert issubclass(cls, Task)
        assert cls.name == name
        assert issubclass(cls.config_model, TaskConfig)
        assert cls.default_mode in {"max", "min"}
        assert cls.default_metric.split("_", 1)[0] in {"train", "val", "test"}


def test_unknown_task_lists_valid_names() -> None:
    with pytest.raises(UserError, match=r"unknown task 'nope'; registered tasks: .*fundus"):
        get_task("nope")
    with pytest.raises(UserError, match="no synthetic data generator named 'nope'"):
        find_synth("nope")
    assert find_synth("fundus") is get_task("fundus")


def test_orchestrator_names_no_task() -> None:
    """The orchestrator imports tasks only through the registry (and the shared contract)."""
    allowed = {"tasks", "tasks.base", "tasks.common"}  # the shared modules of tasks.common
    for path in (REPO / "orchestrator").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in (m for m in modules if m.split(".")[0] == "tasks"):
                ok = module in allowed or module.startswith("tasks.common.")
                assert ok, f"{path.name} imports {module}"

"""Task name -> task class, imported lazily so `medsweep tasks` stays fast.

The table itself lives in `tasks/__init__.py` (one line per task); packages outside this repo can
add tasks through the `medsweep.tasks` entry-point group.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from orchestrator.errors import UserError

if TYPE_CHECKING:
    from tasks.base import Task


@cache
def task_table() -> dict[str, str]:
    """All registered task names with their `module:Class` import paths."""
    import tasks

    table = dict(tasks.TASKS)
    for ep in entry_points(group="medsweep.tasks"):
        if ep.name in table and table[ep.name] != ep.value:
            raise RuntimeError(
                f"task {ep.name!r} registered twice: {table[ep.name]} and {ep.value}"
            )
        table[ep.name] = ep.value
    return table


def task_names() -> list[str]:
    return sorted(task_table())


def get_task(name: str) -> type[Task[Any]]:
    """The task class registered as `name`; an unknown name lists the valid ones."""
    table = task_table()
    if name not in table:
        raise UserError(
            f"unknown task {name!r}; registered tasks: {', '.join(task_names()) or '(none)'}",
            where="field task",
        )
    module_name, _, attr = table[name].partition(":")
    cls: type[Task[Any]] = getattr(importlib.import_module(module_name), attr)
    return cls


def data_tools() -> dict[str, str]:
    """`medsweep data NAME` tools contributed by task families (name -> `module:function`)."""
    import tasks

    return dict(getattr(tasks, "DATA_TOOLS", {}))


def run_data_tool(name: str, argv: list[str]) -> int:
    return _call(data_tools()[name], argv)


def evaluators() -> dict[str, str]:
    """`medsweep eval NAME` evaluators contributed by task families (name -> `module:function`)."""
    import tasks

    return dict(getattr(tasks, "EVALUATORS", {}))


def run_evaluator(name: str, argv: list[str]) -> int:
    return _call(evaluators()[name], argv)


def _call(target: str, argv: list[str]) -> int:
    module_name, _, attr = target.partition(":")
    return int(getattr(importlib.import_module(module_name), attr)(argv))


def find_synth(name: str) -> type[Task[Any]]:
    """The task whose synthetic generator is called `name` (the task name or one of its aliases)."""
    if name in task_table():
        return get_task(name)
    for task_name in task_names():
        cls = get_task(task_name)
        if name in cls.synth_names:
            return cls
    raise UserError(
        f"no synthetic data generator named {name!r}; try one of: {', '.join(task_names())}"
    )

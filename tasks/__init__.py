"""Task families. Registering a task is one line here: its name and the import path of its class.

The orchestrator reads this table through `orchestrator.registry` and never names a task itself.
Third-party tasks can register through the `medsweep.tasks` entry-point group instead.
"""

TASKS: dict[str, str] = {
    "fundus": "tasks.fundus.task:FundusTask",
}

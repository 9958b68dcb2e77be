"""Task families. Registering a task is one line here: its name and the import path of its class.

The orchestrator reads this table through `orchestrator.registry` and never names a task itself.
Third-party tasks can register through the `medsweep.tasks` entry-point group instead.
"""

TASKS: dict[str, str] = {
    "fundus": "tasks.fundus.task:FundusTask",
    "detection": "tasks.detection.task:DetectionTask",
    "simsiam": "tasks.simsiam.task:SimSiamTask",
}

# Dataset tools a task family brings along, run as `medsweep data NAME ARGS...`: each entry is a
# function taking the argument list and returning an exit code.
DATA_TOOLS: dict[str, str] = {
    "coco": "tasks.detection.tools:coco_main",
    "clean": "tasks.detection.tools:clean_main",
    "stats": "tasks.detection.tools:stats_main",
}

"""Task families. Registering a task is one line here: its name and the import path of its class.

The orchestrator reads this table through `orchestrator.registry` and never names a task itself.
Third-party tasks can register through the `medsweep.tasks` entry-point group instead.
"""

TASKS: dict[str, str] = {
    "fundus": "tasks.fundus.task:FundusTask",
    "detection": "tasks.detection.task:DetectionTask",
    "simsiam": "tasks.simsiam.task:SimSiamTask",
    "abn": "tasks.abn.task:ABNTask",
    "glow": "tasks.anomaly.glow_task:GlowTask",
    "petct": "tasks.anomaly.petct_task:PetCtTask",
    "toy": "tasks.toy.task:ToyTask",
}

# Dataset tools a task family brings along, run as `medsweep data NAME ARGS...`: each entry is a
# function taking the argument list and returning an exit code.
DATA_TOOLS: dict[str, str] = {
    "coco": "tasks.detection.tools:coco_main",
    "clean": "tasks.detection.tools:clean_main",
    "stats": "tasks.detection.tools:stats_main",
    "lungmask": "tasks.abn.lungmask:main",
}

# Evaluators a task family brings along, run as `medsweep eval NAME ARGS...` (same calling
# convention); `eval classification` and `eval detection` are built in.
EVALUATORS: dict[str, str] = {
    "froc": "tasks.common.froc:main",
}

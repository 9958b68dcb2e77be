"""Joining Ray: connect to the cluster (or start a local, loopback-only Ray), the driver's
`ray job submit` id, and the library log noise medsweep replaces with its own lines."""

from __future__ import annotations

import logging
import os


def connect_ray(log_to_driver: bool = False) -> None:
    """Join the cluster named by RAY_ADDRESS (e.g. under `ray job submit`) or start a local Ray.

    Resources are never passed when joining: the cluster decides what it has.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    # Tune would otherwise copy the driver's cwd into every trial; the store is absolute anyway.
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    # The dashboard's Train tab (Tune does not pass this on: `fit_run` sets it in the trial too).
    os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_TRACKING", "1")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=log_to_driver, logging_level=logging.WARNING)
        return
    # Start our own instance even if another local cluster is running (plain ray.init() would
    # silently join it). It serves this machine only: its processes and dashboard listen on
    # 127.0.0.1 unless MEDSWEEP_RAY_HOST names another address (e.g. 0.0.0.0).
    host = os.environ.get("MEDSWEEP_RAY_HOST", "127.0.0.1")
    if host in ("127.0.0.1", "localhost"):
        _loopback_only()
    ray.init(
        address="local",
        log_to_driver=log_to_driver,
        logging_level=logging.WARNING,
        dashboard_host=host,
    )


def _loopback_only() -> None:
    """Make a local Ray use 127.0.0.1 as its node address: its GCS, raylet, workers and agents
    then bind to loopback (Ray turns an explicit `_node_ip_address="127.0.0.1"` into the routable
    address; this switch, meant for laptops, is the one that keeps it)."""
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read by the processes Ray starts
    ray_constants.ENABLE_RAY_CLUSTER = False  # read by this process (imported already)


def job_submission_id() -> str:
    """The `ray job submit` id of this driver: Ray 2.60 passes it only in the job config's
    metadata (RAY_JOB_CONFIG_JSON_ENV_VAR), not as an environment variable of its own."""
    import json

    try:
        meta = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")).get("metadata")
    except ValueError:
        meta = None
    found = (meta or {}).get("job_submission_id") if isinstance(meta, dict) else None
    return str(found or os.environ.get("RAY_JOB_SUBMISSION_ID", ""))


def _quiet_libraries() -> None:
    """Ray's token-auth notice and Optuna's study log lines are replaced by medsweep's own lines
    (the dashboard hint says how to log in); Tune's console output by the live view."""
    import optuna

    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.ERROR
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _drop_worker_count_warnings()
    # Tune's legacy reporter at verbose=0 prints nothing; the default one still prints the
    # "Configuration for experiment" box and a TensorBoard hint.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


# What the raylet pushes to every driver once it has started some multiple of its CPU count in
# worker processes. A sweep starts several actors per trial by design (trial, Train controller,
# workers), so on a small machine the warning fires on every demo and means nothing to the user.
_WORKER_COUNT_WARNING = "worker processes have been started on node"


def _drop_worker_count_warnings() -> None:
    """Filter that one raylet warning out of what Ray prints on the driver (Ray prints raylet
    messages with `print_to_stdstream`, looked up in its module at each call); every other
    message, from the raylet or from workers, is printed as before."""
    from ray._private import worker

    printer = worker.print_to_stdstream
    if getattr(printer, "medsweep_filter", False):
        return

    def filtered(data: dict, ignore_prefix: bool) -> None:
        lines = data.get("lines") or []
        if data.get("pid") == "raylet" and any(_WORKER_COUNT_WARNING in str(x) for x in lines):
            return
        printer(data, ignore_prefix)

    filtered.medsweep_filter = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = filtered

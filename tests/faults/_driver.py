"""Helpers of the fault-injection suite: a `medsweep` driver process in its own session (so the
embedded Ray it starts can be found and cleaned up after a `kill -9`), waits on files appearing
in the store, and listings of the store and the Optuna study."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pandas as pd

BIN = Path(sys.executable).parent
# Ray's agents outlive a killed driver for up to a minute before noticing it is gone; every other
# process of the embedded cluster (GCS, raylet, workers, trial actors) must die with it.
SLOW_TO_NOTICE = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a `medsweep` subprocess: this venv first on PATH (so a printed
    `medsweep ...` command runs as is), this session's secrets dir, no cluster address."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", PYTHONUNBUFFERED="1", **extra)
    return env


def session_processes(sid: int) -> dict[int, str]:
    """Live processes of a session: pid -> command name."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            found[int(entry.name)] = cmd
    return found


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` (there is no event to wait on across processes) until a deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


class Driver:
    """A `medsweep` command running in its own session, output in a log file."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
        self.log, self.started = log, time.monotonic()
        with log.open("a") as out:
            out.write(f"\n[{time.strftime('%H:%M:%S')}] $ {' '.join(args)}\n")
            out.flush()
            self.proc = subprocess.Popen(
                args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def console(self) -> str:
        """What the commands printed (the log without this harness's own `[time]` lines)."""
        lines = self.output.splitlines()
        return "\n".join(ln for ln in lines if not re.match(r"\[\d\d:\d\d:\d\d\] ", ln))

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float = 240) -> None:
        """Wait for `condition` while the driver runs; fail with its output if it ended first."""

        def ready() -> bool:
            if condition():
                return True
            if not self.running():
                raise AssertionError(f"driver ended before {what}:\n{self.output[-3000:]}")
            return False

        wait_for(ready, timeout, what)

    def finish(self, timeout: float = 300) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.note("ended")
            self.cleanup()

    def note(self, text: str) -> None:
        with self.log.open("a") as out:
            took = time.monotonic() - self.started
            out.write(f"[{time.strftime('%H:%M:%S')}] {text} ({took:.1f} s)\n")

    def kill9(self) -> list[str]:
        """SIGKILL the driver; return the processes of its cluster that outlived it (after every
        one that must die with it has, they are killed)."""
        self.note("kill -9")
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        return self.cleanup()

    def cleanup(self) -> list[str]:
        """Wait until only slow-to-notice Ray agents are left of the session, then kill those."""
        sid = self.proc.pid

        def only_agents() -> bool:
            return all(name in SLOW_TO_NOTICE for name in session_processes(sid).values())

        try:
            wait_for(only_agents, 60, f"the cluster of driver {sid} to end with it")
        finally:
            left = session_processes(sid)
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        return sorted(left.values())


def medsweep(*args: str) -> list[str]:
    return [str(BIN / "medsweep"), *args]


# --- what the store and the study hold ----------------------------------------------------------
def part_count(sweep_dir: Path, table: str) -> int:
    folder = sweep_dir / table
    return len(list(folder.glob("part-*.parquet"))) if folder.is_dir() else 0


def raw_metrics(sweep_dir: Path) -> pd.DataFrame:
    """Every metrics row ever written (no deduplication): duplicates show up here."""
    import pyarrow.parquet as pq

    parts = sorted((sweep_dir / "metrics").glob("part-*.parquet"))
    frames = [pq.read_table(p).to_pandas() for p in parts]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def epochs_stored(sweep_dir: Path) -> dict[str, list[int]]:
    """run_id -> the epochs that have a `val auc` row."""
    frame = raw_metrics(sweep_dir)
    if frame.empty:
        return {}
    auc = frame[(frame["split"] == "val") & (frame["name"] == "auc")]
    return {str(r): sorted(int(e) for e in g["epoch"]) for r, g in auc.groupby("run_id")}


def checkpoints(sweep_dir: Path) -> int:
    return len(list((sweep_dir / "train").glob("*/checkpoint_*")))


def study(sweep_dir: Path) -> optuna.Study:
    from optuna.storages.journal import JournalFileBackend

    backend = JournalFileBackend(str(sweep_dir / "optuna.journal"))
    storage = optuna.storages.JournalStorage(backend)
    return optuna.load_study(study_name=sweep_dir.name, storage=storage)

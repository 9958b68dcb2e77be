"""The results store under faults, without Ray: a writer killed while writing a part file, and
several processes writing into one store at once (as concurrent sweeps do)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq

from orchestrator.results import ResultsStore
from tests.faults._driver import wait_for

REPO = Path(__file__).resolve().parents[2]

WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import fastparquet
    from orchestrator.results import ResultsStore

    root, sweep, ready, acked = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
    store = ResultsStore(root)

    def rows(i):
        return [{"run_id": f"r{i}", "epoch": e, "split": "val", "name": "auc", "value": e / 10}
                for e in range(1, 101)]

    for i in range(3):
        store.write_metrics(sweep, rows(i))
        with acked.open("a") as fh:
            fh.write(f"r{i}\\n")
    real = fastparquet.write

    def half_then_hang(path, *args, **kwargs):
        real(path, *args, **kwargs)
        size = Path(path).stat().st_size
        with open(path, "r+b") as fh:
            fh.truncate(size // 2)  # the disk holds half the file when the process dies
        ready.touch()
        time.sleep(600)

    fastparquet.write = half_then_hang
    store.write_metrics(sweep, rows(3))
    """
)


def test_a_writer_killed_mid_part_leaves_every_earlier_row_and_no_partial_file(
    tmp_path: Path,
) -> None:
    root, ready, acked = tmp_path / "store", tmp_path / "ready", tmp_path / "acked"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), "sw", str(ready), str(acked)], cwd=REPO
    )
    try:
        wait_for(lambda: ready.exists() or proc.poll() is not None, 60, "the writer to hang")
        assert proc.poll() is None, "the writer ended instead of hanging mid-write"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()

    folder = root / "sw" / "metrics"
    visible = sorted(folder.glob("part-*.parquet"))
    assert len(visible) == 3  # the half-written part never became visible
    assert [p.name for p in folder.iterdir() if p.name.startswith(".tmp-")]  # it is hidden
    for part in visible:
        assert pq.read_table(part).num_rows == 100
    metrics = ResultsStore(root).metrics("sw")
    assert sorted(set(metrics["run_id"])) == acked.read_text().split()  # every earlier row
    assert len(metrics) == 300
    # the store stays writable and readable afterwards
    row = {"run_id": "after", "epoch": 1, "name": "auc", "value": 1.0}
    ResultsStore(root).write_metrics("sw", [row])
    assert len(ResultsStore(root).metrics("sw")) == 301


CONCURRENT = textwrap.dedent(
    """
    import sys
    from orchestrator.results import ResultsStore

    root, me = sys.argv[1], sys.argv[2]
    store = ResultsStore(root)
    for i in range(15):
        run = f"{me}-{i}"
        store.write_runs("shared", [{"run_id": run, "status": "running", "command": "sweep"}])
        store.write_metrics("shared", [{"run_id": run, "epoch": 1, "split": "val",
                                        "name": "auc", "value": 0.5}])
        store.write_runs("shared", [{"run_id": run, "status": "completed", "command": "sweep"}])
    """
)


def test_concurrent_writers_into_one_store_lose_nothing(tmp_path: Path) -> None:
    root = tmp_path / "store"
    writers = [
        subprocess.Popen([sys.executable, "-c", CONCURRENT, str(root), name], cwd=REPO)
        for name in ("a", "b", "c")
    ]
    reads = 0
    deadline = time.monotonic() + 120
    while any(w.poll() is None for w in writers) and time.monotonic() < deadline:
        if (root / "shared").is_dir():  # reading while they write never fails
            ResultsStore(root).metrics("shared")
            reads += 1
        with contextlib.suppress(subprocess.TimeoutExpired):
            writers[0].wait(0.1)  # leave the writers the CPU between reads
    assert [w.wait(60) for w in writers] == [0, 0, 0]
    runs = ResultsStore(root).runs("shared")
    assert len(runs) == 45 and set(runs["status"]) == {"completed"}
    assert len(ResultsStore(root).metrics("shared")) == 45
    assert reads > 0

"""Nothing a sweep writes or prints holds the database password, a raw patient id, or an image's
absolute path in a per-case table; and the Ray that `medsweep` starts for itself listens on
127.0.0.1 only.

One cross-validated sweep (2 folds, a test split) runs as a user runs it, with its Optuna study
on a real PostgreSQL server given as `--set sweep.storage=postgresql+psycopg2://user:PASSWORD@...`;
every file of the sweep folder (Parquet decoded, zip members and gzip unpacked), every file of
its Ray session (logs) and the console output are searched.
"""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.cli import main
from orchestrator.engine import open_storage
from orchestrator.errors import UserError
from tests.faults._driver import Driver, cli_env, medsweep, session_processes
from tests.faults._postgres import SECRET, Server, postgres_server

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def pg() -> Iterator[Server]:
    with postgres_server() as server:
        yield server


def _data_with_raw_ids(src: Path, dest: Path) -> tuple[Path, list[str]]:
    """A copy of the tiny data set whose patient ids are easy to grep for."""
    shutil.copytree(src.parent, dest)
    frame = pd.read_csv(src)
    ids = sorted(set(frame["patient_id"]))
    raw = {old: f"RAWPATIENT{i:03d}Q" for i, old in enumerate(ids)}
    frame["patient_id"] = frame["patient_id"].map(raw)
    frame.to_csv(dest / "labels.csv", index=False)
    return dest / "labels.csv", sorted(raw.values())


def _config(folder: Path, csv: Path) -> Path:
    path = folder / "leak.yaml"
    path.write_text(f"""
name: leak
task: fundus
seed: 0
data: {{manifest: {csv}, image_size: 32}}
model: {{backbone: resnet10t}}
train: {{epochs: 1, batch_size: 16, scheduler: none}}
cv: {{folds: 2, test_fraction: 0.25, group_by: patient_id}}
store: {{root: {folder / "store"}}}
sweep:
  num_samples: 1
  space:
    train.lr: {{type: loguniform, low: 1.0e-4, high: 3.0e-3}}
""")
    return path


def _contents(path: Path) -> Iterator[bytes]:
    """The bytes of a file, and what it holds decoded (Parquet, zip members, gzip)."""
    data = path.read_bytes()
    yield data
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        yield pq.read_table(path).to_pandas().to_csv().encode()
    if zipfile.is_zipfile(path):  # torch checkpoints
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                yield zf.read(name)
    if data[:2] == b"\x1f\x8b":
        yield gzip.decompress(data)


def _leaks(roots: list[Path], needles: list[str]) -> list[str]:
    found = set()
    for root in roots:
        for path in (p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
            for blob in _contents(path):
                found |= {f"{path}: {n}" for n in needles if n.encode() in blob}
    return sorted(found)


def _loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip in ("::1", "::ffff:127.0.0.1")


def _listening(sid: int) -> list[tuple[str, str]]:
    """(process, address) of every TCP socket the session's processes listen on."""
    from tests.faults._sockets import listening_sockets

    procs = session_processes(sid)
    return [(procs[pid], ip) for pid, ip, _ in listening_sockets(list(procs))]


def test_a_sweep_leaks_no_secret_no_patient_id_and_binds_to_loopback(
    tmp_path: Path, tiny_csv: Path, pg: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    csv, raw_ids = _data_with_raw_ids(tiny_csv, tmp_path / "data")
    cfg = _config(tmp_path, csv)
    url = f"sweep.storage={pg.url()}"

    for extra in (["--resolved"], ["--json"]):  # the printed resolved config is redacted
        assert main(["validate", str(cfg), "--set", url, *extra]) == 0
        out = capsys.readouterr().out
        assert SECRET not in out and f"{pg.user}:***@" in out

    ray_tmp = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))  # short: Ray's socket paths
    try:
        args = medsweep("sweep", str(cfg), "--name", "leak", "--set", url)
        driver = Driver(args, tmp_path, cli_env(RAY_TMPDIR=str(ray_tmp)), tmp_path / "out.log")
        arts = tmp_path / "store" / "leak" / "artifacts"
        driver.wait_until(lambda: any(arts.rglob("worker-rank0.pid")), "a worker to start")
        sockets = _listening(driver.proc.pid)
        assert driver.finish() == 0, driver.output[-3000:]
        # including the torch process group: it rendezvouses through a file on one node
        exposed = [s for s in sockets if not _loopback(s[1])]
        assert sockets and exposed == [], sockets

        sweep_dir = tmp_path / "store" / "leak"
        runs = pd.read_parquet(next((sweep_dir / "runs").glob("part-*.parquet")))
        assert set(runs["status"]) == {"completed"}
        assert (sweep_dir / "split.csv").is_file() and any(sweep_dir.rglob("test_predictions.csv"))
        info = json.loads((sweep_dir / "sweep.json").read_text())
        assert "***" in info["config"]["sweep"]["storage"]
        needles = [SECRET, *raw_ids]
        assert _leaks([sweep_dir, ray_tmp], needles) == []
        assert [n for n in needles if n in driver.console] == []
        data_root = str(csv.parent.resolve())
        tables = [*sweep_dir.rglob("*predictions*.csv"), sweep_dir / "split.csv"]
        assert [str(t) for t in tables if data_root in t.read_text()] == []
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_a_url_without_password_uses_pgpassword_or_pgpass(
    tmp_path: Path, pg: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libpq reads the password from PGPASSWORD or a password file: nothing to store."""
    bare = pg.url(with_password=False)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(UserError, match=r"field sweep\.storage") as refused:
        open_storage(bare, tmp_path, "cfg.yaml")
    assert SECRET not in refused.value.render()

    monkeypatch.setenv("PGPASSWORD", SECRET)
    assert open_storage(bare, tmp_path, "cfg.yaml").get_all_studies() is not None

    monkeypatch.delenv("PGPASSWORD")
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"{pg.host}:{pg.port}:{pg.db}:{pg.user}:{SECRET}\n")
    pgpass.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    assert open_storage(bare, tmp_path, "cfg.yaml").get_all_studies() is not None

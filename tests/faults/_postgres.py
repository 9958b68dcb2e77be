"""A throwaway PostgreSQL server with password authentication, for the tests that need a real
Optuna RDB storage. Skips (with the reason) where PostgreSQL is not installed; `make test`
installs it through `deploy/system-deps.sh` where it can."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SECRET = "Pw-7q2-XYZZY-secret"  # unique: a grep for it finds only leaks


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    user: str
    password: str
    db: str

    def url(self, with_password: bool = True) -> str:
        auth = f"{self.user}:{self.password}" if with_password else self.user
        return f"postgresql+psycopg2://{auth}@{self.host}:{self.port}/{self.db}"


def _binary(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if isinstance(found, list):
        return found[-1] if found else None
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def postgres_server() -> Iterator[Server]:
    """initdb + postgres on 127.0.0.1 (as the `postgres` user when run as root); stopped and
    deleted afterwards."""
    initdb, postgres = _binary("initdb"), _binary("postgres")
    if initdb is None or postgres is None:
        pytest.skip("PostgreSQL is not installed (make system-deps installs it)")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="pg", dir="/tmp"))  # short: it holds the socket
    if os.geteuid() == 0:  # postgres refuses to run as root
        import pwd

        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    server = Server("127.0.0.1", _free_port(), "medsweep", SECRET, "postgres")
    (root / "pw").write_text(SECRET + "\n")
    os.chmod(root / "pw", 0o644)
    log = root / "server.log"
    try:
        init = [*as_user, initdb, "-D", str(root / "data"), "-U", server.user, "-E", "UTF8"]
        subprocess.run(
            [*init, "-A", "scram-sha-256", f"--pwfile={root / 'pw'}"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        args = [*as_user, postgres, "-D", str(root / "data"), "-p", str(server.port)]
        args += ["-k", str(root), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]
        with log.open("w") as out:
            proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            _wait_ready(server, proc, log)
            yield server
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)  # fast shutdown
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(server: Server, proc: subprocess.Popen[bytes], log: Path) -> None:
    import psycopg2

    deadline = time.monotonic() + 60
    while True:
        try:
            psycopg2.connect(
                host=server.host,
                port=server.port,
                user=server.user,
                password=server.password,
                dbname=server.db,
            ).close()
            return
        except psycopg2.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"PostgreSQL did not start:\n{log.read_text()}") from None
            time.sleep(0.2)  # polling the server's readiness: there is no event to wait on

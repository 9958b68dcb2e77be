"""A real two-node Ray cluster on this machine, driven through `ray job submit`.

The head (`ray start --head`, token auth, its own ports and temp dir, custom resource
``node_a``) and a second node (`ray start --address ... --resources='{"node_b": 2}'
--num-cpus=1`) are started by the module fixture and stopped again by process group and by an
environment marker that only their processes carry: never `ray stop`, which would stop every
Ray process of this user on the machine. Custom resources place the trials: one `trial_slot`
per node, and `node_b` for the trial whose node is killed.

Also here: Optuna on a real PostgreSQL server that the test starts itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import UserError
from orchestrator.results import ResultsStore

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 180
JOB_TIMEOUT_S = 420

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc"),
]


_GIVEN: set[int] = set()


def _free_port() -> int:
    """A free port not handed out before in this session: the OS may offer a port again once
    its socket is closed, and `ray start` refuses two components on one port."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def _wait_for(what: str, check: Callable[[], bool], timeout: float, poll: float = 0.5) -> None:
    """Poll a condition with a deadline (there is no event to wait on across processes)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)


@dataclass
class Cluster:
    """The processes this module started, and how to talk to them."""

    gcs: str
    dashboard: str
    token: str
    env: dict[str, str]
    marker: str
    tmp: Path
    nodes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start_node(self, name: str, args: list[str]) -> None:
        log = self.tmp / f"{name}.log"
        ports = [
            f"--node-manager-port={_free_port()}",
            f"--object-manager-port={_free_port()}",
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--dashboard-agent-grpc-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
        ]
        temp = tempfile.mkdtemp(prefix=f"ms{name[0]}", dir="/tmp")  # short: unix socket paths
        cmd = [str(BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1"]
        cmd += [f"--temp-dir={temp}", "--disable-usage-stats", *ports, *args]
        with log.open("wb") as out:  # a new session: its own process group to stop
            proc = subprocess.Popen(
                cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.nodes[name] = proc

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"ray start ({name}) exited:\n{log.read_text()[-3000:]}")
            return "Ray runtime started" in log.read_text(errors="replace")

        _wait_for(f"Ray node {name}", up, START_TIMEOUT_S)

    def api(self, path: str, token: str | None = "") -> Any:
        """GET a dashboard endpoint with the cluster's token (None: no token at all)."""
        request = urllib.request.Request(self.dashboard + path)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token or self.token}")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def node_of(self, resource: str) -> str:
        """The node id of the alive node that has `resource` (the state API can list a node
        before its resources: asked again until it shows them)."""
        found: list[str] = []

        def one() -> bool:
            nodes = self.api("/api/v0/nodes?detail=1")["data"]["result"]["result"]
            found[:] = [
                str(n["node_id"])
                for n in nodes
                if n["state"] == "ALIVE" and resource in (n.get("resources_total") or {})
            ]
            return len(found) == 1

        _wait_for(f"one alive node with {resource}", one, 30)
        return found[0]

    def submit(
        self, workdir: Path, args: list[str], submission_id: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`ray job submit` (waits for the job and streams its log)."""
        return subprocess.run(
            [*self.submit_cmd(workdir, submission_id), *args],
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=JOB_TIMEOUT_S,
            check=False,
        )

    def submit_cmd(self, workdir: Path, submission_id: str) -> list[str]:
        cmd = [str(BIN / "ray"), "job", "submit", "--address", self.dashboard]
        return [*cmd, "--submission-id", submission_id, "--working-dir", str(workdir), "--"]

    def kill_raylet(self, name: str) -> None:
        """SIGKILL the raylet of one node (the node dies as on a lost machine)."""
        group = self.nodes[name].pid
        pids = [p for p in _ours(self.marker) if _stat(p) == (group, "raylet")]
        assert len(pids) == 1, pids
        os.kill(pids[0], signal.SIGKILL)

    def stop(self) -> None:
        """Stop exactly what was started: the node process groups, then every process that
        carries this cluster's marker (job drivers and workers start their own sessions)."""
        for proc in self.nodes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        for _ in range(3):
            for pid in _ours(self.marker):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        _wait_for("the cluster's processes to end", lambda: not _ours(self.marker), 30)


def _ours(marker: str) -> list[int]:
    """Processes whose environment carries `marker` (children inherit it)."""
    needle = f"MEDSWEEP_TEST_CLUSTER={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry))
    return found


def _stat(pid: int) -> tuple[int, str]:
    """(process group, command name) of a process, or (-1, "") when it is gone."""
    try:
        return os.getpgid(pid), Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return -1, ""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cluster")
    token = uuid.uuid4().hex + uuid.uuid4().hex
    marker = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # jobs find `medsweep` here
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
        MEDSWEEP_TEST_CLUSTER=marker,
        # a lost node is declared dead after ~2 s instead of ~30 s
        RAY_health_check_period_ms="500",
        RAY_health_check_timeout_ms="1000",
        RAY_health_check_failure_threshold="3",
        RAY_DEDUP_LOGS="0",
    )
    gcs, dash = _free_port(), _free_port()
    c = Cluster(f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dash}", token, env, marker, tmp)
    try:
        c.start_node(
            "head",
            [
                "--head",
                f"--port={gcs}",
                f"--dashboard-port={dash}",
                f"--ray-client-server-port={_free_port()}",
                "--num-cpus=1",
                '--resources={"node_a": 2, "trial_slot": 1}',
            ],
        )
        # --memory=0: node b holds Train workers only (Tune's trial coordinators reserve 1 byte
        # of memory), so losing it loses a run's workers, never a trial coordinator
        b = ["--num-cpus=1", "--memory=0", '--resources={"node_b": 2, "trial_slot": 1}']
        c.start_node("b", [f"--address={c.gcs}", *b])
        _wait_for("two alive nodes", lambda: _alive(c) == 2, 60)
        yield c
    finally:
        c.stop()


def _alive(c: Cluster) -> int:
    try:
        nodes = c.api("/api/v0/nodes")["data"]["result"]["result"]
    except (urllib.error.URLError, KeyError, ValueError):
        return 0
    return sum(n["state"] == "ALIVE" for n in nodes)


def _project(tmp: Path, name: str, body: str) -> Path:
    """A job's working_dir: just a config whose data path is relative (as in the README)."""
    folder = tmp / name
    folder.mkdir()
    (folder / "sweep.yaml").write_text(
        f"""
name: {name}
task: fundus
seed: 0
data:
  manifest: data/demo/labels.csv        # relative: synthesised by the driver
  synth: {{n: 48, size: 32, seed: 0}}
  image_size: 32
  val_fraction: 0.25
model: {{backbone: resnet10t}}
{body}
"""
    )
    return folder


def test_a_job_runs_trials_on_both_nodes_and_stores_every_row(
    cluster: Cluster, tmp_path: Path
) -> None:
    project = _project(
        tmp_path,
        "two-nodes",
        """
train: {epochs: 2, batch_size: 16}
resources: {workers: 1, cpus_per_worker: 1}
sweep:
  num_samples: 2
  max_concurrent: 2
  sampler: random
  space:
    train.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-3}
""",
    )
    store = tmp_path / "store"
    job = f"medsweep-it-{uuid.uuid4().hex[:8]}"
    # one trial slot per node: the two concurrent trials must run one on each node
    args = ["medsweep", "sweep", "sweep.yaml", "--set", "resources.custom={trial_slot: 1}"]
    out = cluster.submit(project, [*args, "--set", f"store.root={store}"], job)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]

    runs = ResultsStore(store).runs("two-nodes")
    assert len(runs) == 2 and set(runs["status"]) == {"completed"}
    assert set(runs["job_id"]) == {job}
    nodes = [n for cell in runs["nodes"] for n in json.loads(cell)]
    assert sorted(n["node_id"] for n in nodes) == sorted(
        [cluster.node_of("node_a"), cluster.node_of("node_b")]
    )
    assert all(n["ip"] and n["hostname"] for n in nodes)
    for _, row in runs.iterrows():
        # the trial read the driver's data by its absolute path
        manifest = json.loads(row["config"])["data"]["manifest"]
        assert os.path.isabs(manifest) and manifest.endswith("data/demo/labels.csv")
    # the dashboard's Train tab knows every run (medsweep turns state tracking on)
    train_tab = json.dumps(cluster.api("/api/train/v2/runs/v1"))
    assert all(run_id in train_tab for run_id in runs["run_id"])
    metrics = ResultsStore(store).metrics("two-nodes")
    auc = metrics[(metrics["split"] == "val") & (metrics["name"] == "auc")]
    assert sorted(auc["epoch"]) == [1, 1, 2, 2]


def test_a_submission_without_the_token_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    with pytest.raises(urllib.error.HTTPError) as err:
        cluster.api("/api/jobs/", token=None)
    assert err.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as err:
        cluster.api("/api/jobs/", token="0" * 64)
    assert err.value.code == 403

    project = _project(tmp_path, "refused", "")
    env = {k: v for k, v in cluster.env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token to fall back on
    job = f"medsweep-refused-{uuid.uuid4().hex[:8]}"
    out = cluster.submit(project, ["medsweep", "sweep", "sweep.yaml"], job, env=env)
    assert out.returncode != 0
    assert "AuthenticationError" in out.stderr and "RAY_AUTH_MODE" in out.stderr
    assert job not in {j["submission_id"] for j in cluster.api("/api/jobs/")}


def test_a_lost_node_fails_its_trial_and_the_sweep_finishes(
    cluster: Cluster, tmp_path: Path
) -> None:
    project = _project(
        tmp_path,
        "lost-node",
        """
train: {epochs: 60, batch_size: 16}
resources: {workers: 1, cpus_per_worker: 1, custom: {node_b: 1}}   # pinned to node b
failure: {max_retries: 0}
""",
    )
    node_b = cluster.node_of("node_b")
    store = tmp_path / "store"
    job = f"medsweep-fault-{uuid.uuid4().hex[:8]}"
    args = ["medsweep", "run", "sweep.yaml", "--name", "lost-node", "--set", f"store.root={store}"]
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            [*cluster.submit_cmd(project, job), *args],
            env=cluster.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            metrics = store / "lost-node" / "metrics"
            _wait_for("the first epoch on node b", lambda: any(metrics.glob("part-*")), 300)
            cluster.kill_raylet("b")
            proc.wait(timeout=JOB_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
        log.seek(0)
        text = log.read()
    assert proc.returncode == 1, text[-4000:]  # the sweep ended; a trial failed
    runs = ResultsStore(store).runs("lost-node")
    assert list(runs["status"]) == ["error"], text[-4000:]
    error = runs["error"].iloc[0].lower()
    assert "node" in error and any(w in error for w in ("terminated", "died", "dead")), error
    assert runs["epochs"].iloc[0] < 60
    nodes = json.loads(runs["nodes"].iloc[0])  # stored although the trial never finished
    assert [n["node_id"] for n in nodes] == [node_b], nodes


# --- Optuna on a real PostgreSQL server ---------------------------------------------------------
def _pg_bin(name: str) -> str | None:
    """On PATH, or where Debian's postgresql package puts the server tools."""
    import glob
    import shutil

    return shutil.which(name) or max(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), default=None)


@dataclass
class Postgres:
    url: str  # with the password
    password: str


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL server on a free port (initdb + pg_ctl in a temp dir); as root it
    runs as the `postgres` system user, since the server refuses to run as root."""
    import pwd
    import shutil

    pytest.importorskip("psycopg2", reason="psycopg2 missing: pip install '.[postgres]'")
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) missing: `make system-deps`")
    prefix: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a `postgres` user to run the server as")
        prefix = [shutil.which("runuser") or "runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="mspg", dir="/tmp"))  # reachable by that user
    password = f"pw-{uuid.uuid4().hex}"
    (root / "pw").write_text(password)
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
        os.chown(root / "pw", owner.pw_uid, owner.pw_gid)
    port, data = _free_port(), root / "data"

    def pg(*args: str, check: bool = True) -> None:
        subprocess.run([*prefix, *args], check=check, capture_output=True, timeout=120)

    auth = ["--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8"]
    pg(initdb, "-D", str(data), "-U", "medsweep", f"--pwfile={root / 'pw'}", *auth)
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=60"
    pg(pg_ctl, "-D", str(data), "-l", str(root / "log"), "-o", options, "-w", "start")
    try:
        # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; the `postgres` extra installs
        # psycopg2, which is named explicitly
        url = f"postgresql+psycopg2://medsweep:{password}@127.0.0.1:{port}/postgres"
        yield Postgres(url, password)
    finally:
        pg(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)


def test_many_concurrent_writers_share_one_study(postgres: Postgres, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import optuna

    from orchestrator.engine import open_storage

    def worker(_: int) -> None:  # each with its own connection pool, as separate drivers
        storage = open_storage(postgres.url, tmp_path, "pg.yaml")
        study = optuna.create_study(study_name="shared", storage=storage, load_if_exists=True)
        for _ in range(5):
            trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
            study.tell(trial, trial.params["x"] ** 2)

    open_storage(postgres.url, tmp_path, "pg.yaml")  # creates the schema (not race-free)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))
    # a driver that is not installed is a clear exit-2 error, without the password
    import importlib.util

    if importlib.util.find_spec("psycopg") is None:
        plain = postgres.url.replace("+psycopg2", "")
        with pytest.raises(UserError, match="No module named 'psycopg'") as err:
            open_storage(plain, tmp_path, "pg.yaml")
        assert postgres.password not in err.value.render()
    study = optuna.load_study(study_name="shared", storage=postgres.url)
    numbers = sorted(t.number for t in study.trials)
    assert numbers == list(range(40))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


@pytest.mark.ray
def test_a_sweep_on_postgres_resumes_after_its_driver_dies(
    postgres: Postgres, tmp_path: Path, fundus_csv: Path, ray_session: None, capfd: Any
) -> None:
    import optuna
    import ray

    import orchestrator

    store = tmp_path / "store"
    config = tmp_path / "pg.yaml"
    config.write_text(
        f"""
name: pg
task: fundus
seed: 0
data: {{manifest: {fundus_csv}, image_size: 32, val_fraction: 0.25}}
model: {{backbone: resnet10t}}
train: {{epochs: 2, batch_size: 16}}
store: {{root: {store}}}
sweep:
  num_samples: 2
  max_concurrent: 2
  sampler: random
  space:
    train.lr: {{type: loguniform, low: 1.0e-4, high: 1.0e-2}}
"""
    )
    storage = ["--set", f"sweep.storage={postgres.url}"]
    # a driver of its own that joins the shared local Ray, killed mid-trial (first epoch done)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_ADDRESS=ray.get_runtime_context().gcs_address, RAY_AUTH_MODE="token")
    with tempfile.TemporaryFile("w+") as log:
        driver = subprocess.Popen(
            [str(BIN / "medsweep"), "sweep", str(config), *storage],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            metrics = store / "pg" / "metrics"
            _wait_for("a first epoch", lambda: any(metrics.glob("part-*")), 300)
        finally:
            driver.kill()
            driver.wait(timeout=60)
        log.seek(0)
        first_output = log.read()
    assert _completed(store, "pg") < 2, "the driver was not stopped mid-sweep"

    out = orchestrator.sweep(config, {"sweep.storage": postgres.url}, name="pg", resume=True)
    assert out.errors == 0
    runs = ResultsStore(store).runs("pg")
    assert (runs["status"] == "completed").sum() == 2
    study = optuna.load_study(study_name="pg", storage=postgres.url)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 2

    # the password is nowhere in the store, the Tune/Train folders or the output
    captured = capfd.readouterr()
    assert postgres.password not in first_output + captured.out + captured.err
    needle = postgres.password.encode()
    leaks = [p for p in store.rglob("*") if p.is_file() and needle in p.read_bytes()]
    assert leaks == []
    assert (
        "***" in json.loads((store / "pg" / "sweep.json").read_text())["config"]["sweep"]["storage"]
    )


def _completed(store: Path, sweep: str) -> int:
    try:
        runs = ResultsStore(store).runs(sweep)
    except Exception:  # nothing written yet
        return 0
    return int((runs["status"] == "completed").sum()) if len(runs) else 0

"""deploy/: manifests parse and carry what a cluster needs, shell scripts pass `bash -n` and
shellcheck, the SLURM and PJM scripts print the right commands in a dry run with faked
scheduler variables, and the Dockerfile builds where a container engine answers."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SCRIPTS = [DEPLOY / "slurm" / "medsweep.sbatch", DEPLOY / "pjm" / "medsweep.pjm"]
SCRIPTS += [DEPLOY / "system-deps.sh"]
CLEAN_PATH = "/usr/bin:/bin"  # no ray, scontrol or medsweep: a dry run must not need them


def _yaml_docs(name: str) -> list[Any]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d is not None]


# --- manifests --------------------------------------------------------------------------------
def test_the_rayjob_runs_medsweep_on_shared_volumes_with_token_auth() -> None:
    docs = {d["kind"]: d for d in _yaml_docs("kuberay/rayjob.yaml")}
    assert set(docs) == {"PersistentVolumeClaim", "RayJob"}
    pvc = docs["PersistentVolumeClaim"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # every pod writes the store

    job = docs["RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    spec, cluster = job["spec"], job["spec"]["rayClusterSpec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert cluster["rayVersion"] == version("ray")  # the pinned Ray
    assert cluster["authOptions"] == {"mode": "token"}

    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["medsweep", "sweep"] and (REPO / argv[2]).is_file()
    store = next(a.split("=", 1)[1] for a in argv if a.startswith("store.root="))

    head = cluster["headGroupSpec"]["template"]["spec"]
    workers = [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    images = {c["image"] for pod in [head, *workers] for c in pod["containers"]}
    assert len(images) == 1  # one image for head and workers
    for pod in [head, *workers]:
        mounts = {m["mountPath"] for c in pod["containers"] for m in c["volumeMounts"]}
        assert {store, "/data"} <= mounts  # store and data on every node (the preflight checks)
        claims = {
            v["persistentVolumeClaim"]["claimName"]
            for v in pod["volumes"]
            if "persistentVolumeClaim" in v
        }
        assert pvc["metadata"]["name"] in claims
    for pod in workers:
        limits = pod["containers"][0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1
        assert "/dev/shm" in {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}

    from orchestrator.config import load

    config = load(REPO / argv[2])  # the job's config reads its data from the mounted /data
    sources = config.task.data.sources  # type: ignore[attr-defined]
    assert all(s.manifest.startswith("/data/") for s in sources)


def test_the_cluster_launcher_config_passes_rays_own_validation() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    (config,) = _yaml_docs("cluster.yaml")
    validate_config(prepare_config(config))
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c)
    assert "~/.ray/auth_token" in config["file_mounts"]
    assert any("-c ~/medsweep/constraints.txt" in c for c in config["setup_commands"])


def test_the_runtime_env_ships_code_only() -> None:
    from ray.runtime_env import RuntimeEnv

    (env,) = _yaml_docs("runtime_env.yaml")
    RuntimeEnv(**env)  # Ray validates the fields
    assert env["working_dir"] == "."
    assert {"data/", "medsweep_results/", ".venv/", ".git/"} <= set(env["excludes"])


def test_the_dockerfile_copies_what_exists_and_checks_the_cli() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), source
    assert 'ENTRYPOINT ["medsweep"]' in text and "medsweep --help" in text
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", "data", "medsweep_results"} <= set(ignored)


def _engine() -> str | None:
    for name in ("docker", "podman"):
        exe = shutil.which(name)
        if exe and subprocess.run([exe, "info"], capture_output=True, timeout=30).returncode == 0:
            return exe
    return None


@pytest.mark.timeout(3600)
def test_the_image_builds_and_answers_help(tmp_path: Path) -> None:
    engine = _engine()
    if engine is None:
        pytest.skip(
            "no container engine: `docker info` / `podman info` fail (a client alone cannot build)"
        )
    tag = f"medsweep-test:{os.getpid()}"
    build = [engine, "build", "-f", str(DEPLOY / "Dockerfile"), "-t", tag, str(REPO)]
    subprocess.run(build, check=True, capture_output=True, timeout=3600)
    try:
        out = subprocess.run(
            [engine, "run", "--rm", tag, "--help"], capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0 and "medsweep" in out.stdout
    finally:
        subprocess.run([engine, "rmi", "-f", tag], capture_output=True, timeout=300)


# --- shell scripts ----------------------------------------------------------------------------
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse(script: Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_pass_shellcheck(script: Path) -> None:
    exe = shutil.which("shellcheck")
    if exe is None:
        pytest.skip("shellcheck is not installed (`make system-deps` installs it with apt-get)")
    out = subprocess.run([exe, "--shell=bash", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def _dry_run(script: Path, tmp_path: Path, **env: str) -> tuple[list[list[str]], str]:
    """Run a script with DRY_RUN=1: its printed commands (`+ ...` lines, split) and all output."""
    base = {"PATH": CLEAN_PATH, "HOME": str(tmp_path / "home"), "DRY_RUN": "1"}
    out = subprocess.run(
        ["bash", str(script)],
        env={**base, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    commands = [
        shlex.split(line[2:].split("   #")[0])
        for line in out.stdout.splitlines()
        if line.startswith("+ ")
    ]
    return commands, out.stdout + out.stderr


def _options(argv: list[str]) -> dict[str, str]:
    return dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)


def test_slurm_dry_run_prints_its_cluster_and_sweep(tmp_path: Path) -> None:
    commands, text = _dry_run(
        SCRIPTS[0],
        tmp_path,
        SLURM_JOB_ID="4242",
        SLURM_JOB_NODELIST="gpu[01-02,07]",
        SLURM_CPUS_PER_TASK="16",
        SLURM_GPUS_PER_TASK="a100:4",
        HEAD_IP="10.1.2.3",
        CONFIG="configs/fundus_paper.yaml",
        STORE_ROOT="/nfs/lab/results",
        MEDSWEEP_ARGS="--name paper --resume",
    )
    head, *workers, sweep, stop = commands
    assert head[:7] == [
        "srun",
        "--nodes=1",
        "--ntasks=1",
        "--cpus-per-task=16",
        "--gpus-per-task=4",
        "-w",
        "gpu01",
    ]
    assert head[7:10] == ["ray", "start", "--head"] and head[-1] == "--block"
    opts = _options(head)
    assert (opts["port"], opts["num-gpus"], opts["num-cpus"]) == ("6379", "4", "16")
    assert opts["temp-dir"] == "/tmp/ray_4242" and opts["node-ip-address"] == "10.1.2.3"
    assert [w[6] for w in workers] == ["gpu02", "gpu07"]
    for worker in workers:
        assert worker[7:9] == ["ray", "start"] and worker[-1] == "--block"
        assert _options(worker)["address"] == "10.1.2.3:6379"
    assert sweep == [
        "medsweep",
        "sweep",
        "configs/fundus_paper.yaml",
        "--set",
        "store.root=/nfs/lab/results",
        "--name",
        "paper",
        "--resume",
    ]
    assert stop[:2] == ["kill", "-TERM"] and text.count("<pid of ray start on") == 3
    assert "ray stop" not in text.replace("never ray stop", "")
    assert not (tmp_path / "home").exists()  # a dry run writes no token file


def test_slurm_uses_scontrol_for_the_node_list_when_there_is_one(tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "scontrol").write_text("#!/bin/sh\nprintf 'alpha\\nbeta\\n'\n")
    (fake / "scontrol").chmod(0o755)
    commands, _ = _dry_run(
        SCRIPTS[0],
        tmp_path,
        PATH=f"{fake}:{CLEAN_PATH}",
        SLURM_JOB_ID="1",
        SLURM_JOB_NODELIST="ignored",
        HEAD_IP="10.0.0.1",
    )
    assert [c[c.index("-w") + 1] for c in commands if c[0] == "srun"] == ["alpha", "beta"]


def test_pjm_dry_run_starts_workers_by_remote_shell_and_stops_only_them(tmp_path: Path) -> None:
    nodefile = tmp_path / "nodes"
    nodefile.write_text(f"{socket.gethostname()}\nnode02\nnode02\n10.0.0.9\n")
    commands, text = _dry_run(
        SCRIPTS[1],
        tmp_path,
        PJM_JOBID="77",
        PJM_O_NODEINF=str(nodefile),
        PJM_O_WORKDIR=str(tmp_path),
        GPUS_PER_NODE="4",
        HEAD_IP="10.0.0.1",
        STORE_ROOT="/work/grp/results",
    )
    head, start2, start9, sweep, stop2, stop9, stop_head = commands
    assert head[:3] == ["ray", "start", "--head"] and head[-1] == "--block"
    assert _options(head)["num-gpus"] == "4"
    for start, node in ((start2, "node02"), (start9, "10.0.0.9")):
        assert start[:2] == ["pjrsh", node]
        remote = shlex.split(start[2])
        assert "RAY_AUTH_MODE=token" in remote
        ray = remote[remote.index("exec") + 1 :]
        assert ray[:2] == ["ray", "start"] and ray[-1] == "--block"
        assert _options(ray)["address"] == "10.0.0.1:6379"
    assert sweep == [
        "medsweep",
        "sweep",
        "configs/fundus_paper.yaml",
        "--set",
        "store.root=/work/grp/results",
    ]
    for stop, node in ((stop2, "node02"), (stop9, "10.0.0.9")):
        assert stop[:2] == ["pjrsh", node] and stop[2].startswith(
            "kill -TERM $(cat /tmp/ray_77.ray-start.pid)"
        )
    assert stop_head[:2] == ["kill", "-TERM"]
    assert "ray stop" not in text.replace("never ray stop", "")


def test_pjm_refuses_a_node_file_without_this_host(tmp_path: Path) -> None:
    nodefile = tmp_path / "nodes"
    nodefile.write_text("elsewhere01\nelsewhere02\n")
    env = {
        "PATH": CLEAN_PATH,
        "HOME": str(tmp_path),
        "DRY_RUN": "1",
        "PJM_O_NODEINF": str(nodefile),
    }
    out = subprocess.run(
        ["bash", str(SCRIPTS[1])], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and "is not in" in out.stderr

"""Path resolution, the per-node preflight and the resource checks, mostly without Ray."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator import engine, paths, preflight
from orchestrator.config import from_dict
from orchestrator.errors import UserError
from orchestrator.preflight import Probe, Target, check_node, fingerprint, make_probe


def _raw(**data: Any) -> dict[str, Any]:
    return {
        "name": "pf",
        "task": "fundus",
        "data": {"manifest": "data/labels.csv", "image_size": 32, **data},
        "model": {"backbone": "resnet10t"},
        "train": {"epochs": 1, "batch_size": 8},
        "store": {"root": "results"},
    }


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- paths ------------------------------------------------------------------------------------
def test_relative_paths_become_absolute_to_the_current_directory(cwd: Path) -> None:
    (cwd / "data").mkdir()
    (cwd / "data" / "labels.csv").write_text("path,label\n")
    (cwd / "w.pth").write_bytes(b"w")
    raw = _raw()
    raw["model"].update(weights="w.pth", pretrained=True)
    raw["sweep"] = {"storage": "sqlite:///optuna.db"}
    raw["cv"] = {"folds": 2, "test_fraction": 0.2}
    raw["pseudo"] = {"rounds": 1, "pool": "unlabelled.csv"}
    config = paths.resolve_paths(from_dict(raw, source="x.yaml", check_sweep=False))
    assert config.task.data.manifest == str(cwd / "data" / "labels.csv")  # type: ignore[attr-defined]
    assert config.task.model.weights == str(cwd / "w.pth")  # type: ignore[attr-defined]
    assert config.experiment.store.root == str(cwd / "results")  # created or not: always
    assert config.experiment.sweep.storage == f"sqlite:///{cwd / 'optuna.db'}"
    assert config.experiment.pseudo is not None
    assert config.experiment.pseudo.pool == str(cwd / "unlabelled.csv")
    assert paths.resolve_paths(config) is config  # idempotent
    assert ("data.manifest", str(cwd / "data" / "labels.csv")) in paths.path_values(config)


def test_names_that_are_not_paths_stay_as_they_are(cwd: Path) -> None:
    # a folder named like the backbone, a column and a literal: none of them is a path
    for name in ("resnet10t", "path", "adamw"):
        (cwd / name).mkdir()
    raw = _raw()
    raw["train"]["optimizer"] = "adamw"
    raw["data"]["cache_dir"] = "s3://bucket/cache"
    raw["store"]["root"] = "s3://bucket/results"
    config = paths.resolve_paths(from_dict(raw, source="x.yaml", check_sweep=False))
    assert config.task.model.backbone == "resnet10t"  # type: ignore[attr-defined]
    assert config.task.train.optimizer == "adamw"
    assert config.task.data.cache_dir == "s3://bucket/cache"  # type: ignore[attr-defined]
    assert config.experiment.store.root == "s3://bucket/results"
    assert config.task.data.manifest == "data/labels.csv"  # type: ignore[attr-defined]  # not there


def test_artifact_references_keep_their_file_and_get_an_absolute_store(cwd: Path) -> None:
    (cwd / "backbone.pt").write_bytes(b"x")  # must not capture ArtifactRef.file
    raw = {
        "name": "det",
        "task": "detection",
        "data": {"train": "a.json", "val": "b.json"},
        "model": {"weights_from": {"sweep": "pre", "file": "backbone.pt", "store": "other"}},
    }
    config = paths.resolve_paths(from_dict(raw, source="x.yaml", check_sweep=False))
    ref = config.task.model.weights_from  # type: ignore[attr-defined]
    assert (ref.file, ref.store) == ("backbone.pt", str(cwd / "other"))


def test_demo_data_is_synthesised_then_resolved_and_checked_again(cwd: Path) -> None:
    raw = _raw(synth={"n": 16, "size": 32, "seed": 3})
    config = paths.resolve_paths(from_dict(raw, source="x.yaml", check_sweep=False))
    seen: list[str] = []
    config, task = paths.with_checked_task(config, lambda c: _checked(c, seen))
    absolute = str(cwd / "data" / "labels.csv")
    assert seen == ["data/labels.csv", absolute]  # checked again with the absolute path
    assert config.task.data.manifest == absolute  # type: ignore[attr-defined]
    assert all(os.path.isabs(p) for p in task.cases()["path"])


def _checked(config: Any, seen: list[str]) -> Any:
    seen.append(config.task.data.manifest)
    return engine._checked_task(config)


# --- what a node checks -----------------------------------------------------------------------
def _probe(cwd: Path, **extra: Any) -> tuple[Any, Probe]:
    raw = _raw(synth={"n": 16, "size": 32, "seed": 3})
    config = paths.resolve_paths(from_dict(raw, source="x.yaml", check_sweep=False))
    config, task = paths.with_checked_task(config, engine._checked_task)
    probe = make_probe(config, task)
    Path(probe.store_root).mkdir()
    (Path(probe.store_root) / probe.marker).write_text(probe.token)
    return config, probe


def test_a_node_that_sees_the_same_files_and_store_passes(cwd: Path) -> None:
    _, probe = _probe(cwd)
    kinds = {t.field for t in probe.targets}
    assert "data.manifest" in kinds and "a case file (column path)" in kinds
    assert check_node(probe, "n1").problems == ()
    assert os.listdir(probe.store_root) == [probe.marker]  # the write check left nothing


def test_missing_different_and_unshared_paths_are_named(cwd: Path) -> None:
    _, probe = _probe(cwd)
    manifest = next(t.path for t in probe.targets if t.field == "data.manifest")
    image = next(t.path for t in probe.targets if t.field.startswith("a case file"))
    Path(image).write_bytes(b"another image")
    os.remove(manifest)
    os.remove(Path(probe.store_root) / probe.marker)
    problems = {(p.field, p.path, p.what) for p in check_node(probe, "n1").problems}
    assert ("data.manifest", manifest, "missing") in problems
    assert ("a case file (column path)", image, "differs") in problems
    assert ("store.root", probe.store_root, "not shared") in problems


def test_a_store_a_node_cannot_write_is_named(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, probe = _probe(cwd)

    def refuse(self: Path, *args: Any, **kwargs: Any) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "write_text", refuse)
    assert [p.what for p in check_node(probe, "n1").problems] == ["not writable"]


def test_a_node_without_the_demo_data_synthesises_identical_bytes(cwd: Path) -> None:
    _, probe = _probe(cwd)
    data = cwd / "data"
    before = {p.name: fingerprint(p) for p in sorted((data / "images").iterdir())}
    shutil.rmtree(data)  # as on a node that never saw the driver's disk
    assert check_node(probe, "n2").problems
    report = preflight.synthesise_and_check(probe, "n2")
    assert report.problems == () and "synthesised 16 images" in report.note
    after = {p.name: fingerprint(p) for p in sorted((data / "images").iterdir())}
    assert after == before


def test_real_data_is_never_synthesised(cwd: Path) -> None:
    config, probe = _probe(cwd)
    raw = config.to_dict()
    raw["data"]["synth"] = None
    no_synth = Probe(**{**probe.__dict__, "config": raw})
    os.remove(raw["data"]["manifest"])
    report = preflight.synthesise_and_check(no_synth, "n2")
    assert [p.field for p in report.problems] == ["data.manifest"]
    assert not os.path.exists(raw["data"]["manifest"])


def test_the_failure_names_node_path_and_what_to_do(cwd: Path) -> None:
    config, _ = _probe(cwd)
    nodes = [{"NodeID": "ab" * 28, "NodeManagerAddress": "10.0.0.7", "NodeManagerHostname": "g7"}]
    problem = preflight.Problem("data.manifest", "/data/labels.csv", "missing")
    err = preflight._failure(config, nodes, [preflight.NodeReport("ab" * 28, (problem,))], 2)
    text = err.render()
    assert text.startswith("x.yaml, field data.manifest: preflight: 1 of 2 nodes")
    assert "node abababababab (10.0.0.7, g7) cannot see /data/labels.csv" in text
    assert "shared" in text and "working_dir is for code only" in text
    assert "\n" not in text


def test_fingerprint_reads_only_the_ends_of_big_files(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"a" * (3 << 20))
    first = fingerprint(big)
    with big.open("r+b") as fh:  # a change in the middle is not seen; size and ends are
        fh.seek(3 << 19)
        fh.write(b"b")
    assert fingerprint(big) == first
    with big.open("ab") as fh:
        fh.write(b"c")
    assert fingerprint(big) != first


# --- on the shared local Ray ------------------------------------------------------------------
@pytest.mark.ray
def test_one_local_node_needs_no_task(cwd: Path, ray_session: None) -> None:
    config, _ = _probe(cwd)
    start = time.perf_counter()
    assert preflight.preflight(config, object()) == []  # `object()`: no probe is even built
    assert time.perf_counter() - start < 1.0


@pytest.mark.ray
def test_each_node_runs_the_check_as_a_ray_task(cwd: Path, ray_session: None) -> None:
    import ray

    _, probe = _probe(cwd)
    nodes = [n for n in ray.nodes() if n["Alive"]]
    reports = preflight._run_everywhere(nodes, probe, timeout=120)
    assert [r.problems for r in reports.values()] == [()]
    bad = Probe(**{**probe.__dict__, "targets": (Target("data.x", "/nonexistent/x", "file"),)})
    reports = preflight._run_everywhere(nodes, bad, timeout=120)
    assert [p.what for r in reports.values() for p in r.problems] == ["missing"]


@pytest.mark.ray
def test_a_failing_node_stops_the_sweep_and_leaves_no_store(
    cwd: Path, ray_session: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, probe = _probe(cwd)
    shutil.rmtree(probe.store_root)
    bad = Target("model.weights", str(cwd / "w.pth"), "file", "0")  # the driver's checksum
    (cwd / "w.pth").write_bytes(b"the node's own copy")
    with_bad = Probe(**{**probe.__dict__, "targets": (bad,)})
    monkeypatch.setattr(preflight, "make_probe", lambda c, t: with_bad)
    monkeypatch.setattr(preflight, "_only_the_driver", lambda nodes: False)
    with pytest.raises(UserError) as err:
        preflight.preflight(config, object(), timeout_s=120)
    assert err.value.where == "field model.weights"
    assert f"sees another file at {cwd / 'w.pth'} than the driver" in err.value.message
    assert "identical" in err.value.message
    assert not os.path.exists(probe.store_root)  # created for the check, removed again


# --- resources --------------------------------------------------------------------------------
def _cluster(monkeypatch: pytest.MonkeyPatch, *nodes: dict[str, float]) -> None:
    import ray

    total: dict[str, float] = {}
    for node in nodes:
        for key, value in node.items():
            total[key] = total.get(key, 0.0) + value
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": n} for n in nodes])
    monkeypatch.setattr(ray, "cluster_resources", lambda: total)


@pytest.mark.parametrize(
    ("resources", "where", "words"),
    [
        ({"cpus_per_worker": 3}, "resources.cpus_per_worker", "3 CPU but the largest node has 2"),
        ({"gpus_per_worker": 1}, "resources.gpus_per_worker", "1 GPU but the largest node has 0"),
        ({"custom": {"node_c": 1}}, "resources.custom.node_c", "1 node_c but the largest"),
        ({"workers": 4, "cpus_per_worker": 1}, "resources.workers", "at most 3 such worker(s)"),
        (
            {"workers": 3, "cpus_per_worker": 1, "placement_strategy": "STRICT_PACK"},
            "resources.workers",
            "(STRICT_PACK): the cluster's nodes hold at most 2 such worker(s) (limited by CPU",
        ),
        ({"workers": 2, "custom": {"node_b": 1}}, "resources.workers", "limited by node_b"),
    ],
)
def test_unplaceable_workers_are_refused_naming_the_resource(
    monkeypatch: pytest.MonkeyPatch, resources: dict[str, Any], where: str, words: str
) -> None:
    _cluster(monkeypatch, {"CPU": 2.0, "node_a": 2.0}, {"CPU": 1.0, "node_b": 1.0})
    raw = {**_raw(), "resources": resources}
    with pytest.raises(UserError) as err:
        engine._check_resources(from_dict(raw, source="x.yaml", check_sweep=False))
    assert err.value.where == f"field {where}"
    assert words in err.value.message


@pytest.mark.ray
def test_an_unplaceable_sweep_is_refused_before_anything_is_stored(
    cwd: Path, fundus_csv: Path, ray_session: None
) -> None:
    import orchestrator

    raw = {**_raw(manifest=str(fundus_csv)), "resources": {"workers": 3}}  # 2 local CPUs
    with pytest.raises(UserError) as err:
        orchestrator.run(from_dict(raw, source="x.yaml"), name="too-big")
    assert err.value.where == "field resources.workers" and "limited by CPU" in err.value.message
    assert not (cwd / "results" / "too-big").exists()


def test_workers_that_fit_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    _cluster(monkeypatch, {"CPU": 2.0, "node_a": 2.0}, {"CPU": 1.0, "node_b": 2.0})
    for resources in (
        {"workers": 3},
        {"custom": {"node_b": 1}},
        {"workers": 2, "cpus_per_worker": 0.5},
    ):
        engine._check_resources(from_dict({**_raw(), "resources": resources}, check_sweep=False))


def test_custom_resources_are_validated() -> None:
    for bad in ({"GPU": 1}, {"node_b": 0}):
        with pytest.raises(UserError, match=r"resources\.custom"):
            from_dict({**_raw(), "resources": {"custom": bad}}, source="x.yaml")


def test_the_job_submission_id_comes_from_the_job_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_JOB_SUBMISSION_ID", raising=False)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert engine.job_submission_id() == ""
    job_config = '{"runtime_env": {}, "metadata": {"job_submission_id": "raysubmit_42"}}'
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", job_config)
    assert engine.job_submission_id() == "raysubmit_42"

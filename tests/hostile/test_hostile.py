"""The hostile-input corpus (`cases.yaml`): every case gets its exit code and a message that names
what is wrong, never a traceback, and leaves the results store exactly as it was."""

from __future__ import annotations

import copy
import hashlib
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.cli import main

HERE = Path(__file__).resolve().parent
CORPUS = yaml.safe_load((HERE / "cases.yaml").read_text(encoding="utf-8"))
CASES: list[dict[str, Any]] = CORPUS["cases"]
STORE_FIXTURE = HERE.parent / "fixtures" / "store_v1"


def test_the_corpus_is_big_and_well_formed() -> None:
    ids = [c["id"] for c in CASES]
    assert len(ids) >= 60 and len(set(ids)) == len(ids)
    for case in CASES:
        assert {"id", "argv", "exit", "says"} <= set(case), case["id"]
        assert set(case) <= {"id", "argv", "exit", "says", "config", "files", "never", "ray"} | {
            "seconds"
        }, case["id"]


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A valid tiny data set and a store holding one sweep, shared by every case."""
    from tasks.fundus.synth import generate

    data = generate(tmp_path_factory.mktemp("hostile-data"), n=16, size=32, seed=5).parent
    store = tmp_path_factory.mktemp("hostile-store") / "store"
    shutil.copytree(STORE_FIXTURE, store, ignore=shutil.ignore_patterns("README.md"))
    return {"data": data, "store": store}


def _fill(value: Any, names: dict[str, str]) -> Any:
    """Placeholders replaced in every string (plain replace: JSON braces stay as they are)."""
    if isinstance(value, str):
        for key, text in names.items():
            value = value.replace("{" + key + "}", text)
        return value
    if isinstance(value, dict):
        return {_fill(k, names): _fill(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    return value


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _huge(base: dict[str, Any], n: int, last: int | None) -> str:
    """A valid config searching `n` batch sizes (the last one replaced by `last`)."""
    values = list(range(1, n + 1))
    if last is not None:
        values[-1] = last
    head = yaml.safe_dump(_merge(base, {"sweep": {"num_samples": 1}}), sort_keys=False)
    return head + f"  space:\n    train.batch_size: {{type: choice, values: {values}}}\n"


def _write(case: dict[str, Any], folder: Path, names: dict[str, str]) -> None:
    base = _fill(CORPUS["base"], names)
    if "config" in case:
        config = _merge(base, _fill(case["config"], names))
        (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for name, spec in _fill(case.get("files") or {}, names).items():
        path = folder / name
        if isinstance(spec, str):
            path.write_text(spec, encoding="utf-8")
        elif "copy" in spec:
            shutil.copy(HERE / "files" / spec["copy"], path)
        elif "encoding" in spec:
            path.write_bytes(spec["text"].encode(spec["encoding"]))
        else:
            path.write_text(_huge(base, int(spec["choice"]), spec.get("last")))


def _fingerprint(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    } | {str(p.relative_to(root)) + "/": "dir" for p in root.rglob("*") if p.is_dir()}


def _reached_ray(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("this case reached Ray: it should have been refused before")


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_hostile_input(
    case: dict[str, Any],
    places: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    if case.get("ray"):
        request.getfixturevalue("ray_session")
    else:
        monkeypatch.setattr("orchestrator.engine.connect_ray", _reached_ray)
    names = {
        "case": str(tmp_path),
        "config": str(tmp_path / "config.yaml"),
        "data": str(places["data"]),
        "store": str(places["store"]),
    }
    _write(case, tmp_path, names)
    before = _fingerprint(places["store"]), _fingerprint(places["data"])
    started = time.monotonic()
    try:
        code = main([str(a) for a in _fill(case["argv"], names)])
    except SystemExit as stop:  # argparse's own exits
        code = stop.code if isinstance(stop.code, int) else 1
    took = time.monotonic() - started
    out, err = capsys.readouterr()
    text = out + err
    assert code == case["exit"], text[-2000:]
    assert case["says"].lower() in text.lower(), text[-2000:]
    assert "Traceback" not in text, text
    for secret in case.get("never") or []:
        assert secret not in text
    assert (_fingerprint(places["store"]), _fingerprint(places["data"])) == before
    assert not (tmp_path / "pwned").exists()
    if "seconds" in case:
        assert took < case["seconds"], f"took {took:.1f} s"

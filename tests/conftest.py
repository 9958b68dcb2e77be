"""Shared fixtures: one small synthetic fundus dataset and one Ray instance per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    """Import Ray before any test runs: importing it sets up its log handlers on the current
    sys.stderr, and inside a test that is the test's capture buffer, closed when the test ends;
    later Ray log lines would then print "Logging error" tracebacks into other tests' output."""
    import ray  # noqa: F401


@pytest.fixture(scope="session", autouse=True)
def _private_caches(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep preprocessing caches and pseudonymisation keys of the tests out of ~/."""
    saved = {k: os.environ.get(k) for k in ("MEDSWEEP_CACHE", "MEDSWEEP_SECRETS_DIR")}
    os.environ["MEDSWEEP_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["MEDSWEEP_SECRETS_DIR"] = str(tmp_path_factory.mktemp("secrets"))
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def fundus_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tasks.fundus.synth import generate

    return generate(tmp_path_factory.mktemp("fundus"), n=64, size=64, seed=1)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray for all integration tests (starting one costs seconds)."""
    import ray

    os.environ.pop("RAY_ADDRESS", None)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="WARNING",
    )
    yield
    ray.shutdown()


def write_config(path: Path, body: str) -> Path:
    path.write_text(body)
    return path

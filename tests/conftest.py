"""Shared fixtures: paths to the shipped sample and to ../shared (skipped cleanly when absent),
a loopback Redis (`local_redis`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from onerec.features.redis_server import LocalRedis, find_redis_server

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "data" / "kuairand-pure"
SHARED = ROOT.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def shipped_dir() -> Path:
    return SHIPPED


def shared_dataset(name: str) -> Path:
    """Path of a dataset under ../shared/datasets, or skip the test when it is not there."""
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"../shared/datasets/{name} not available")
    return path


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`make test` runs two workers on the 2-core machine), each worker keeps
    to one intra-op thread, so two workers do not oversubscribe the cores with OpenMP spinning."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one thread is faster than two fighting over a shared 2-core machine
    (a test module opts in with `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def in_ci() -> bool:
    """CI=true (GitHub Actions, GitLab, .ci/run): a suite that cannot run must fail there."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def redis_server_binary(install: bool = True, path: str | None = None) -> str:
    """redis-server's path, installing Debian's package when it is missing and we may (root,
    apt-get). Absent: the test is skipped, but in CI it fails: a Redis suite skipped there
    would report a pass for tests that never ran."""
    binary = find_redis_server(install=install, path=path)
    if binary is None:
        why = ("redis-server is not installed and could not be installed here (needs root and "
               "apt-get: apt-get install -y redis-server)")
        if in_ci():
            pytest.fail(f"CI=true: {why}; .ci/run installs it before make test", pytrace=False)
        pytest.skip(why)
    return binary


@pytest.fixture(scope="session")
def local_redis() -> Iterator[LocalRedis]:
    """A redis-server on 127.0.0.1 (free port, no persistence, temporary folder) for the
    session, stopped at its end. Tests take a database each (`connection_string(db)`)."""
    with LocalRedis(redis_server_binary()) as server:
        yield server

"""Shared fixtures: paths to the shipped sample and to ../shared (skipped cleanly when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

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

"""Shared fixtures: paths to the shipped sample and to ../shared (skipped cleanly when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

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

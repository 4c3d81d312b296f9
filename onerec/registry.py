"""The state a continuous-training loop carries between cycles: the production model and a ledger.

A pipeline run is stateless by itself (KFP passes artifacts between the steps of one run only),
so what the next cycle needs lives in one folder, `ROOT` (a PVC on a cluster, a run folder on
a laptop):

    ROOT/production/          the model that serves now, replaced whole by `publish`:
        checkpoint/           weights + Config + meta.json (watermark_ms: newest request trained on)
        codebook/             the codebook it was trained with (+ the embedder state for refreshes)
        reference.json        statistics of the last accepted data batch (the next drift check)
        meta.json             version, watermark, held-out metrics, the cycle that made it
    ROOT/models/<version>/    every published version (the export, or the checkpoint without one):
                              the storage the GitOps commit points at
    ROOT/gitops/              the GitOps repository (created from k8s/ on the first publish)
    ROOT/runs/<run_id>/<stage>.json   one record per stage and run: what ran, what it measured

Why a folder and not a model registry service: the laptop and the cluster run the same code,
and a folder swapped in with one rename (`onerec.io.atomic_dir`) is never half-published.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onerec.io import atomic_dir, atomic_write_text

PRODUCTION = "production"
MODELS = "models"
GITOPS = "gitops"
RUNS = "runs"


@dataclass
class Production:
    """The model in production, as read from ROOT/production."""

    path: Path
    meta: dict[str, Any]

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint"

    @property
    def codebook(self) -> Path:
        return self.path / "codebook"

    @property
    def reference(self) -> Path:
        return self.path / "reference.json"

    @property
    def version(self) -> str:
        return str(self.meta["version"])

    @property
    def watermark_ms(self) -> int:
        return int(self.meta["watermark_ms"])


def read_production(root: str | Path) -> Production | None:
    """The production model under `root`, or None before the first publish."""
    path = Path(root) / PRODUCTION
    meta = path / "meta.json"
    if not meta.exists():
        return None
    return Production(path, json.loads(meta.read_text()))


def write_production(root: str | Path, *, checkpoint: Path, codebook: Path,
                     meta: dict[str, Any], reference: Path | None = None) -> Production:
    """Swap in a new production model (one rename: the old one serves until it happens)."""
    dest = Path(root) / PRODUCTION
    with atomic_dir(dest) as tmp:
        shutil.copytree(checkpoint, tmp / "checkpoint")
        shutil.copytree(codebook, tmp / "codebook")
        if reference is not None and reference.exists():
            shutil.copy2(reference, tmp / "reference.json")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=_plain))
    return Production(dest, meta)


def record(root: str | Path, run_id: str, stage: str, payload: dict[str, Any]) -> Path:
    """Write one stage's record of a run (atomically; a rerun of the stage replaces it)."""
    path = Path(root) / RUNS / run_id / f"{stage}.json"
    return atomic_write_text(path, json.dumps({"stage": stage, **payload}, indent=2,
                                              default=_plain) + "\n")


def read_run(root: str | Path, run_id: str) -> dict[str, dict[str, Any]]:
    """stage -> record of one run, for reports."""
    folder = Path(root) / RUNS / run_id
    if not folder.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")

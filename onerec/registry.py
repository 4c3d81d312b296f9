"""The state a continuous-training loop carries between cycles: the production model and a ledger.

A pipeline run is stateless by itself (KFP passes artifacts between the steps of one run only),
so what the next cycle needs lives in one folder, `ROOT` (a PVC on a cluster, a run folder on
a laptop):

    ROOT/production/          the stable model: what the next cycle warm-starts from (checkpoint,
                              watermark, codebook) and what the gate compares against:
        checkpoint/           weights + Config + meta.json (watermark_ms: newest request trained on)
        codebook/             the codebook it was trained with (+ the embedder state for refreshes)
        reference.json        statistics of the last accepted data batch (the next drift check)
        meta.json             version, watermark, held-out metrics, the cycle that made it
    ROOT/canary/              the candidate: a version published as a canary, same layout; it
                              becomes production only when the rollout promotes it
    ROOT/previous/            the production model before the last promotion (a manual restore)
    ROOT/models/<version>/    every published version (the export, or the checkpoint without one):
                              the storage the GitOps commit points at
    ROOT/gitops/              the GitOps repository (created from k8s/ on the first publish)
    ROOT/runs/<run_id>/<stage>.json   one record per stage and run: what ran, what it measured

The state follows the rollout, never runs ahead of it: `publish` writes a canary to
ROOT/canary and leaves ROOT/production alone; `follow_rollout` (called after every GitOps
promote or rollback, `onerec rollout`) moves the candidate into production when the GitOps tree
made it stable, and deletes it when the tree dropped it. So after a rollback the next cycle
warm-starts from the stable model and re-consumes the events after *its* watermark, not the
rejected canary's.

Why a folder and not a model registry service: the laptop and the cluster run the same code,
and a folder swapped in with one rename (`onerec.io.atomic_dir`) is never half-published.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onerec.io import atomic_dir, atomic_write_text

PRODUCTION = "production"
CANARY = "canary"
PREVIOUS = "previous"
MODELS = "models"
GITOPS = "gitops"
RUNS = "runs"


@dataclass
class Production:
    """A model folder of the state: ROOT/production, ROOT/canary or ROOT/previous."""

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


def read_model(root: str | Path, slot: str = PRODUCTION) -> Production | None:
    """The model in ROOT/<slot> (production, canary, previous), or None when there is none."""
    path = Path(root) / slot
    meta = path / "meta.json"
    if not meta.exists():
        return None
    return Production(path, json.loads(meta.read_text()))


def read_production(root: str | Path) -> Production | None:
    """The production model under `root`, or None before the first publish."""
    return read_model(root, PRODUCTION)


def read_canary(root: str | Path) -> Production | None:
    """The candidate published as a canary and not yet promoted or rolled back, or None."""
    return read_model(root, CANARY)


def _fill(folder: Path, checkpoint: Path, codebook: Path, meta: dict[str, Any],
          reference: Path | None) -> None:
    shutil.copytree(checkpoint, folder / "checkpoint")
    shutil.copytree(codebook, folder / "codebook")
    if reference is not None and reference.exists():
        shutil.copy2(reference, folder / "reference.json")
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, default=_plain))


def write_canary(root: str | Path, *, checkpoint: Path, codebook: Path, meta: dict[str, Any],
                 reference: Path | None = None) -> Production:
    """Hold a version published as a canary as the candidate (ROOT/canary, written whole under
    a temporary name and swapped in with one rename); production is not touched."""
    dest = Path(root) / CANARY
    with atomic_dir(dest) as tmp:
        _fill(tmp, checkpoint, codebook, meta, reference)
    return Production(dest, meta)


def write_production(root: str | Path, *, checkpoint: Path, codebook: Path,
                     meta: dict[str, Any], reference: Path | None = None) -> Production:
    """Swap in a new production model directly (a promotion without a canary; the old one
    moves to ROOT/previous). Built beside it under a temporary name first, so a failure leaves
    the old one serving; a pending candidate in ROOT/canary is left alone."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{PRODUCTION}.", dir=root))
    try:
        _fill(staged, checkpoint, codebook, meta, reference)
        _install(root, staged)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return Production(root / PRODUCTION, meta)


def promote_canary(root: str | Path) -> Production | None:
    """The candidate becomes production and the old production moves to ROOT/previous (the old
    previous is dropped). None when there is no candidate."""
    root = Path(root)
    if read_canary(root) is None:
        return None
    _install(root, root / CANARY)
    return read_production(root)


def _install(root: Path, src: Path) -> None:
    """Renames only, in an order no crash turns into a lost model: production is the old model
    or the new one at every point but the instant between two renames (as in `atomic_dir`)."""
    prod, prev = root / PRODUCTION, root / PREVIOUS
    trash = root / f".{PREVIOUS}.old-{os.getpid()}"
    if prev.exists():
        os.replace(prev, trash)
    if prod.exists():
        os.replace(prod, prev)
    os.replace(src, prod)
    shutil.rmtree(trash, ignore_errors=True)


def discard_canary(root: str | Path) -> Production | None:
    """Drop the candidate (a rolled-back canary); returns what was dropped, or None."""
    dropped = read_canary(root)
    path = Path(root) / CANARY
    if path.exists():
        trash = path.with_name(f".{CANARY}.old-{os.getpid()}")
        os.replace(path, trash)  # gone from its name at once; the delete may take a while
        shutil.rmtree(trash, ignore_errors=True)
    return dropped


def follow_rollout(root: str | Path, stable: str, canary: str | None) -> str | None:
    """Make the state agree with a GitOps environment whose stable version is `stable` and
    canary `canary` (None: no canary). -> "promoted" (the candidate became stable there: it is
    production now), "discarded" (the tree no longer runs it: rolled back or replaced) or None
    (nothing to do: no candidate, or it is still the canary)."""
    cand = read_canary(root)
    if cand is None or cand.version == canary:
        return None
    if cand.version == stable:
        promote_canary(root)
        return "promoted"
    discard_canary(root)
    return "discarded"


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

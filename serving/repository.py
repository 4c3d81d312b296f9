"""The Triton model repository on disk: version folders, their manifests, the cold-start table.

Layout (what `onerec export` writes and Triton reads):

    <repo>/<model>/config.pbtxt
    <repo>/<model>/<version>/model.onnx       the whole generation as one graph
    <repo>/<model>/<version>/manifest.json    fingerprints, version, beam width(s), I/O
    <repo>/<model>/<version>/items.npy        item index i (1-based) -> video id at i - 1
    <repo>/<model>/<version>/cold_start.json  optional: videos for users without history
    <repo>/<model>/<version>/reward_model/    optional: the reward model RM selection re-ranks
                                              with (its sha256s in the manifest)

Design choices:
- A version folder counts once its manifest, graph and item table are all there; the exporter
  writes the folder under a temporary name and renames it, so a half-written version is never
  listed. A folder without a manifest is taken for a copy in progress and ignored; one with a
  manifest but no graph or item table is refused naming what is missing (`missing_files`),
  and retried when its files change (`folder_signature`).
- Identity is the manifest's two fingerprints (Config and codebook). `check_manifest` compares
  them with what the server was configured with; a mismatch is a `VersionRefused`, never a
  silent swap: a model trained on another codebook would map its items to the wrong videos.
- The cold-start table is plain JSON (a list of video ids, best first, and where it came from),
  written at export or serve time from recent popularity; `popular_videos` builds one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onerec.io import atomic_write_text

MANIFEST, GRAPH, ITEMS, COLD_START = "manifest.json", "model.onnx", "items.npy", "cold_start.json"
REWARD_MODEL = "reward_model"  # the folder a version carries its reward model in


class VersionRefused(RuntimeError):
    """A version folder cannot be served (fingerprint mismatch, unreadable, wrong interface)."""


@dataclass
class Manifest:
    """manifest.json of one version folder (unknown keys are kept in `extra`)."""

    version: int
    config_fingerprint: str
    codebook_fingerprint: str
    beam_widths: list[int] = field(default_factory=list)  # fixed widths; [] = graph input
    n_user_buckets: int = 1  # user ids are fed as user_id % n_user_buckets
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = Path(folder) / MANIFEST
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError) as e:  # ValueError: bad JSON or bad UTF-8 (a torn file)
            raise VersionRefused(f"{path}: unreadable manifest ({e})") from None
        if not isinstance(d, dict):
            raise VersionRefused(f"{path}: unreadable manifest (top level is a "
                                 f"{type(d).__name__}, not an object)")
        missing = [k for k in ("config_fingerprint", "codebook_fingerprint") if not d.get(k)]
        if missing:
            raise VersionRefused(f"{path}: missing {', '.join(missing)}")
        known = {"version", "config_fingerprint", "codebook_fingerprint", "beam_widths",
                 "beam_width", "n_user_buckets"}
        try:
            widths = d.get("beam_widths", d.get("beam_width", []))
            widths = [int(w) for w in (widths if isinstance(widths, list) else [widths])]
            version = int(d.get("version", folder_version(folder) or 0))
            buckets = int(d.get("n_user_buckets", 1))
        except (TypeError, ValueError) as e:
            raise VersionRefused(f"{path}: malformed manifest field ({e})") from None
        return cls(version=version, config_fingerprint=str(d["config_fingerprint"]),
                   codebook_fingerprint=str(d["codebook_fingerprint"]),
                   beam_widths=sorted(widths), n_user_buckets=buckets,
                   extra={k: v for k, v in d.items() if k not in known})


@dataclass(frozen=True)
class Expected:
    """The fingerprints a server accepts; None = not pinned (yet)."""

    config_fingerprint: str | None = None
    codebook_fingerprint: str | None = None


def check_manifest(manifest: Manifest, expected: Expected) -> None:
    """Raise VersionRefused naming the fingerprint that differs from the configured one."""
    for key in ("config_fingerprint", "codebook_fingerprint"):
        want, got = getattr(expected, key), getattr(manifest, key)
        if want is not None and want != got:
            raise VersionRefused(f"version {manifest.version}: {key} {got} does not match the "
                                 f"configured {want}")


def folder_version(folder: Path) -> int | None:
    name = Path(folder).name
    return int(name) if name.isdigit() else None


def required_files(graph: bool = True) -> tuple[str, ...]:
    """What a version folder must hold: manifest, item table and (unless graph=False: a
    transformer whose graph runs elsewhere) model.onnx."""
    return (MANIFEST, GRAPH, ITEMS) if graph else (MANIFEST, ITEMS)


def missing_files(folder: Path, graph: bool = True) -> list[str]:
    """The required files (`required_files`) a version folder lacks."""
    return [f for f in required_files(graph) if not (Path(folder) / f).is_file()]


def is_complete(folder: Path, graph: bool = True) -> bool:
    """Manifest, item table and (unless graph=False) model.onnx are all there."""
    return not missing_files(folder, graph)


def candidate_versions(model_dir: Path) -> list[int]:
    """Version folders under <repo>/<model> that hold a manifest, complete or not, ascending.

    A folder with a manifest is a published version (exports are renamed into place whole),
    so one that lacks its graph or item table is refused, not waited for; a folder without a
    manifest is still being copied and is ignored."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    out = [v for p in model_dir.iterdir() if p.is_dir() and (v := folder_version(p)) is not None
           and (p / MANIFEST).is_file()]
    return sorted(out)


def folder_signature(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """(name, size, mtime_ns) of every file in a version folder, those of its reward_model/
    too: a refused folder is retried once any of them changes (a torn graph rewritten, a
    missing item table added, a manifest fixed), and never while none does."""
    folder = Path(folder)
    paths = sorted(folder.iterdir())
    if (folder / REWARD_MODEL).is_dir():
        paths += sorted((folder / REWARD_MODEL).iterdir())
    out = []
    for p in paths:
        try:
            st = p.stat()
        except OSError:  # removed while listing: it changed
            continue
        out.append((str(p.relative_to(folder)), st.st_size, st.st_mtime_ns))
    return tuple(out)


def list_versions(model_dir: Path, graph: bool = True) -> list[int]:
    """Complete version folders under <repo>/<model>, ascending."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    out = [v for p in model_dir.iterdir() if p.is_dir() and (v := folder_version(p)) is not None
           and is_complete(p, graph)]
    return sorted(out)


def manifest_lengths(manifest: Manifest) -> dict[str, int | None]:
    """Exported history lengths from the manifest's `inputs`: `onerec export` writes
    [{name, dtype, shape: ["batch", S]}], a plain {name: [-1, S]} is accepted too."""
    specs = manifest.extra.get("inputs") or []
    if isinstance(specs, dict):
        specs = [{"name": k, "shape": v} for k, v in specs.items()]
    out: dict[str, int | None] = {}
    for spec in specs:
        shape = spec.get("shape", [])
        dim = shape[1] if len(shape) > 1 else None
        out[str(spec.get("name"))] = dim if isinstance(dim, int) and dim > 0 else None
    return out


def read_items(folder: Path) -> np.ndarray:
    """items.npy: (N,) int64 video id of item index i + 1."""
    path = Path(folder) / ITEMS
    try:
        items = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:  # EOFError: an empty or truncated header
        raise VersionRefused(f"{path}: unreadable item table ({type(e).__name__}: {e})"
                             ) from None
    if items.ndim != 1 or not np.issubdtype(items.dtype, np.integer) or len(items) == 0:
        raise VersionRefused(f"{path}: must be a non-empty 1-D integer array, got "
                             f"{items.dtype} {items.shape}")
    return items.astype(np.int64)


# -- cold start ----------------------------------------------------------------------------------
def write_cold_start(path: Path, video_ids: list[int], source: str) -> Path:
    """Write a cold-start table (atomic)."""
    body = {"video_ids": [int(v) for v in video_ids], "source": source}
    return atomic_write_text(Path(path), json.dumps(body, indent=1))


def read_cold_start(path: Path) -> np.ndarray:
    """-> (K,) int64 video ids, best first."""
    try:
        d = json.loads(Path(path).read_text())
        ids = np.asarray(d["video_ids"], dtype=np.int64)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise VersionRefused(f"{path}: unreadable cold-start table ({e})") from None
    return ids.reshape(-1)


def popular_videos(events: Any, n: int = 100, last_days: float | None = 2.0) -> list[int]:
    """Most engaged videos (long view or like) of the last `last_days` of an event log,
    most first, ties by video id: what a user without history sees."""
    ev = events
    if last_days is not None and len(ev):
        ev = ev[ev["time_ms"] >= ev["time_ms"].max() - last_days * 86_400_000]
    pos = ev[(ev["long_view"] == 1) | (ev["is_like"] == 1)]
    if len(pos) == 0:
        pos = ev
    counts = pos.groupby("video_id").size().reset_index(name="n")
    counts = counts.sort_values(["n", "video_id"], ascending=[False, True])
    return counts["video_id"].head(n).astype(int).tolist()

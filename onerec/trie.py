"""The catalogue as a trie of semantic IDs in CSR form: the one valid-prefix structure.

Every part that asks "which codes may follow this prefix" reads this class: the fast generator
and the exported graph (a few gathers per level), the reference beam search (`allowed`), ECPO
and the evaluation (`walk`, `items`: a semantic ID to its item), and the codebook
(`Codebook.valid_next`). Every distinct prefix of length l gets a node id at level l (the root
is node 0 at level 0), numbered in sorted order of (parent node, code), so the children of a
node are one contiguous run of the next level's node ids, sorted by code. Per level l the trie
keeps
- `offsets[l]` (n_l + 2,) int32: node n's children are the level-(l + 1) nodes
  `offsets[l][n] .. offsets[l][n + 1] - 1`; the extra node n_l is the *dead* node, with none;
- `codes[l]` (n_{l+1} + F_l,) int32: the last code of each level-(l + 1) node, then F_l
  sentinels K_l, where F_l is the largest number of children any level-l node has;
and `leaf_item` (n_L + 1,) int32 names the item of each full-ID node (the codebook's
disambiguation token makes IDs unique), 0 for the dead node.

Why this shape:
- size grows with the items, not with items x K: about 4 x (2 x levels + 1) bytes per item
  (`nbytes`; 10 M items, 4 levels: under 40), where a dense (node, code) table takes 4 x K bytes
  per item at the deep levels (1 KB at K = 256, 4 KB at K = 1024);
- a beam at node n reads its candidates with one gather of F_l entries from `first + arange`,
  masks the ones past its count, and scatters them into the (K_l,) legal mask the decoder's
  log-softmax needs; the chosen code's node is `first + position` of that code among the
  candidates (an Equal and an ArgMax). Gather, ScatterElements and ArgMax are all a runtime
  needs, with static shapes per level (F_l is fixed when the graph is built);
- the dead node has an empty run that starts at the end of `codes[l]`, whose F_l sentinel tail
  keeps every gather in range, so a beam that fell off the trie stays dead without a branch,
  and no index is ever negative (not every runtime's Gather accepts negative indices).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def csr_candidates(offsets: torch.Tensor, codes: torch.Tensor, node: torch.Tensor, fanout: int,
                   k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(...,) node ids -> (candidate codes (..., F) int64, K where there is none; the first
    child's node id (...,) int64). The candidates of a node are its children's codes, sorted."""
    first = offsets[node].long()
    count = offsets[node + 1].long() - first
    j = torch.arange(fanout, device=node.device)
    cand = codes[first.unsqueeze(-1) + j].long()
    return cand.masked_fill(j >= count.unsqueeze(-1), k), first


def legal_mask(cand: torch.Tensor, k: int) -> torch.Tensor:
    """(..., F) candidate codes (K = none) -> (..., K) bool mask of the codes among them."""
    hits = torch.zeros((*cand.shape[:-1], k + 1), dtype=torch.float32, device=cand.device)
    return hits.scatter(-1, cand, 1.0)[..., :k] > 0


def csr_child(cand: torch.Tensor, first: torch.Tensor, code: torch.Tensor,
              dead: int) -> torch.Tensor:
    """The node id of parent + code: cand (..., F) the parent's candidates, first (...,) its
    first child's id, code (...,) -> (...,) int64, `dead` where no child has that code."""
    pos = (cand == code.unsqueeze(-1)).float().argmax(-1)
    hit = cand.gather(-1, pos.unsqueeze(-1)).squeeze(-1) == code
    return torch.where(hit, first + pos, torch.full_like(first, dead))


@dataclass
class ItemTrie:
    """See the module docstring: CSR `offsets`/`codes` per level, `leaf_item`, and the
    per-level fan-out F_l (`fanout`) that fixes the candidate gathers' width."""

    offsets: list[torch.Tensor]
    codes: list[torch.Tensor]
    leaf_item: torch.Tensor  # item index (1-based) of each full-ID node; last entry 0 (dead)
    vocab_sizes: list[int]
    fanout: list[int]

    @classmethod
    def from_codes(cls, item_codes: torch.Tensor | np.ndarray,
                   vocab_sizes: list[int]) -> ItemTrie:
        """item_codes: (n_items + 1, L) semantic IDs, row 0 padding (as `ItemSpace.codes`)."""
        rows = item_codes[1:]
        codes = np.asarray(rows.cpu().numpy() if isinstance(rows, torch.Tensor) else rows,
                           dtype=np.int64)
        if codes.ndim != 2 or codes.shape[1] != len(vocab_sizes):
            raise ValueError(f"item_codes must be (n_items + 1, L={len(vocab_sizes)}), "
                             f"got {tuple(item_codes.shape)}")
        for lv, k in enumerate(vocab_sizes):
            if codes.size and not (codes[:, lv].min() >= 0 and codes[:, lv].max() < k):
                raise ValueError(f"item_codes level {lv}: codes must be in [0, {k})")
        node = np.zeros(len(codes), dtype=np.int64)  # node id of each item's prefix so far
        n_nodes = 1
        offsets: list[torch.Tensor] = []
        tails: list[torch.Tensor] = []
        fanout: list[int] = []
        for lv, k in enumerate(vocab_sizes):
            uniq, nxt = np.unique(node * k + codes[:, lv], return_inverse=True)
            counts = np.bincount(uniq // k, minlength=n_nodes)
            off = np.zeros(n_nodes + 2, dtype=np.int64)
            off[1:n_nodes + 1] = np.cumsum(counts)
            off[n_nodes + 1] = off[n_nodes]  # the dead node: an empty run at the end
            fan = max(int(counts.max()) if counts.size else 0, 1)
            tail = np.concatenate([uniq % k, np.full(fan, k)]).astype(np.int32)
            offsets.append(torch.from_numpy(off.astype(np.int32)))
            tails.append(torch.from_numpy(tail))
            fanout.append(fan)
            node, n_nodes = nxt.reshape(-1), len(uniq)
        if n_nodes != len(codes):
            dup = len(codes) - n_nodes
            raise ValueError(f"item_codes: {dup} items share a semantic ID with another item; "
                             "IDs must be unique (the codebook's disambiguation token does this)")
        leaf = np.zeros(n_nodes + 1, dtype=np.int32)
        leaf[node] = np.arange(1, len(codes) + 1)
        return cls(offsets=offsets, codes=tails, leaf_item=torch.from_numpy(leaf),
                   vocab_sizes=list(vocab_sizes), fanout=fanout)

    @property
    def levels(self) -> int:
        return len(self.offsets)

    @property
    def n_items(self) -> int:
        return self.leaf_item.shape[0] - 1

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size()
                   for t in [*self.offsets, *self.codes, self.leaf_item])

    def dead(self, level: int) -> int:
        """The dead node id at level + 1, which stands for "no item continues this way"."""
        if level + 1 < self.levels:
            return self.offsets[level + 1].shape[0] - 2
        return self.leaf_item.shape[0] - 1

    def to(self, device: torch.device | str) -> ItemTrie:
        return ItemTrie([t.to(device) for t in self.offsets], [t.to(device) for t in self.codes],
                        self.leaf_item.to(device), self.vocab_sizes, self.fanout)

    def candidates(self, level: int, node: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`csr_candidates` at one level: (...,) level nodes -> ((..., F_l) codes, (...,) first)."""
        return csr_candidates(self.offsets[level].to(node.device),
                              self.codes[level].to(node.device), node.long(),
                              self.fanout[level], self.vocab_sizes[level])

    def node(self, prefix: torch.Tensor) -> torch.Tensor:
        """(..., l) prefixes -> (...,) their node ids at level l (the dead node where no item's
        ID starts with the prefix). l = 0 is the root."""
        prefix = prefix.long()
        if prefix.shape[-1] > self.levels:
            raise ValueError(f"prefix length {prefix.shape[-1]} > {self.levels} levels")
        node = torch.zeros(prefix.shape[:-1], dtype=torch.long, device=prefix.device)
        for lv in range(prefix.shape[-1]):
            cand, first = self.candidates(lv, node)
            code = prefix[..., lv]  # a code out of range (the sentinel K too) matches no child
            code = code.masked_fill((code < 0) | (code >= self.vocab_sizes[lv]), -1)
            node = csr_child(cand, first, code, self.dead(lv))
        return node

    def allowed(self, prefix: torch.Tensor) -> torch.Tensor:
        """(..., l) prefixes, l < L -> (..., K_l) bool mask of the codes a real item continues
        with (all False below a prefix no item has)."""
        lv = prefix.shape[-1]
        if lv >= self.levels:
            raise ValueError(f"a prefix of length {lv} has no next code ({self.levels} levels)")
        cand, _ = self.candidates(lv, self.node(prefix))
        return legal_mask(cand, self.vocab_sizes[lv])

    def walk(self, codes: torch.Tensor) -> torch.Tensor:
        """(..., L) semantic IDs -> (...,) item index (int64), 0 where no item has that ID."""
        return self.leaf_item.to(codes.device)[self.node(codes)].long()

    def items(self, sid: tuple[int, ...] | list[int]) -> list[int]:
        """The item index with semantic ID `sid` as a list ([] where none has it): IDs are
        unique, so at most one."""
        if len(sid) != self.levels or any(not 0 <= c < k for c, k in
                                           zip(sid, self.vocab_sizes, strict=True)):
            return []
        item = int(self.walk(torch.tensor(sid, dtype=torch.long)))
        return [item] if item else []

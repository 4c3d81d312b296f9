"""The catalogue as a flattened trie of semantic IDs: the one valid-prefix structure.

Every part that asks "which codes may follow this prefix" reads this class: the fast generator
and the exported graph (one gather per level), the reference beam search (`allowed`), ECPO and
the evaluation (`items`: a semantic ID to its item), and the codebook (`Codebook.valid_next`).
Every distinct prefix of length l gets a node id at level l (the root is node 0 at level 0), and
`child[l][node, code]` is the node id of prefix + code at level l + 1, or the *dead* node
`n_{l+1}` (one past the last real node of level l + 1) when no item's ID continues that way.
After the last level the node id names exactly one item (the codebook's disambiguation token
makes IDs unique), so `leaf_item[node]` is that item's index.

Why this shape:
- one gather per level per beam (`child[l][node]`, a (W, K_l) row block) gives both the legal
  mask (`>= 0`) and the next node ids, so the generator tracks a node id per beam instead of
  its prefix, and emits item indices directly at the end (no ID -> item lookup afterwards);
- plain int tables become ONNX initializers, and Gather is all a runtime needs;
- every table carries the dead node as an extra last row that points to the next level's dead
  node (and `leaf_item` a trailing 0), so a beam that fell off the trie stays dead without a
  branch, and no index is ever negative (not every runtime's Gather accepts negative indices).

Size: sum over levels of (n_l + 1) x K_l int32 entries; for the shipped KuaiRand codebook
(7.6k items, 256 codes per level) about 8 MB. Catalogues of millions of items at K = 1024 would
want a sparse (CSR) variant behind the same interface.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class ItemTrie:
    """child[l]: (n_l + 1, K_l) int32 next node, n_{l+1} = dead (last row: the dead node);
    leaf_item: (n_L + 1,) item index of each full-ID node, 0 for the dead node."""

    child: list[torch.Tensor]
    leaf_item: torch.Tensor  # item index (1-based) of each full-ID node; last entry 0 (dead)
    vocab_sizes: list[int]

    @classmethod
    def from_codes(cls, item_codes: torch.Tensor, vocab_sizes: list[int]) -> ItemTrie:
        """item_codes: (n_items + 1, L) semantic IDs, row 0 padding (as `ItemSpace.codes`)."""
        codes = np.asarray(item_codes[1:].cpu().numpy(), dtype=np.int64)
        if codes.ndim != 2 or codes.shape[1] != len(vocab_sizes):
            raise ValueError(f"item_codes must be (n_items + 1, L={len(vocab_sizes)}), "
                             f"got {tuple(item_codes.shape)}")
        for lv, k in enumerate(vocab_sizes):
            if codes.size and not (codes[:, lv].min() >= 0 and codes[:, lv].max() < k):
                raise ValueError(f"item_codes level {lv}: codes must be in [0, {k})")
        node = np.zeros(len(codes), dtype=np.int64)  # node id of each item's prefix so far
        n_nodes = 1
        child: list[torch.Tensor] = []
        for lv, k in enumerate(vocab_sizes):
            key = node * k + codes[:, lv]
            uniq, nxt = np.unique(key, return_inverse=True)
            table = np.full((n_nodes + 1, k), len(uniq), dtype=np.int32)  # all dead ...
            table[uniq // k, uniq % k] = np.arange(len(uniq), dtype=np.int32)  # ... but these
            child.append(torch.from_numpy(table))
            node, n_nodes = nxt.reshape(-1), len(uniq)
        if n_nodes != len(codes):
            dup = len(codes) - n_nodes
            raise ValueError(f"item_codes: {dup} items share a semantic ID with another item; "
                             "IDs must be unique (the codebook's disambiguation token does this)")
        leaf = np.zeros(n_nodes + 1, dtype=np.int64)
        leaf[node] = np.arange(1, len(codes) + 1)
        return cls(child=child, leaf_item=torch.from_numpy(leaf), vocab_sizes=list(vocab_sizes))

    @property
    def levels(self) -> int:
        return len(self.child)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in [*self.child, self.leaf_item])

    def dead(self, level: int) -> int:
        """The dead node id that child[level] uses for "no item continues this way"."""
        nxt = self.child[level + 1] if level + 1 < self.levels else self.leaf_item
        return nxt.shape[0] - 1

    def to(self, device: torch.device | str) -> ItemTrie:
        return ItemTrie([t.to(device) for t in self.child], self.leaf_item.to(device),
                        self.vocab_sizes)

    def node(self, prefix: torch.Tensor) -> torch.Tensor:
        """(..., l) prefixes -> (...,) their node ids at level l (the dead node where no item's
        ID starts with the prefix). l = 0 is the root."""
        prefix = prefix.long()
        if prefix.shape[-1] > self.levels:
            raise ValueError(f"prefix length {prefix.shape[-1]} > {self.levels} levels")
        node = torch.zeros(prefix.shape[:-1], dtype=torch.long, device=prefix.device)
        for lv in range(prefix.shape[-1]):
            node = self.child[lv].to(prefix.device)[node, prefix[..., lv]].long()
        return node

    def allowed(self, prefix: torch.Tensor) -> torch.Tensor:
        """(..., l) prefixes, l < L -> (..., K_l) bool mask of the codes a real item continues
        with (all False below a prefix no item has)."""
        lv = prefix.shape[-1]
        if lv >= self.levels:
            raise ValueError(f"a prefix of length {lv} has no next code ({self.levels} levels)")
        return self.child[lv].to(prefix.device)[self.node(prefix)] != self.dead(lv)

    def walk(self, codes: torch.Tensor) -> torch.Tensor:
        """(..., L) semantic IDs -> (...,) item index, 0 where no item has that ID."""
        return self.leaf_item.to(codes.device)[self.node(codes)]

    def items(self, sid: tuple[int, ...] | list[int]) -> list[int]:
        """The item index with semantic ID `sid` as a list ([] where none has it): IDs are
        unique, so at most one."""
        if len(sid) != self.levels or any(not 0 <= c < k for c, k in
                                           zip(sid, self.vocab_sizes, strict=True)):
            return []
        item = int(self.walk(torch.tensor(sid, dtype=torch.long)))
        return [item] if item else []

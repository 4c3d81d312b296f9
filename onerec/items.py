"""The model's view of the catalogue: item index <-> item id <-> semantic ID.

The model works on dense item indices (1..N, 0 = padding) so embeddings are plain tables;
the codebook works on item ids. `ItemSpace` is the one place that maps between them, built
from a codebook, and carries the codebook fingerprint that checkpoints record.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from onerec.tokenizer.codebook import Codebook


@dataclass
class ItemSpace:
    item_ids: np.ndarray  # (N,) item id of index i + 1
    codes: torch.Tensor  # (N + 1, T) semantic ID of each index; row 0 is padding
    vocab_sizes: list[int]  # vocabulary of each semantic-ID token
    fingerprint: str  # codebook fingerprint

    @classmethod
    def from_codebook(cls, cb: Codebook) -> ItemSpace:
        codes = torch.from_numpy(cb.semantic_ids.astype(np.int64))
        codes = torch.cat([torch.zeros(1, codes.shape[1], dtype=torch.long), codes])
        return cls(item_ids=cb.item_ids.copy(), codes=codes, vocab_sizes=cb.vocab_sizes,
                   fingerprint=cb.fingerprint)

    @property
    def index(self) -> dict[int, int]:
        """item id -> item index (1-based)."""
        return {int(v): i + 1 for i, v in enumerate(self.item_ids.tolist())}

    def to_ids(self, indices: list[list[int]]) -> list[list[int]]:
        return [[int(self.item_ids[i - 1]) for i in row] for row in indices]

    def __len__(self) -> int:
        return len(self.item_ids)

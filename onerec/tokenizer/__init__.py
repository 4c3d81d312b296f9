"""Semantic IDs: item embeddings -> RQ-Kmeans codebooks -> (refreshable) codebook artifacts.

Modules, one concept each: `embeddings` (content + collaborative item vectors), `rq_kmeans`
(residual k-means, balanced option), `codebook` (the artifact: IDs, prefix tables, fingerprint),
`metrics` (utilisation, collisions, reconstruction error, entropy), `build` (fit and refresh
policy), `cli` (the `onerec tokenize` command).
"""

from onerec.tokenizer.build import Drift, RefreshResult, fit_codebook, measure_drift, refresh
from onerec.tokenizer.codebook import Codebook, CodebookError, CodebookMismatchError
from onerec.tokenizer.embeddings import (
    Catalogue,
    ItemEmbedder,
    ItemEmbeddings,
    load_catalogue,
)
from onerec.tokenizer.rq_kmeans import TokenizerError

__all__ = [
    "Catalogue",
    "Codebook",
    "CodebookError",
    "CodebookMismatchError",
    "Drift",
    "ItemEmbedder",
    "ItemEmbeddings",
    "RefreshResult",
    "TokenizerError",
    "fit_codebook",
    "load_catalogue",
    "measure_drift",
    "refresh",
]

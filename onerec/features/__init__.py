"""Feast features: online user sequences, streaming updates, point-in-time training data.

`sequences` holds the Feast-free sequence logic (shared by backfill and streaming), `store` the
Feast side, `cli` the `onerec features` commands. See docs/features.md.
"""

from onerec.features.sequences import ApplyStats, SequenceBook, UserSequences
from onerec.features.store import (
    FeaturesError,
    StreamWriter,
    apply_repo,
    feature_service,
    materialize_all,
    online_user_context,
    open_store,
    prepare_repo,
    serving_repo,
    training_features,
    write_sequences,
)

__all__ = [
    "ApplyStats", "FeaturesError", "SequenceBook", "StreamWriter", "UserSequences", "apply_repo",
    "feature_service", "materialize_all", "online_user_context", "open_store", "prepare_repo",
    "serving_repo", "training_features", "write_sequences",
]

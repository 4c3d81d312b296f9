"""Data layer: one event schema, loaders for KuaiRand-Pure, Amazon Beauty, MicroLens, synthetic."""

from onerec.data.schema import EVENT_COLUMNS, ITEM_COLUMNS, USER_COLUMNS, DataError, Dataset
from onerec.data.sequences import LeaveOneOut, SequenceData, load_beauty, load_microlens

__all__ = [
    "EVENT_COLUMNS",
    "ITEM_COLUMNS",
    "USER_COLUMNS",
    "DataError",
    "Dataset",
    "LeaveOneOut",
    "SequenceData",
    "load_beauty",
    "load_microlens",
]

"""Sequence datasets (Amazon Beauty, MicroLens) and the TIGER leave-one-out protocol.

These datasets have no impression feedback, only each user's items in time order, so they map
into `SequenceData` rather than the event schema. The protocol is the one P5, TIGER and their
successors use on Amazon Beauty (TIGER, NeurIPS 2023, Table 1): per user, the last item is the
test target, the second-to-last the validation target, the rest is training history, and
histories are capped at the most recent `max_history` items (20).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from onerec.data.schema import DataError


@dataclass
class SequenceData:
    """Users' item sequences in time order; item ids are integers from 1 (0 is padding)."""

    name: str
    sequences: dict[int, list[int]]  # user id -> items, oldest first
    n_items: int  # largest item id
    item_text: dict[int, str] = field(default_factory=dict)  # item id -> short text
    item_names: dict[int, str] = field(default_factory=dict)  # item id -> original id (ASIN)

    def split(self, max_history: int = 20) -> LeaveOneOut:
        return leave_one_out(self.sequences, max_history)


@dataclass
class LeaveOneOut:
    """TIGER protocol splits. `train` holds the sequences models may learn from."""

    train: dict[int, list[int]]  # user -> items without the last two
    valid: list[tuple[int, list[int], int]]  # (user, history <= max_history, target)
    test: list[tuple[int, list[int], int]]  # (user, history <= max_history, target)


def leave_one_out(sequences: dict[int, list[int]], max_history: int = 20) -> LeaveOneOut:
    if max_history <= 0:
        raise DataError(f"max_history must be > 0, got {max_history}")
    train, valid, test = {}, [], []
    for user, seq in sequences.items():
        if len(seq) < 3:
            raise DataError(f"user {user}: {len(seq)} item(s); leave-one-out needs at least 3")
        train[user] = seq[:-2]
        valid.append((user, seq[:-2][-max_history:], seq[-2]))
        test.append((user, seq[:-1][-max_history:], seq[-1]))
    return LeaveOneOut(train=train, valid=valid, test=test)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"missing file: {path}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None


def load_beauty(data_dir: str | Path) -> SequenceData:
    """A folder in the amazon-beauty format: sequential_data.txt, datamaps.json, item_text.txt."""
    data_dir = Path(data_dir)
    sequences: dict[int, list[int]] = {}
    for lineno, line in enumerate(_read_text(data_dir / "sequential_data.txt").splitlines(), 1):
        if not line.strip():
            continue
        try:
            user, *items = (int(t) for t in line.split())
        except ValueError:
            raise DataError(f"{data_dir / 'sequential_data.txt'} line {lineno}: "
                            "expected integers 'user item item ...'") from None
        if not items or min(items) < 1:
            raise DataError(f"{data_dir / 'sequential_data.txt'} line {lineno}: "
                            "items must be integers >= 1")
        sequences[user] = items
    if not sequences:
        raise DataError(f"{data_dir / 'sequential_data.txt'}: no users")
    maps = _read_json(data_dir / "datamaps.json")
    if "item2id" not in maps:
        raise DataError(f"{data_dir / 'datamaps.json'}: missing key 'item2id'")
    asin_to_id = {asin: int(i) for asin, i in maps["item2id"].items()}
    item_text: dict[int, str] = {}
    text_path = data_dir / "item_text.txt"
    if text_path.exists():
        for line in _read_text(text_path).splitlines():
            asin, _, text = line.partition(" ")
            if asin in asin_to_id:
                item_text[asin_to_id[asin]] = text.strip()
    n_items = max(max(s) for s in sequences.values())
    names = {i: a for a, i in asin_to_id.items()}
    return SequenceData("beauty", sequences, n_items, item_text, names)


def load_microlens(data_dir: str | Path) -> SequenceData:
    """MicroLens subset: interactions.json {user: [video, ...]}, items.json {video: {title}}.

    MicroLens video ids start at 0; they are shifted by +1 so that 0 stays padding, and
    `item_names` maps each new id back to the original one.
    """
    data_dir = Path(data_dir)
    raw = _read_json(data_dir / "interactions.json")
    items = _read_json(data_dir / "items.json")
    try:
        sequences = {int(u): [int(v) + 1 for v in vs] for u, vs in raw.items()}
        item_text = {int(v) + 1: str(meta.get("title", "")) for v, meta in items.items()}
    except (TypeError, ValueError, AttributeError) as e:
        raise DataError(f"{data_dir}: unexpected MicroLens format ({e})") from None
    if not sequences:
        raise DataError(f"{data_dir / 'interactions.json'}: no users")
    n_items = max(max(max(s) for s in sequences.values() if s), max(item_text, default=0))
    names = {i: str(i - 1) for i in item_text}
    return SequenceData("microlens", sequences, n_items, item_text, names)

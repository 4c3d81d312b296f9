"""Sequence datasets: leave-one-out split, Amazon Beauty and MicroLens loaders."""

from __future__ import annotations

import numpy as np
import pytest

from onerec.data import DataError
from onerec.data.sequences import leave_one_out, load_beauty, load_microlens
from tests.conftest import shared_dataset


def test_leave_one_out_follows_the_tiger_protocol():
    seqs = {1: list(range(1, 31)), 2: [5, 6, 7]}
    split = leave_one_out(seqs, max_history=20)
    assert split.train[1] == list(range(1, 29))
    user, hist, target = split.test[0]
    assert (user, target) == (1, 30) and hist == list(range(10, 30)) and len(hist) == 20
    assert split.valid[0] == (1, list(range(9, 29)), 29)
    assert split.test[1] == (2, [5, 6], 7)
    with pytest.raises(DataError, match="at least 3"):
        leave_one_out({3: [1, 2]})


def test_beauty_loader_matches_the_published_statistics():
    data = load_beauty(shared_dataset("amazon-beauty"))
    assert len(data.sequences) == 22_363
    assert data.n_items == 12_101
    assert sum(len(s) for s in data.sequences.values()) == 198_502
    assert len(data.item_text) == 12_101
    assert sum(1 for t in data.item_text.values() if t) == 12_100  # one item has no title words
    split = data.split()
    assert len(split.test) == 22_363 and max(len(h) for _, h, _ in split.test) == 20


def test_microlens_loader_shifts_ids_so_zero_is_padding():
    data = load_microlens(shared_dataset("microlens"))
    assert len(data.sequences) == 13_210
    assert sum(len(s) for s in data.sequences.values()) == 78_255
    assert min(min(s) for s in data.sequences.values()) >= 1
    assert len(data.item_text) == 5_312 and data.item_names[1] == "0"


def test_beauty_format_errors_name_file_and_line(tmp_path):
    (tmp_path / "sequential_data.txt").write_text("1 2 3\n2 x 4\n")
    with pytest.raises(DataError, match=r"sequential_data\.txt line 2"):
        load_beauty(tmp_path)
    (tmp_path / "sequential_data.txt").write_text("1 2 3 4\n")
    with pytest.raises(DataError, match=r"missing file: .*datamaps\.json"):
        load_beauty(tmp_path)
    (tmp_path / "datamaps.json").write_text("{not json")
    with pytest.raises(DataError, match=r"datamaps\.json: invalid JSON"):
        load_beauty(tmp_path)


def test_beauty_format_loader_reads_any_folder(tmp_path):
    (tmp_path / "sequential_data.txt").write_text("1 1 2 3\n2 2 3 1 4\n")
    (tmp_path / "datamaps.json").write_text('{"item2id": {"A": "1", "B": "2", "C": "3", "D": "4"}}')
    (tmp_path / "item_text.txt").write_text("A red lipstick\nB blue shampoo\n")
    data = load_beauty(tmp_path)
    assert data.n_items == 4 and data.item_text == {1: "red lipstick", 2: "blue shampoo"}
    assert data.item_names[4] == "D"
    assert np.array_equal(data.sequences[2], [2, 3, 1, 4])

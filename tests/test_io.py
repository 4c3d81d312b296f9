"""Atomic artifact writes (`onerec.io`): a failed write leaves the old file or folder whole and no
temporary behind; `load_torch_state` loads our state files but runs no pickled code."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from onerec.io import (
    atomic_dir,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    load_torch_state,
)


def test_atomic_write_text_replaces_the_file_and_leaves_no_temporary(tmp_path):
    dest = tmp_path / "deep" / "report.json"
    assert atomic_write_text(dest, "one") == dest  # missing parents are created
    atomic_write_text(dest, "two")
    assert dest.read_text() == "two"
    assert atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["report.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    dest = tmp_path / "codebook.npz"
    dest.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(dest, suffix=".npz") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".codebook.npz.")
        assert tmp.suffix == ".npz"
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert dest.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["codebook.npz"]


def test_the_temporary_is_invisible_under_the_final_name_until_the_block_ends(tmp_path):
    dest = tmp_path / "model.onnx"
    with atomic_path(dest) as tmp:
        tmp.write_text("new")
        assert not dest.exists()
    assert dest.read_text() == "new"


def test_atomic_dir_swaps_a_whole_folder_in_and_removes_the_old_one(tmp_path):
    dest = tmp_path / "version"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    with atomic_dir(dest) as tmp:
        (tmp / "new.txt").write_text("new")
        assert (dest / "old.txt").exists()  # readers still see the old folder
    assert [p.name for p in dest.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["version"]  # no .old or temporary left


def test_a_failed_atomic_dir_keeps_the_old_folder(tmp_path):
    dest = tmp_path / "version"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    with pytest.raises(ValueError), atomic_dir(dest) as tmp:
        (tmp / "half.txt").write_text("half")
        raise ValueError("export failed")
    assert [p.name for p in dest.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["version"]


def test_load_torch_state_reads_tensors_and_numpy_arrays(tmp_path):
    state = {"w": torch.arange(4.0), "item_ids": np.array([10, 20], dtype=np.int64),
             "step": 3, "names": ["a", "b"]}
    torch.save(state, tmp_path / "state.pt")
    back = load_torch_state(tmp_path / "state.pt")
    assert torch.equal(back["w"], state["w"]) and back["step"] == 3
    assert np.array_equal(back["item_ids"], state["item_ids"])
    assert back["item_ids"].dtype == np.int64 and back["names"] == ["a", "b"]


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("true",))


def test_load_torch_state_refuses_a_file_that_would_run_code(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"payload": _RunsCode()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_torch_state(path)

"""Atomic artifact writes: nothing half-written is ever visible under its final name.

Every artifact (reports, codebooks, checkpoints, engines) is written to a temporary file in
the destination folder and renamed with `os.replace`, which is atomic on POSIX file systems.
A crash or a failed stage leaves either the old file or the new one, never a torn one.
`load_torch_state` reads the torch files back without running pickled code.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(dest: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `dest`; on success rename it onto `dest`, else delete it."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix or ".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_text(dest: str | Path, text: str) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_text(text)
    return Path(dest)


def atomic_write_bytes(dest: str | Path, data: bytes) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


@contextlib.contextmanager
def atomic_dir(dest: str | Path) -> Iterator[Path]:
    """Build a directory under a temporary name, then swap it in (old one removed after)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        yield tmp
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks: what manifests record to catch a torn or
    swapped file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_torch_state(path: str | Path) -> Any:
    """`torch.load` of a state file we wrote (checkpoint, reward model), restricted to tensors,
    plain containers and numpy arrays (`weights_only`): a file swapped on the shared volume can
    fail to load but cannot run code (a full unpickle could)."""
    import numpy as np
    import torch

    numpy_arrays = [np._core.multiarray._reconstruct, np.ndarray, np.dtype,  # e.g. item_ids
                    *(type(np.dtype(t)) for t in (np.bool_, np.int32, np.int64, np.float32,
                                                  np.float64))]
    with torch.serialization.safe_globals(numpy_arrays):
        return torch.load(path, weights_only=True)

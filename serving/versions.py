"""Hot swap: which model version serves, and how a new one replaces it without a dropped request.

Design choices:
- Requests never take a lock: each reads `manager.current` once (one attribute read, atomic in
  CPython) and uses that `Predictor` for id mapping, generation and the reverse mapping, so an
  in-flight request finishes on the version it started on. A swap builds the new session off
  to the side and then replaces the reference; the old session is freed when its last request
  drops it.
- Loads are serialised by one lock (the folder watcher and an explicit reload may race), and a
  scan looks only at versions newer than the active one, newest first, so an older folder can
  never roll the server back by accident.
- Fingerprints are pinned: those given at start (`Expected`), else the first version loaded.
  A version whose Config or codebook fingerprint differs is refused with a reason, logged,
  counted (`on_refuse`), and kept in `status()`; the active version keeps serving. So is one
  that cannot be loaded for any other reason: a graph whose sha256 differs from the manifest
  (torn or swapped), a graph ONNX Runtime cannot read, a malformed manifest, an unreadable or
  missing item table. Anything a load raises becomes a refusal, so one bad folder can neither
  stop the scan from reaching older good ones nor be retried (and logged) on every poll.
- A refused folder is retried only once one of its files changes (`folder_signature`: name,
  size, mtime), e.g. a torn graph finished or the missing item table copied in.
- A folder with no manifest yet is a copy in progress: ignored, neither listed nor refused.
- A version's reward model (RM selection, `rm_selection`) loads with it, as part of its
  `Predictor`: a torn or foreign one refuses the version like a torn graph does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from serving.repository import (
    MANIFEST,
    Expected,
    Manifest,
    VersionRefused,
    candidate_versions,
    check_manifest,
    folder_signature,
    list_versions,
    missing_files,
)
from serving.runtime import Predictor, load_version

log = logging.getLogger("onerec.serving")


@dataclass
class Refusal:
    version: int
    reason: str
    at: float  # unix time
    signature: tuple  # folder_signature when refused: retried once it differs


class VersionManager:
    """Loads versions of <repo>/<model>, swaps the active one atomically, remembers refusals."""

    def __init__(self, model_dir: Path, *, expected: Expected | None = None, threads: int = 0,
                 sessions: bool = True, rm_selection: bool = True, rm_top_m: int = 0,
                 rm_code_cap: int = 0,
                 on_swap: Callable[[Predictor | None, Predictor], None] | None = None,
                 on_refuse: Callable[[int, str], None] | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.expected = expected or Expected()
        self.threads = threads
        self.sessions = sessions  # False: id mapping only (the graph runs on a remote predictor)
        # load each version's own reward model as its reranker (serve.rm_selection{,_top_m,
        # _code_cap})
        self.rm_selection, self.rm_top_m, self.rm_code_cap = rm_selection, rm_top_m, rm_code_cap
        self.on_swap = on_swap
        self.on_refuse = on_refuse
        self.refused: dict[int, Refusal] = {}
        self.loaded_at: float | None = None
        self.swaps = 0
        self._active: Predictor | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def current(self) -> Predictor | None:
        """The version serving now (None before the first successful load)."""
        return self._active

    # -- loading ------------------------------------------------------------------------------
    def _try(self, version: int) -> Predictor | None:
        folder = self.model_dir / str(version)
        try:
            signature = folder_signature(folder)
        except OSError:  # the folder went away between the listing and now
            return None
        old = self.refused.get(version)
        if old is not None and old.signature == signature:
            return None  # refused before, unchanged since
        try:
            missing = missing_files(folder, self.sessions)
            if missing:
                raise VersionRefused(f"{folder}: incomplete version folder, missing "
                                     f"{', '.join(missing)}")
            check_manifest(Manifest.read(folder), self.expected)
            new = load_version(folder, threads=self.threads, sessions=self.sessions,
                               rm_selection=self.rm_selection, rm_top_m=self.rm_top_m,
                               rm_code_cap=self.rm_code_cap)
        except Exception as e:  # VersionRefused, or anything a malformed folder raises
            reason = str(e) if isinstance(e, VersionRefused) else \
                f"{folder}: cannot be loaded ({type(e).__name__}: {e})"
            self.refused[version] = Refusal(version, reason, time.time(), signature)
            active = self._active
            log.error("refused model version %s: %s%s", version, reason,
                      f" (still serving version {active.version})" if active is not None else "")
            if self.on_refuse is not None:
                self.on_refuse(version, reason)
            return None
        self.refused.pop(version, None)  # refused before, fixed since
        return new

    def refresh(self, blocking: bool = True) -> Predictor | None:
        """Load the newest acceptable version newer than the active one, if any; -> active.

        blocking=False returns at once (the active version) when a load is already running:
        for callers on the event loop, which must never wait on a session build."""
        if not self._lock.acquire(blocking=blocking):
            return self._active
        try:
            active = self._active
            floor = active.version if active is not None else -1
            for version in reversed(candidate_versions(self.model_dir)):
                if version <= floor:
                    break
                new = self._try(version)
                if new is not None:
                    self._swap(new)
                    break
            return self._active
        finally:
            self._lock.release()

    def reload(self) -> Predictor:
        """Explicit reload: `refresh`, then raise VersionRefused if the newest version on disk
        was refused (the active one keeps serving) or nothing can be served at all."""
        active = self.refresh()
        versions = candidate_versions(self.model_dir)
        newest = versions[-1] if versions else None
        if newest is not None and newest in self.refused and (
                active is None or active.version < newest):
            raise VersionRefused(self.refused[newest].reason + (
                f"; still serving version {active.version}" if active is not None else ""))
        if active is None:
            raise VersionRefused(f"{self.model_dir}: no complete version folder "
                                 f"(<version>/{MANIFEST}, model.onnx, items.npy)")
        return active

    def _swap(self, new: Predictor) -> None:
        old = self._active
        if self.expected.config_fingerprint is None or self.expected.codebook_fingerprint is None:
            m = new.manifest
            self.expected = replace(
                self.expected,
                config_fingerprint=self.expected.config_fingerprint or m.config_fingerprint,
                codebook_fingerprint=self.expected.codebook_fingerprint or m.codebook_fingerprint)
        self._active = new  # the swap: one reference assignment
        self.loaded_at = time.time()
        self.swaps += 1
        log.info("serving model version %s (was %s)", new.version,
                 old.version if old is not None else "none")
        if self.on_swap is not None:
            self.on_swap(old, new)

    # -- watching -----------------------------------------------------------------------------
    def watch(self, poll_s: float) -> None:
        """Scan the model folder every `poll_s` seconds in a daemon thread (0: never)."""
        if poll_s <= 0 or self._watcher is not None:
            return

        def loop() -> None:
            while not self._stop.wait(poll_s):
                try:
                    self.refresh()
                except Exception:  # a scan must never kill the watcher
                    log.exception("model folder scan failed")

        self._watcher = threading.Thread(target=loop, name="onerec-version-watcher", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()

    def status(self) -> dict[str, Any]:
        active = self._active
        return {
            "model_dir": str(self.model_dir),
            "active_version": active.version if active is not None else None,
            "loaded_at": self.loaded_at,
            "swaps": self.swaps,
            "expected": {"config_fingerprint": self.expected.config_fingerprint,
                         "codebook_fingerprint": self.expected.codebook_fingerprint},
            "available": list_versions(self.model_dir, self.sessions),
            "refused": {str(v): {"reason": r.reason, "at": r.at}
                        for v, r in sorted(self.refused.items())},
        }

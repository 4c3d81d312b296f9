"""Feast online reads for the transformer that degrade instead of failing.

Why: a user without a history in the request is read from the Feast online store (SQLite here).
When that store is locked by a writer (SQLite's busy handler then waits 5 s, Feast's connect
default), its file is removed or replaced, or its folder cannot be read, a request must neither
fail (no 5xx) nor hang: the users it would have read are answered from the request's own
histories or the cold-start table and flagged per user (`features_unavailable`), and the
operator gets one warning per outage and one message when the store answers again, not a line
per request.

How:
- Every read runs on one worker thread (Feast's store is not shared between threads) and is
  awaited with a deadline (`timeout_s`); a read that raises or misses it opens an outage.
- During an outage requests do not touch the store at all. A background probe reads it every
  `retry_s` through the same worker; the first success closes the outage, logged with its
  length and how many users fell back. So a locked store costs the requests in flight when
  it locked at most `timeout_s`, and nothing afterwards.
- Before each read the SQLite file is stat'ed: a missing or unreadable file is an outage
  without asking Feast (whose connect would create an empty database in its place), and a file
  replaced since the last read (another inode: re-materialized, restored from a backup) makes
  the store reopen, since Feast keeps one connection open and would go on reading the old file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving import metrics

log = logging.getLogger("onerec.serving")
Rows = dict[int, tuple[list[int], list[int], list[int]]]
PROBE_USER = 0  # any id: an unknown user is a valid read (three empty lists)


class StoreUnavailable(RuntimeError):
    """The online store's file is missing or unreadable (checked before Feast is asked)."""


@dataclass
class Outage:
    reason: str
    since: float  # time.monotonic() when it opened
    started_at: float  # unix time, for status()
    users: int = 0  # users that fell back during it


def sqlite_path(store: Any) -> Path | None:
    """The SQLite file of a FeatureStore's online store (None: another store type, or a store
    object without a Feast config, as in the unit tests)."""
    online = getattr(getattr(store, "config", None), "online_store", None)
    kind = str(getattr(online, "type", ""))
    if not (kind == "sqlite" or kind.endswith("SqliteOnlineStore")) or not getattr(
            online, "path", None):
        return None
    path = Path(online.path)
    repo = getattr(store, "repo_path", None)
    return path if path.is_absolute() or repo is None else Path(repo) / path


def reopen_store(store: Any) -> Callable[[], Any] | None:
    """A function that opens a fresh FeatureStore on the same repo (new SQLite connection)."""
    repo = getattr(store, "repo_path", None)
    if repo is None or getattr(store, "config", None) is None:
        return None

    def reopen() -> Any:
        from onerec.features.store import open_store

        return open_store(repo, check=False)  # an unreachable store stays an outage

    return reopen


class OnlineFeatures:
    """`await fetch(users)` -> (rows, available); see the module docstring."""

    def __init__(self, store: Any, *, timeout_s: float = 1.0, retry_s: float = 2.0,
                 reopen: Callable[[], Any] | None = None) -> None:
        self.store = store
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.path = sqlite_path(store)
        self._reopen = reopen if reopen is not None else reopen_store(store)
        self._inode: tuple[int, int] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feast")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.outage: Outage | None = None
        self.outages = 0
        metrics.FEAST_AVAILABLE.set(1)

    # -- reading ------------------------------------------------------------------------------
    def _read(self, users: list[int]) -> Rows:
        """One read, on the worker thread."""
        from onerec.features.store import online_user_context

        if self.path is not None:
            try:
                st = os.stat(self.path)
            except OSError as e:
                raise StoreUnavailable(f"{self.path}: {e.strerror or type(e).__name__}"
                                       ) from None
            if not os.access(self.path, os.R_OK):
                raise StoreUnavailable(f"{self.path}: not readable by this process")
            inode = (st.st_dev, st.st_ino)
            if self._inode is not None and inode != self._inode and self._reopen is not None:
                log.info("Feast online store %s was replaced since the last read: reopening it",
                         self.path)
                self.store = self._reopen()
            self._inode = inode
        return online_user_context(self.store, users)

    def warm_up(self) -> bool:
        """One read at start, on the calling thread (Feast imports and loads its registry on
        the first read; doing it before the server's threads start keeps that off requests).
        A failure opens an outage (the server serves without features) -> whether it read."""
        try:
            self._read([PROBE_USER])
        except Exception as e:  # any failure is an outage, not a start-up crash
            self._fail(self._describe(e), 0)
            return False
        return True

    async def fetch(self, users: list[int]) -> tuple[Rows, bool]:
        """-> (rows by user, True), or ({}, False) when the store cannot answer now."""
        if not users:
            return {}, True
        if self.outage is not None:
            self._fell_back(len(users))
            return {}, False
        loop = asyncio.get_running_loop()
        try:
            rows = await asyncio.wait_for(loop.run_in_executor(self._pool, self._read, users),
                                          self.timeout_s)
        except Exception as e:  # TimeoutError, sqlite3.Error, StoreUnavailable, feast errors
            self._fail(self._describe(e), len(users))
            return {}, False
        return rows, True

    def _describe(self, e: BaseException) -> str:
        if isinstance(e, TimeoutError):
            return f"no answer within {self.timeout_s:g} s (locked by a writer?)"
        text = str(e).splitlines()[0] if str(e) else ""
        return f"{type(e).__name__}: {text}" if text else type(e).__name__

    # -- outages ------------------------------------------------------------------------------
    def _fell_back(self, n: int) -> None:
        metrics.FEAST_FALLBACK_USERS.inc(n)
        outage = self.outage
        if outage is not None:
            outage.users += n

    def _fail(self, reason: str, n: int) -> None:
        with self._lock:
            opened = self.outage is None
            if opened:
                self.outage = Outage(reason, time.monotonic(), time.time())
                self.outages += 1
        self._fell_back(n)
        if not opened:
            return  # logged once per outage
        metrics.FEAST_AVAILABLE.set(0)
        metrics.FEAST_OUTAGES.inc()
        log.warning("Feast online store unavailable (%s): users without a history in the "
                    "request get the cold-start table, flagged features_unavailable; probing "
                    "it every %g s, logged again when it answers", reason, self.retry_s)
        threading.Thread(target=self._probe, name="onerec-feast-probe", daemon=True).start()

    def _probe(self) -> None:
        """Until a read succeeds: one probe read every retry_s (one at a time: a read stuck
        behind a lock is waited for, not piled up behind)."""
        pending: Future | None = None
        while not self._stop.wait(self.retry_s):
            if pending is None or pending.done():
                pending = self._pool.submit(self._read, [PROBE_USER])
            try:
                pending.result(timeout=self.timeout_s)
            except Exception:  # still down (or still stuck): probe again
                if pending.done():
                    pending = None
                continue
            self._recover()
            return

    def _recover(self) -> None:
        with self._lock:
            outage, self.outage = self.outage, None
        if outage is None:
            return
        metrics.FEAST_AVAILABLE.set(1)
        log.info("Feast online store available again after %.1f s (%d users fell back to "
                 "request histories or the cold-start table meanwhile)",
                 time.monotonic() - outage.since, outage.users)

    def status(self) -> dict[str, Any]:
        outage = self.outage
        return {"available": outage is None, "outages": self.outages,
                "reason": outage.reason if outage is not None else None,
                "since": outage.started_at if outage is not None else None,
                "path": str(self.path) if self.path is not None else None}

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

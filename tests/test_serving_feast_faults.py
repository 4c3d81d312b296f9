"""Fault: the Feast online store (SQLite) is locked, removed, corrupt or unreadable while serving.

Issue #15, serving faults. One `onerec serve` (subprocess) reads user sequences from a real
Feast repo (`feast_online`); `--feast-timeout 0.5 --feast-retry 0.3`. Each test breaks the
store, sends requests, mends it. The request mixes three users: one whose sequences are in
Feast, one with a history in the request, one Feast has never seen. While the store is broken
every answer must be a 200; the Feast user gets the cold-start table with
`features_unavailable` true, the user with a request history is still generated from it, and
the server logs one warning for the outage (not one per request) and one message when the
store answers again. After the store is mended, Feast rows are read again.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("kserve")
pytest.importorskip("feast")
requests = pytest.importorskip("requests")

from tests.serving_util import (  # noqa: E402
    COLD,
    expected_items,
    feast_online,
    standin_server,
    video_table,
    wait_for,
)

VIDEOS = video_table(60)  # the stand-in version's item table
NO_ROW = 9003  # never in Feast
TOP_N = 4
DOWN, UP = "Feast online store unavailable (", "Feast online store available again"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    from onerec.features import online_user_context
    from serving.online import sqlite_path

    root = tmp_path_factory.mktemp("feast-faults")
    repo = root / "feature_repo"
    store, cfg, ds = feast_online(repo)
    ctx = online_user_context(store, list(range(50)))
    user = next(u for u, c in ctx.items() if c[0])  # has a short (clicked) sequence
    with standin_server(root, "--feature-repo", str(repo), "--feast-timeout", "0.5",
                        "--feast-retry", "0.3") as info:
        info.update(repo=repo, cfg=cfg, ds=ds, db=sqlite_path(store), user=user,
                    last_click=ctx[user][0][-1])
        yield info


def ask(server) -> dict:
    """One request: the Feast user, user 1 with history [1000], NO_ROW; -> parsed rows."""
    body = {"inputs": [
        {"name": "user_id", "shape": [3], "datatype": "INT64",
         "data": [server["user"], 1, NO_ROW]},
        {"name": "short_history", "shape": [3, 1], "datatype": "INT64",
         "data": [-1, 1000, -1]}], "parameters": {"beam_width": 8, "top_n": TOP_N}}
    r = requests.post(f"{server['base']}/v2/models/onerec/infer", json=body, timeout=10)
    out = {"status": r.status_code}
    if r.ok:
        got = {o["name"]: o["data"] for o in r.json()["outputs"]}
        out["videos"] = np.asarray(got["video_ids"]).reshape(3, TOP_N).tolist()
        out["cold"] = got["cold_start"]
        out["flag"] = got["features_unavailable"]
    return out


def cold_row() -> list[int]:
    return (COLD + [-1] * TOP_N)[:TOP_N]


def healthy(server, last_click: int | None = None) -> bool:
    a = ask(server)
    click = server["last_click"] if last_click is None else last_click
    return (a["status"] == 200 and a["flag"] == [False, False, False]
            and a["videos"][0] == expected_items(VIDEOS, click, TOP_N))


def status(server) -> dict:
    return requests.get(f"{server['base']}/onerec/versions", timeout=5).json()["features"]


def logged(server, what: str) -> int:
    return server["log"].read_text().count(what)


def outage(server, break_store: Callable[[], None], mend_store: Callable[[], None]) -> dict:
    """Break the store, send 20 requests from the test and 2 threads, mend it, wait until
    Feast rows are read again; -> what was seen."""
    down0, up0 = logged(server, DOWN), logged(server, UP)
    answers: list[dict] = []

    def send(n: int) -> None:
        for _ in range(n):
            answers.append(ask(server))

    break_store()
    try:
        threads = [threading.Thread(target=send, args=(10,)) for _ in range(2)]
        for t in threads:
            t.start()
        send(20)
        for t in threads:
            t.join(timeout=60)
        during = status(server)
    finally:
        mend_store()
    wait_for(lambda: healthy(server), 20, "Feast rows read again")
    wait_for(lambda: logged(server, UP) == up0 + 1, 10, "the recovery message")
    return {"answers": answers, "status": during, "down": logged(server, DOWN) - down0,
            "up": logged(server, UP) - up0}


def check_degraded(seen: dict, reason: str) -> None:
    answers = seen["answers"]
    assert len(answers) == 40
    assert [a["status"] for a in answers] == [200] * 40  # no 5xx, no error at all
    for a in answers:
        assert a["flag"] == [True, False, True], a  # users that needed Feast are flagged
        assert a["cold"] == [True, False, True], a
        assert a["videos"][0] == cold_row() and a["videos"][2] == cold_row()
        assert a["videos"][1] == expected_items(VIDEOS, 1000, TOP_N)  # its own history
    assert seen["status"]["available"] is False and reason in seen["status"]["reason"]
    assert (seen["down"], seen["up"]) == (1, 1), seen  # once per outage, not per request


def test_healthy_store_rows_are_read_and_nothing_is_flagged(server) -> None:
    a = ask(server)
    assert a["status"] == 200 and a["flag"] == [False, False, False]
    assert a["cold"] == [False, False, True]
    assert a["videos"][0] == expected_items(VIDEOS, server["last_click"], TOP_N)
    st = status(server)
    assert (st["available"], st["outages"], st["reason"]) == (True, 0, None)
    assert Path(st["path"]).name == "online_store.db"
    assert logged(server, DOWN) == 0


def test_store_locked_by_another_connection(server) -> None:
    conn = sqlite3.connect(server["db"], timeout=10, isolation_level=None)

    def lock() -> None:
        conn.execute("BEGIN EXCLUSIVE")

    def unlock() -> None:
        conn.execute("ROLLBACK")
        conn.close()

    seen = outage(server, lock, unlock)
    check_degraded(seen, "no answer within 0.5 s")


def test_store_file_removed_then_restored_as_a_new_file(server) -> None:
    """The server must not keep reading the removed file through Feast's open connection:
    after the restore (a copy: another inode) an event pushed to the new file is served."""
    import pandas as pd

    from onerec.features import StreamWriter, open_store

    db: Path = server["db"]
    backup = db.with_name("online_store.db.bak")

    def restore() -> None:
        shutil.copy2(backup, db)
        backup.unlink()

    seen = outage(server, lambda: db.rename(backup), restore)
    check_degraded(seen, "No such file or directory")
    video = int(VIDEOS[42])
    event = pd.DataFrame([{"user_id": server["user"], "video_id": video,
                           "time_ms": int(server["ds"].events["time_ms"].max()) + 1000,
                           "is_click": 1, "long_view": 0, "is_like": 0, "is_follow": 0,
                           "is_comment": 0, "play_time_ms": 1000, "duration_ms": 2000,
                           "watch_ratio": 0.5}])
    StreamWriter(open_store(server["repo"]), server["cfg"], offline=False).consume(event)
    wait_for(lambda: healthy(server, last_click=video), 10, "the pushed event served")
    server["last_click"] = video


def test_store_file_replaced_by_garbage(server) -> None:
    """Another inode makes the server reopen the store; that one is no database: an outage
    until the good file is back (atomic renames both ways: never a missing file here)."""
    db: Path = server["db"]
    good, garbage = db.with_name("online_store.db.good"), db.with_name("garbage.tmp")

    def corrupt() -> None:
        os.link(db, good)
        garbage.write_bytes(b"not a database, " * 256)
        os.replace(garbage, db)

    seen = outage(server, corrupt, lambda: os.replace(good, db))
    check_degraded(seen, "file is not a database")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads an unreadable folder anyway")
def test_store_folder_unreadable(server) -> None:
    folder = Path(server["db"]).parent
    seen = outage(server, lambda: folder.chmod(0), lambda: folder.chmod(0o755))
    check_degraded(seen, "Permission denied")


def test_outages_are_counted_in_metrics(server) -> None:
    text = requests.get(f"{server['base']}/metrics", timeout=5).text
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith("onerec_feast_")}
    outages = status(server)["outages"]
    assert outages >= 2 and values["onerec_feast_online_outages_total"] == outages
    assert values["onerec_feast_online_available"] == 1.0
    assert values["onerec_feast_fallback_users_total"] >= 80 * outages  # 2 users x 40 each

"""Fault: the server is killed (SIGKILL, no shutdown hook runs) under load and restarted.

Issue #15, serving faults. `onerec serve` runs in a subprocess over a repository holding two
good versions and a torn one; three client threads send the same request back to back while
it is killed with SIGKILL and started again on the same repository and ports. Failures are
expected between the kill and the restarted server's readiness; from then on none, and the
restarted server must serve what the killed one served: the same version (the newest good
one, the torn one refused again from the files alone, since nothing of the first run's state
survives), the same answers, the same `/onerec/versions`.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

pytest.importorskip("kserve")
pytest.importorskip("tritonclient.http")
requests = pytest.importorskip("requests")

from tests.serving_util import (  # noqa: E402
    COLD,
    Hammer,
    free_port,
    start_serve,
    stop,
    wait_ready,
    write_version,
)


def versions(base: str) -> dict:
    return requests.get(f"{base}/onerec/versions", timeout=5).json()


def test_kill_9_under_load_then_restart_serves_the_same_version(tmp_path: Path) -> None:
    model_dir = tmp_path / "repo" / "onerec"
    write_version(model_dir, 1, n_items=60, cold_start=COLD)
    write_version(model_dir, 2, n_items=60, cold_start=COLD, seed=2)
    write_version(model_dir, 3, n_items=60, cold_start=COLD, seed=3)
    graph = model_dir / "3" / "model.onnx"
    graph.write_bytes(graph.read_bytes()[:200])  # torn: its sha256 no longer matches
    http, grpc = free_port(), free_port()
    base, log = f"http://127.0.0.1:{http}", tmp_path / "server.log"
    extra = ("--poll-interval", "0.2")
    proc = start_serve(tmp_path / "repo", http, grpc, log, *extra)
    try:
        wait_ready(proc, base, log)
        before = versions(base)
        assert before["active_version"] == 2 and list(before["refused"]) == ["3"]
        with Hammer(f"127.0.0.1:{http}") as load:
            load.wait_ok(30)
            t_kill = time.time()
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=10) == -signal.SIGKILL
            time.sleep(0.3)  # the clients hit a dead port for a while
            t_restart = time.time()
            proc = start_serve(tmp_path / "repo", http, grpc, log, *extra, append=True)
            wait_ready(proc, base, log)
            t_ready = time.time()
            load.wait_ok(30, after=t_ready)
        after = versions(base)
    finally:
        stop(proc)

    outcomes = list(load.outcomes)
    reference = outcomes[0]
    assert reference.version == 2 and not reference.rows[0][1] and reference.rows[1][1]
    done_before = [o for o in outcomes if o.t1 < t_kill]
    assert done_before and all(o.version == 2 and o.rows == reference.rows
                               for o in done_before), [o for o in done_before if o.version != 2]
    during = [o for o in outcomes if t_kill <= o.t0 < t_restart]
    assert during and all(o.version is None for o in during)  # the kill was felt
    since_ready = [o for o in outcomes if o.t0 >= t_ready]
    failures = [o for o in since_ready if o.version is None]
    assert not failures, failures[:3]
    assert len(since_ready) >= 30
    assert all(o.version == 2 and o.rows == reference.rows for o in since_ready)
    # the same state, rebuilt from the repository alone
    for key in ("active_version", "available", "expected", "swaps", "model_dir"):
        assert after[key] == before[key], key
    assert after["refused"]["3"]["reason"] == before["refused"]["3"]["reason"]
    assert "sha256 does not match the manifest" in after["refused"]["3"]["reason"]
    assert log.read_text().count("refused model version 3") == 2  # once per run

"""The serving stack end to end: a real KServe ModelServer in a subprocess, on free ports.

One server for the module (started with `onerec serve`) (start-up is the expensive part). It starts on an empty model folder,
so the first test sees it live but not ready; the fixture then publishes version 1 (a stand-in
graph whose answer is predictable, `tests.serving_util`). Tests run in file order: round trips
and bad requests on version 1, then hot swap to version 2 under load, then a version with a
foreign codebook fingerprint that must be refused while version 2 keeps serving.
HTTP goes through tritonclient.http in this process; gRPC through `tests.serving_grpc_probe`
in a subprocess (tritonclient.grpc and kserve cannot share a process).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("kserve")
pytest.importorskip("tritonclient.http")
requests = pytest.importorskip("requests")

from serving.client import RecommendClient  # noqa: E402
from tests.serving_util import (  # noqa: E402
    expected_items,
    feast_world,
    video_table,
    write_version,
)

ROOT = Path(__file__).resolve().parents[1]
COLD = [1049, 1007, 1000]  # the cold-start table of the test versions
N_ITEMS = 60  # the synthetic catalogue of the tiny preset (video ids 1000 + 7k here)
VIDEOS = video_table(N_ITEMS)  # version 1's item table (seed 0)
NO_ROW = 9003  # a user id the Feast store has never seen


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout: float = 30.0, what: str = "condition") -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            if cond():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("serving")
    repo, feature_repo = root / "repo", root / "feature_repo"
    model_dir = repo / "onerec"
    model_dir.mkdir(parents=True)
    store, cfg, ds = feast_world(feature_repo)
    config = cfg.save(root / "serve.yaml")  # the tiny preset, as a file (--config)
    http, grpc = free_port(), free_port()
    log = open(repo.parent / "server.log", "w")  # noqa: SIM115 - closed at teardown
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "onerec", "serve", "--repo", str(repo), "--config", str(config),
         "--http-port", str(http), "--grpc-port", str(grpc), "--poll-interval", "0.2",
         "--feature-repo", str(feature_repo)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http}"
    info = {"repo": repo, "model_dir": model_dir, "http": f"127.0.0.1:{http}",
            "grpc": f"127.0.0.1:{grpc}", "base": base, "proc": proc, "store": store,
            "cfg": cfg, "ds": ds}
    try:
        wait_for(lambda: requests.get(f"{base}/v2/health/live", timeout=1).ok, 60, "live")
        info["before"] = {
            "live": requests.get(f"{base}/v2/health/live").json(),
            "model_ready": requests.get(f"{base}/v2/models/onerec/ready").status_code,
            "infer": requests.post(f"{base}/v2/models/onerec/infer", json={"inputs": [
                {"name": "user_id", "shape": [1], "datatype": "INT64", "data": [1]}]}),
        }
        write_version(model_dir, 1, n_items=N_ITEMS, cold_start=COLD)
        wait_for(lambda: requests.get(f"{base}/v2/models/onerec/ready").ok, 30, "ready")
        yield info
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def http(server) -> RecommendClient:
    return RecommendClient(server["http"], "http")


def infer_json(server, body) -> requests.Response:
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return requests.post(f"{server['base']}/v2/models/onerec/infer", data=data,
                         headers={"Content-Type": "application/json"}, timeout=10)


def user_input(ids=(1,), dtype="INT64", shape=None):
    return {"name": "user_id", "shape": shape or [len(ids)], "datatype": dtype,
            "data": list(ids)}


# -- health --------------------------------------------------------------------------------------
def test_live_at_once_ready_only_after_a_version_is_loaded(server) -> None:
    before = server["before"]
    assert before["live"] == {"live": True}
    assert before["model_ready"] == 503  # no version yet: not ready
    assert before["infer"].status_code == 503
    r = requests.get(f"{server['base']}/v2/models/onerec/ready")
    assert r.status_code == 200 and r.json()["ready"] is True
    assert requests.get(f"{server['base']}/v2/models/onerec-graph/ready").json()["ready"]
    assert requests.get(f"{server['base']}/v2/health/ready").json()["ready"] is True
    assert requests.get(f"{server['base']}/v2/models/nope/ready").status_code == 404
    meta = requests.get(f"{server['base']}/v2/models/onerec").json()
    assert [i["name"] for i in meta["inputs"]] == ["user_id", "short_history", "pos_history",
                                                   "long_history"]
    assert [o["name"] for o in meta["outputs"]] == ["video_ids", "scores", "cold_start",
                                                    "unknown_ids", "features_unavailable"]


# -- round trips ---------------------------------------------------------------------------------
def check_rows(rows) -> None:
    """Users 1 (history 1001 unknown, 1000 known), 2 (only unknown ids), NO_ROW (nothing in
    the request or in Feast)."""
    u1, u2, u3 = rows
    assert u1.video_ids == expected_items(VIDEOS, 1000, 6)  # most recent *known* item counts
    assert u1.scores == [-0.5 * j for j in range(6)]
    assert (u1.cold_start, u1.unknown_ids) == (False, 1)
    assert (u2.cold_start, u2.unknown_ids, u2.video_ids) == (True, 1, COLD)
    assert (u3.cold_start, u3.unknown_ids, u3.video_ids) == (True, 0, COLD)
    assert u2.scores == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_http_round_trip(server, binary: bool) -> None:
    c = RecommendClient(server["http"], "http", binary=binary)
    r = c.recommend([1, 2, NO_ROW], {"short_history": [[1001, 1000], [5], []]}, beam_width=16,
                    top_n=6)
    check_rows(r.rows)
    assert (r.model_version, r.beam_width, r.top_n) == (1, 16, 6)


def test_defaults_come_from_the_config(http) -> None:
    r = http.recommend([7], {"long_history": [[int(VIDEOS[3])]]})
    assert (r.beam_width, r.top_n) == (8, 5)  # tiny preset: serve.beam_width / serve.top_n
    # only the long pathway: the stand-in reads `short`, which is empty -> index 0 base
    assert r.rows[0].video_ids == [int(v) for v in VIDEOS[:5]] and not r.rows[0].cold_start


def test_request_history_longer_than_the_model_keeps_the_most_recent(http) -> None:
    hist = [int(v) for v in VIDEOS[:40]]  # the graph reads 8
    r = http.recommend([1], {"short_history": [hist]}, top_n=3)
    assert r.rows[0].video_ids == expected_items(VIDEOS, hist[-1], 3)


# -- Feast ---------------------------------------------------------------------------------------
def test_users_without_request_history_are_read_from_feast(server, http) -> None:
    from onerec.features import online_user_context

    ctx = online_user_context(server["store"], list(range(50)))
    with_short = [u for u, c in ctx.items() if c[0]]
    long_only = [u for u, c in ctx.items() if not c[0] and c[2]]
    users = [*with_short[:3], *long_only[:1], NO_ROW]
    r = http.recommend(users, top_n=4)
    for u, row in zip(users, r.rows, strict=True):
        if u == NO_ROW:
            assert row.cold_start and row.video_ids == COLD
        elif ctx[u][0]:  # the stand-in answers from the newest clicked video in Feast
            assert not row.cold_start
            assert row.video_ids == expected_items(VIDEOS, ctx[u][0][-1], 4), u
        else:  # known videos only in the lifelong sequence: generated, not cold
            assert not row.cold_start and row.video_ids == [int(v) for v in VIDEOS[:4]]
    assert with_short and all(row.unknown_ids == 0 for row in r.rows)


def test_a_pushed_event_reaches_serving_without_a_restart(server, http) -> None:
    import pandas as pd

    from onerec.features import StreamWriter, online_user_context

    user, video = 3, int(VIDEOS[42])
    last = server["ds"].events["time_ms"].max()
    event = pd.DataFrame([{"user_id": user, "video_id": video, "time_ms": int(last) + 1000,
                           "is_click": 1, "long_view": 0, "is_like": 0, "is_follow": 0,
                           "is_comment": 0, "play_time_ms": 1000, "duration_ms": 2000,
                           "watch_ratio": 0.5}])
    StreamWriter(server["store"], server["cfg"], offline=False).consume(event)
    assert online_user_context(server["store"], [user])[user][0][-1] == video
    r = http.recommend([user], top_n=3)
    assert r.rows[0].video_ids == expected_items(VIDEOS, video, 3)


def test_graph_model_serves_item_indices(server) -> None:
    body = {"inputs": [
        {"name": "user", "shape": [1], "datatype": "INT64", "data": [0]},
        {"name": "short", "shape": [1, 8], "datatype": "INT64", "data": [0] * 7 + [5]},
        {"name": "pos", "shape": [1, 8], "datatype": "INT64", "data": [0] * 8},
        {"name": "long", "shape": [1, 16], "datatype": "INT64", "data": [0] * 16}],
        "parameters": {"beam_width": 4}}
    r = requests.post(f"{server['base']}/v2/models/onerec-graph/infer", json=body).json()
    out = {o["name"]: o["data"] for o in r["outputs"]}
    assert out["items"] == [6, 7, 8, 9] and out["scores"] == [0.0, -0.5, -1.0, -1.5]
    triton_style = {**body, "inputs": [{**body["inputs"][0], "shape": [1, 1]},
                                       *body["inputs"][1:]]}  # `user` as Triton's [B, 1]
    r = requests.post(f"{server['base']}/v2/models/onerec-graph/infer", json=triton_style)
    assert r.ok and {o["name"]: o["data"] for o in r.json()["outputs"]}["items"] == [6, 7, 8, 9]
    bad = {**body, "inputs": [*body["inputs"][:1],
                              {**body["inputs"][1], "shape": [1, 1], "data": [5]},
                              *body["inputs"][2:]]}
    r = requests.post(f"{server['base']}/v2/models/onerec-graph/infer", json=bad)
    assert r.status_code == 400 and "input short: length must be 8" in r.json()["error"]


def graph_calls(server) -> float:
    """How many times the module server's raw graph model has predicted (KServe's metric)."""
    for line in requests.get(f"{server['base']}/metrics").text.splitlines():
        if line.startswith('request_predict_seconds_count{model_name="onerec-graph"}'):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.parametrize("protocol", ["v2", "grpc-v2"])
def test_cluster_mode_transformer_calls_a_remote_predictor(server, http, protocol) -> None:
    """KServe's transformer pattern: a second server whose transformer sends the graph inputs
    to the module server's `onerec-graph` (Triton's role in the cluster) over REST or gRPC."""
    port = free_port()
    host = server["http"] if protocol == "v2" else server["grpc"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving.server", "--repo", str(server["repo"]), "--preset",
         "tiny", "--http_port", str(port), "--grpc_port", str(free_port()), "--poll_interval",
         "0", "--predictor_host", host, "--predictor_protocol", protocol,
         "--graph_name", "onerec-graph", "--enable_grpc", "false"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        remote = RecommendClient(f"127.0.0.1:{port}", "http")
        wait_for(remote.ready, 60, "the transformer-only server")
        before = graph_calls(server)
        hist = {"short_history": [[1001, 1000], [5], []]}
        got = remote.recommend([1, 2, NO_ROW], hist, beam_width=16, top_n=6)
        check_rows(got.rows)
        assert got.model_version == 1
        assert graph_calls(server) == before + 1  # the module server ran the graph
        assert requests.get(f"http://127.0.0.1:{port}/v2/models/onerec-graph/ready"
                            ).status_code == 404  # no local graph in remote mode
    finally:
        proc.terminate()
        proc.wait(timeout=15)


# -- bad requests --------------------------------------------------------------------------------
HIST_OK = {"name": "short_history", "shape": [1, 2], "datatype": "INT64", "data": [1000, 1007]}
BAD_REQUESTS = {
    "missing user_id": ({"inputs": [HIST_OK]}, "input user_id: missing"),
    "wrong dtype": ({"inputs": [user_input([1.0], "FP32")]}, "input user_id: datatype must be "
                                                             "INT64, got FP32"),
    "wrong rank": ({"inputs": [user_input([1], shape=[1, 1])]}, "input user_id: shape must be "
                                                                "[B]"),
    "history batch mismatch": ({"inputs": [user_input([1, 2]), HIST_OK]},
                               "input short_history: first dimension must equal the batch"),
    "data does not fill shape": ({"inputs": [user_input([1], shape=[3])]},
                                 "input user_id: 1 values do not fill shape [3]"),
    "floats declared INT64": ({"inputs": [user_input([1.5])]}, "input user_id: values must be "
                                                               "integers"),
    "unknown input": ({"inputs": [user_input(), {**HIST_OK, "name": "histroy"}]},
                      "input histroy: unknown input"),
    "beam too large": ({"inputs": [user_input()], "parameters": {"beam_width": 65}},
                       "parameter beam_width: 65 exceeds the limit serve.max_beam_width=64"),
    "beam not an integer": ({"inputs": [user_input()], "parameters": {"beam_width": "wide"}},
                            "parameter beam_width: must be an integer"),
    "top_n too large": ({"inputs": [user_input()], "parameters": {"beam_width": 64,
                                                                  "top_n": 101}},
                        "parameter top_n: 101 exceeds the limit serve.max_top_n=100"),
    "top_n above beam": ({"inputs": [user_input()], "parameters": {"beam_width": 4,
                                                                   "top_n": 5}},
                         "parameter top_n: 5 exceeds beam_width=4"),
    "sequence too long": ({"inputs": [user_input(), {**HIST_OK, "shape": [1, 1025],
                                                     "data": [1000] * 1025}]},
                          "input short_history: length 1025 exceeds the limit "
                          "serve.max_request_seq_len=1024"),
    "malformed JSON": ('{"inputs": [', "malformed request: JSON decode error"),
    "no inputs field": ({"outputs": []}, "malformed request: Field required at "
                                         "InferenceRequest.inputs"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_400_naming_the_input(server, case: str) -> None:
    body, message = BAD_REQUESTS[case]
    r = infer_json(server, body)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


# -- gRPC ----------------------------------------------------------------------------------------
GRPC_BAD = [
    ({"inputs": {"short_history": ["INT64", [[1000]]]}}, "input user_id: missing"),
    ({"inputs": {"user_id": ["FP32", [1.0]]}}, "input user_id: datatype must be INT64"),
    ({"inputs": {"user_id": ["INT64", [[1]]]}}, "input user_id: shape must be [B]"),
    ({"inputs": {"user_id": ["INT64", [1]]}, "parameters": {"beam_width": 1000}},
     "serve.max_beam_width=64"),
    ({"inputs": {"user_id": ["INT64", [1]]}, "parameters": {"beam_width": 64, "top_n": 500}},
     "serve.max_top_n=100"),
    ({"inputs": {"user_id": ["INT64", [1]], "long_history": ["INT64", [[1000] * 1100]]}},
     "input long_history: length 1100 exceeds the limit serve.max_request_seq_len=1024"),
]


@pytest.fixture(scope="module")
def grpc_probe(server) -> dict:
    cases = json.dumps([c for c, _ in GRPC_BAD])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "tests.serving_grpc_probe", server["grpc"],
                          cases], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_grpc_round_trip_matches_http(grpc_probe: dict, http) -> None:
    from serving.client import Recommendation

    assert grpc_probe["live"] and grpc_probe["ready"]
    check_rows([Recommendation(**row) for row in grpc_probe["rows"]])
    assert grpc_probe["params"] == {"model_version": 1, "beam_width": 16, "top_n": 6}
    via_http = http.recommend([1, 2, NO_ROW], {"short_history": [[1001, 1000], [5], []]},
                              beam_width=16, top_n=6)
    assert [vars(r) for r in via_http.rows] == grpc_probe["rows"]


def test_grpc_bad_requests_are_invalid_argument(grpc_probe: dict) -> None:
    for (case, message), got in zip(GRPC_BAD, grpc_probe["errors"], strict=True):
        assert got["status"] == "StatusCode.INVALID_ARGUMENT", (case, got)
        assert message in got["message"], (case, got)


def test_grpc_reload_with_nothing_new_keeps_the_version(grpc_probe: dict, server) -> None:
    assert grpc_probe["reload"] == "ok"
    assert requests.get(f"{server['base']}/onerec/versions").json()["active_version"] == 1


def flat(text: str) -> str:
    """Rich wraps long lines to the terminal width; compare with whitespace collapsed."""
    return " ".join(text.split())


# -- the command line ----------------------------------------------------------------------------
def test_cli_recommend_over_http_prints_the_table(server) -> None:
    from typer.testing import CliRunner

    from onerec.app.cli import app

    res = CliRunner().invoke(app, ["recommend", "--user", "1", "--user", "2", "--history",
                                   "1001,1000", "--url", server["http"], "--top-n", "3",
                                   "--preset", "tiny"])
    assert res.exit_code == 0, res.output
    assert "onerec v1 (beam 8, top 3, http)" in res.output
    for vid in expected_items(VIDEOS, 1000, 3):
        assert str(vid) in res.output
    assert "False" in res.output and "True" not in res.output  # both users have a history


def test_cli_recommend_over_grpc(server) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-m", "onerec", "recommend", "--user", str(NO_ROW),
                          "--protocol", "grpc", "--url", server["grpc"], "--top-n", "3",
                          "--preset", "tiny"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "grpc" in out.stdout and "True" in out.stdout  # no history, no Feast: cold start
    for vid in COLD:
        assert str(vid) in out.stdout


def test_cli_errors_are_one_line_and_exit_2(server, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from onerec.app.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["recommend", "--user", "1", "--url", server["http"],
                              "--beam-width", "100000", "--preset", "tiny"])
    assert res.exit_code == 2 and "serve.max_beam_width=64" in flat(res.output)
    port = free_port()
    res = runner.invoke(app, ["recommend", "--user", "1", "--url", f"127.0.0.1:{port}"])
    assert res.exit_code == 2 and "error" in res.output
    res = runner.invoke(app, ["serve", "--repo", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "is not a folder" in flat(res.output)


# -- hot swap ------------------------------------------------------------------------------------
def hammer(client_url: str, stop: threading.Event, results: list) -> None:
    c = RecommendClient(client_url, "http")
    while not stop.is_set():
        try:
            r = c.recommend([1, NO_ROW], {"short_history": [[1000], []]}, beam_width=32, top_n=10)
            ok = len(r.rows[0].video_ids) == 10 and r.rows[1].cold_start
            results.append((r.model_version, ok))
        except Exception as e:  # a dropped request is what this test looks for
            results.append((None, repr(e)))


def test_hot_swap_under_load_drops_no_request(server) -> None:
    stop, results = threading.Event(), []
    threads = [threading.Thread(target=hammer, args=(server["http"], stop, results))
               for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(results) >= 40, 30, "traffic on version 1")
        write_version(server["model_dir"], 2, n_items=N_ITEMS, cold_start=COLD, seed=2)
        wait_for(lambda: any(v == 2 for v, _ in results[-20:]), 30, "version 2 serving")
        n = len(results)
        wait_for(lambda: len(results) >= n + 40, 30, "traffic on version 2")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    failures = [r for r in results if r[1] is not True]
    assert not failures, failures[:5]
    versions = [v for v, _ in results]
    assert versions[0] == 1 and versions[-1] == 2
    first2 = versions.index(2)
    assert all(v == 2 for v in versions[first2 + 8:])  # no flapping back (threads interleave)
    status = requests.get(f"{server['base']}/onerec/versions").json()
    assert status["active_version"] == 2 and status["swaps"] == 2 and not status["refused"]


def test_swapped_version_uses_its_own_item_table(http) -> None:
    videos2 = video_table(N_ITEMS, seed=2)
    r = http.recommend([1], {"short_history": [[int(videos2[10])]]}, top_n=4)
    assert r.model_version == 2
    assert r.rows[0].video_ids == expected_items(videos2, int(videos2[10]), 4)


def test_mismatched_fingerprint_is_refused_and_old_version_keeps_serving(server, http) -> None:
    write_version(server["model_dir"], 3, n_items=N_ITEMS, codebook_fp="another-codebook")
    base = server["base"]
    wait_for(lambda: "3" in requests.get(f"{base}/onerec/versions").json()["refused"], 15,
             "refusal of version 3")
    status = requests.get(f"{base}/onerec/versions").json()
    assert status["active_version"] == 2 and status["available"] == [1, 2, 3]
    assert "codebook_fingerprint another-codebook does not match" in \
        status["refused"]["3"]["reason"]
    r = http.recommend([1], {"short_history": [[1000]]})
    assert r.model_version == 2 and len(r.rows[0].video_ids) == 5
    # an explicit reload reports the refusal; the model stays ready on version 2
    load = requests.post(f"{base}/v2/repository/models/onerec/load")
    assert load.status_code == 503
    assert "codebook_fingerprint" in load.json()["error"] and "still serving version 2" in \
        load.json()["error"]
    assert http.ready()
    metrics = requests.get(f"{base}/metrics").text
    assert 'onerec_model_versions_refused_total{version="3"} 1.0' in metrics
    assert "onerec_model_version 2.0" in metrics


def test_the_server_listens_on_loopback_only_by_default(server):
    """`onerec serve` binds serve.host (127.0.0.1), not every interface as kserve would."""
    import ipaddress

    import psutil

    proc = psutil.Process(server["proc"].pid)
    listening = [c.laddr for p in (proc, *proc.children(recursive=True))
                 for c in p.connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    ports = {a.port for a in listening}
    wanted = {int(server["http"].rsplit(":", 1)[1]), int(server["grpc"].rsplit(":", 1)[1])}
    assert wanted <= ports, f"REST and gRPC listeners expected on {wanted}, got {listening}"

    def loopback(ip: str) -> bool:  # gRPC reports 127.0.0.1 as IPv4-mapped ::ffff:127.0.0.1
        addr = ipaddress.ip_address(ip)
        return (getattr(addr, "ipv4_mapped", None) or addr).is_loopback

    assert all(loopback(a.ip) for a in listening), listening


def test_bind_addresses_and_a_bad_host_is_named():
    from serving.bind import bind, grpc_address

    assert grpc_address("127.0.0.1", 8081) == "127.0.0.1:8081"
    assert grpc_address("::1", 8081) == "[::1]:8081"
    assert grpc_address("0.0.0.0", "9000") == "0.0.0.0:9000"
    with pytest.raises(ValueError, match=r"serve\.host"):
        bind("")

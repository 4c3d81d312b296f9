"""A short `bench.fuzz` in the test suite: 200 malformed requests per protocol against a real
`onerec serve`, failing on any server error, dropped connection, 4xx without a message, a limit
not enforced, or a changed answer to the valid request. Plus the fuzzer's own checks and
reproducibility, so a fuzzer that stopped noticing failures would fail here too.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("hypothesis")
# not imported here: tritonclient.grpc and kserve (other test files) cannot share a process
if importlib.util.find_spec("tritonclient") is None:
    pytest.skip("tritonclient not installed", allow_module_level=True)

from bench.fuzz import Outcome, failure, rest_message
from bench.fuzz_cases import Body, GrpcCase, RestCase, cases, rest_case
from tests.serving_util import ROOT


def test_200_malformed_requests_per_protocol_get_no_server_error() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "bench.fuzz", "--requests", "200", "--protocol",
                          "both", "--seed", "0"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=180)
    took = time.perf_counter() - t0
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    assert "no server errors" in out
    assert "rest: 200 requests" in out and "grpc: 200 requests" in out
    assert "valid answer unchanged: True" in out
    rows = [ln for ln in res.stdout.splitlines() if ln.startswith("| rest |")
            or ln.startswith("| grpc |")]
    counted = {p: sum(int(r.split("|")[3]) for r in rows if r.startswith(f"| {p} |"))
               for p in ("rest", "grpc")}
    assert counted == {"rest": 200, "grpc": 200}
    statuses = {r.split("|")[2].strip() for r in rows}
    assert {"400", "413", "INVALID_ARGUMENT"} <= statuses  # malformed and oversized seen
    assert not any(s.startswith("5") for s in statuses)
    assert took < 120, f"took {took:.0f} s"


def test_the_checks_flag_what_the_run_must_fail_on() -> None:
    case = RestCase("x", "/v2/models/onerec/infer", Body(b"{}"))
    assert failure("rest", case, Outcome("dropped", "ConnectionResetError"))
    assert failure("rest", case, Outcome("500", "boom"))
    assert failure("rest", case, Outcome("503", "not ready"))
    assert failure("rest", case, Outcome("400", "")) == "HTTP 400 without a message"
    assert failure("rest", case, Outcome("400", "input user_id: missing")) is None
    assert failure("rest", case, Outcome("200", "")) is None
    limited = RestCase("x", "/", Body(b""), expect=((413,), "serve.max_request_bytes"))
    assert failure("rest", limited, Outcome("400", "malformed"))  # the limit was not enforced
    assert failure("rest", limited, Outcome("413", "... serve.max_request_bytes=1")) is None
    g = GrpcCase("x", lambda: b"")
    for code in ("INTERNAL", "UNKNOWN", "UNAVAILABLE", "DEADLINE_EXCEEDED"):
        assert failure("grpc", g, Outcome(code, "x"))
    assert failure("grpc", g, Outcome("INVALID_ARGUMENT", ""))
    assert failure("grpc", g, Outcome("INVALID_ARGUMENT", "input x: ...")) is None
    assert failure("grpc", GrpcCase("x", lambda: b"", "RESOURCE_EXHAUSTED"),
                   Outcome("INVALID_ARGUMENT", "x"))


def test_error_messages_are_read_from_every_answer_shape() -> None:
    assert rest_message(b'{"error": "input x: bad"}') == "input x: bad"
    assert rest_message(b'{"detail": "Not Found"}') == "Not Found"
    assert rest_message(b"Invalid HTTP request received.") == "Invalid HTTP request received."
    assert rest_message(b'{"error": ""}') == ""
    assert rest_message(b"[]") == ""


def test_the_same_seed_draws_the_same_cases() -> None:
    a, b = cases(rest_case(), 40, 7), cases(rest_case(), 40, 7)
    assert [(c.what, c.path, c.headers, c.length, c.body.build()) for c in a] == \
        [(c.what, c.path, c.headers, c.length, c.body.build()) for c in b]
    c = cases(rest_case(), 40, 8)
    assert [x.body.build() for x in a] != [x.body.build() for x in c]
    # gRPC messages are tritonclient protobufs: built in a process that never imports kserve
    code = ("from bench.fuzz_cases import cases, grpc_case\n"
            "runs = [[c.message() for c in cases(grpc_case(), 40, s)] for s in (7, 7, 8)]\n"
            "print(runs[0] == runs[1], runs[0] != runs[2])")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["True", "True"]

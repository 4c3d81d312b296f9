"""Request limits before parsing, and malformed requests that used to be 5xx, on a real server.

One `onerec serve` for the module (`tests.serving_util.standin_server`: the stand-in graph, no
Feast) with small limits (serve.max_request_bytes=65536, max_json_depth=8,
max_json_elements=2000) so the bodies that cross them stay small. REST goes over raw sockets
where a header or the declared length matters (`bench.fuzz.send_rest`), else `requests`; gRPC
through a subprocess that never imports kserve (`bench.fuzz.GrpcSender`: raw message bytes).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys

import pytest

pytest.importorskip("kserve")
requests = pytest.importorskip("requests")

from bench.fuzz import send_rest  # noqa: E402
from bench.fuzz_cases import Body, RestCase  # noqa: E402
from tests.serving_util import ROOT, standin_server  # noqa: E402

CAP, DEPTH, ELEMENTS = 65536, 8, 2000
LIMITS = ["--set", f"serve.max_request_bytes={CAP}", "--set", f"serve.max_json_depth={DEPTH}",
          "--set", f"serve.max_json_elements={ELEMENTS}"]
INFER = "/v2/models/onerec/infer"
VALID = {"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT64", "data": [1]},
                    {"name": "short_history", "shape": [1, 2], "datatype": "INT64",
                     "data": [1000, 1007]}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with standin_server(tmp_path_factory.mktemp("limits"), *LIMITS) as srv:
        host, port = srv["http"].rsplit(":", 1)
        srv["addr"] = (host, int(port))
        yield srv


def raw(server, body: bytes, *, length: str = "honest", path: str = INFER,
        headers: list[tuple[str, str]] | None = None):
    case = RestCase("test", path, Body(body), headers=[("Content-Type", "application/json")]
                    if headers is None else headers, length=length)
    out = send_rest(server["addr"], case, timeout_s=20)
    assert out.status != "dropped", out.message
    return int(out.status), out.message, out.body


def post(server, body, headers=None) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(server["base"] + INFER, data=data, timeout=20,
                         headers={"Content-Type": "application/json"} if headers is None
                         else headers)


# -- body size -----------------------------------------------------------------------------------
def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(server) -> None:
    """Headers only, claiming 10 MB: the answer comes without a byte of body being read."""
    with socket.create_connection(server["addr"], timeout=10) as s:
        s.sendall(f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: 10000000\r\n\r\n".encode())
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body == {"error": f"request body: Content-Length 10000000 exceeds the limit "
                             f"serve.max_request_bytes={CAP}"}


@pytest.mark.parametrize("length", ["honest", "chunked"])
def test_the_limit_is_exact_with_or_without_a_content_length(server, length: str) -> None:
    valid = json.dumps(VALID).encode()
    at_limit = valid[:-1] + b" " * (CAP - len(valid)) + b"}"  # spaces: still the valid request
    assert len(at_limit) == CAP
    status, _, body = raw(server, at_limit, length=length)
    assert status == 200 and json.loads(body)["outputs"][0]["name"] == "video_ids"
    status, message, _ = raw(server, at_limit[:-1] + b" }", length=length)
    assert status == 413
    assert f"serve.max_request_bytes={CAP}" in message
    if length == "chunked":  # counted as it streams: no Content-Length to trust
        assert message.startswith(f"request body: more than {CAP} bytes")


def test_a_content_length_shorter_than_the_body_reads_only_what_it_declares(server) -> None:
    status, message, _ = raw(server, json.dumps(VALID).encode() + b" " * 100, length="short")
    assert status == 400 and "malformed request" in message


def test_a_content_length_that_is_not_a_number_is_a_400(server) -> None:
    with socket.create_connection(server["addr"], timeout=10) as s:
        s.sendall(f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n"
                  f"Connection: close\r\n\r\n{{}}".encode())
        answer = b"".join(iter(lambda: s.recv(4096), b""))
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]  # uvicorn's own refusal


# -- structure -----------------------------------------------------------------------------------
def test_nesting_deeper_than_the_limit_is_a_400_naming_it(server) -> None:
    pre = '{"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT64", "data": '  # 3 deep

    def nested(k: int) -> str:
        return pre + "[" * k + "1" + "]" * k + "}]}"

    r = post(server, nested(DEPTH - 3))  # at the limit: the model reads it (1 value, shape [1])
    assert r.status_code == 200, r.text
    r = post(server, nested(DEPTH - 2))
    assert r.status_code == 400
    assert r.json()["error"] == (f"request body: JSON nested {DEPTH + 1} deep exceeds the limit "
                                 f"serve.max_json_depth={DEPTH}")
    r = post(server, "[" * 30_000 + "]" * 30_000)  # far past Python's recursion limit
    assert r.status_code == 400 and f"serve.max_json_depth={DEPTH}" in r.json()["error"]


def test_brackets_and_commas_inside_strings_do_not_count(server) -> None:
    body = {**VALID, "id": "[{" * 500 + '",\\"' + ",]" * (ELEMENTS + 500)}  # 5 KB of id
    r = post(server, body)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == body["id"]


def test_more_values_than_the_limit_is_a_413_naming_it(server) -> None:
    body = {"inputs": [{"name": "user_id", "shape": [ELEMENTS], "datatype": "INT64",
                        "data": [1] * ELEMENTS}]}
    r = post(server, body)
    assert r.status_code == 413
    assert "JSON values exceed the limit serve.max_json_elements=2000" in r.json()["error"]
    body["inputs"][0]["data"] = [1] * (ELEMENTS - 20)
    body["inputs"][0]["shape"] = [ELEMENTS - 20]
    r = post(server, body)  # under the limit: the model's own batch limit answers
    assert r.status_code == 400 and "exceeds the limit max_batch=256" in r.json()["error"]


def test_a_number_too_long_for_any_int64_is_a_400_before_parsing(server) -> None:
    r = post(server, json.dumps(VALID).replace("[1]", "[" + "9" * 5000 + "]", 1))
    assert r.status_code == 400
    assert "a JSON number of 5000 characters" in r.json()["error"]


def test_a_lone_surrogate_escape_is_a_400_not_a_500(server) -> None:
    body = json.dumps({"inputs": [{"name": "user_id", "shape": [1], "datatype": "\ud800",
                                   "data": [1]}]})
    assert "\\ud800" in body
    r = post(server, body)
    assert r.status_code == 400 and "lone UTF-16 surrogate" in r.json()["error"]
    paired = json.dumps({**VALID, "id": "\U0001f600"})  # an escaped pair is fine
    assert "\\ud83d\\ude00" in paired
    r = post(server, paired)
    assert r.status_code == 200 and r.json()["id"] == "\U0001f600"


# -- content type --------------------------------------------------------------------------------
@pytest.mark.parametrize("content_type", [None, "text/plain", "application/octet-stream"])
def test_an_infer_body_that_is_neither_json_nor_binary_is_a_415(server, content_type) -> None:
    headers = [] if content_type is None else [("Content-Type", content_type)]
    status, message, _ = raw(server, json.dumps(VALID).encode(), headers=headers)
    assert status == 415
    assert message.startswith("header Content-Type: ")
    assert "application/json" in message and "Inference-Header-Content-Length" in message


def test_json_with_a_charset_is_still_json(server) -> None:
    r = post(server, VALID, {"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 200


def test_fastapi_parse_errors_come_in_the_v2_error_shape(server) -> None:
    r = post(server, b'{"inputs": [\xff]}')
    assert r.status_code == 400 and set(r.json()) == {"error"}


# -- the binary tensor extension -----------------------------------------------------------------
def binary(server, header: dict, tail: bytes, declared: str | None = None):
    head = json.dumps(header).encode()
    return post(server, head + tail, {"Content-Type": "application/octet-stream",
                                      "Inference-Header-Content-Length":
                                      declared if declared is not None else str(len(head))})


def binary_user(size: int | str = 8) -> dict:
    return {"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT64",
                        "parameters": {"binary_data_size": size}}]}


def test_a_valid_binary_request_is_answered(server) -> None:
    r = binary(server, binary_user(), (1).to_bytes(8, "little"))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("header, tail, declared, message", [
    (binary_user(), b"\0" * 8, "x", "header Inference-Header-Content-Length: expected a byte "
                                    "count, got 'x'"),
    (binary_user(), b"\0" * 8, "99999", "header Inference-Header-Content-Length: 99999 exceeds"),
    (binary_user("8"), b"\0" * 8, None, "inputs[0].parameters.binary_data_size: must be an "
                                        "integer >= 0, got '8'"),
    (binary_user(16), b"\0" * 16, None, "inputs[0].parameters.binary_data_size: 16 bytes do "
                                        "not fill shape [1] of INT64 (8 bytes)"),
    (binary_user(), b"\0" * 4, None, "exceeds the 4 bytes after the JSON header"),
    ([1, 2], b"", None, "request header: must be a JSON object"),
    ({"inputs": [{"shape": [1], "datatype": "INT64", "parameters": {"binary_data_size": 8}}]},
     b"\0" * 8, None, "inputs[0].name: must be a string"),
    ({"inputs": [{"name": "user_id", "shape": [1], "datatype": "BYTES",
                  "parameters": {"binary_data_size": 8}}]}, b"\0" * 8, None,
     "inputs[0].datatype: BYTES is not a fixed-size v2 datatype"),
    ({**binary_user(), "outputs": [{"name": 5}]}, b"\0" * 8, None,
     "outputs[0]: must be an object with a string 'name'"),
], ids=["length-not-a-number", "length-past-body", "size-a-string", "size-not-the-shape",
        "size-past-tail", "header-a-list", "no-name", "bytes-binary", "output-name"])
def test_malformed_binary_requests_are_400s_naming_the_field(server, header, tail, declared,
                                                             message) -> None:
    r = binary(server, header, tail, declared)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


# -- what used to be 500s (or wrapped silently) --------------------------------------------------
def users(n: int) -> dict:
    return {"name": "user_id", "shape": [n], "datatype": "INT64", "data": list(range(n))}


@pytest.mark.parametrize("body, message", [
    # 4 x 2**62 wraps to 0 in int64 (np.prod): empty data used to "fill" it, then reshape raised
    ({"inputs": [users(4), {"name": "short_history", "shape": [4, 2**62], "datatype": "INT64",
                            "data": []}]}, "input short_history: dimension in shape"),
    ({"inputs": [{**users(1), "data": [2**63]}]}, "input user_id: value 9223372036854775808 "
                                                  "is out of the INT64 range"),
    ({"inputs": [users(1)], "parameters": {"beam_width": "9" * 5000}},
     "parameter beam_width: must be an integer, got 9999"),
    ({"inputs": [users(1)], "parameters": {"top_n": "--5"}},
     "parameter top_n: must be an integer, got --5"),
    ({"inputs": [{**users(1), "datatype": "x" * 10_000}]}, "(10000 characters)"),
], ids=["shape-product-wraps", "uint64-values-wrapped", "long-digit-string", "double-minus",
        "long-datatype-is-clipped"])
def test_requests_that_were_server_errors_are_400s(server, body, message) -> None:
    r = post(server, body)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]
    assert len(r.json()["error"]) < 400


# -- gRPC ----------------------------------------------------------------------------------------
GRPC_PROBE = """
import json, sys
from bench.fuzz import GrpcSender, valid_grpc_message
from tritonclient.grpc import service_pb2 as pb
s = GrpcSender(sys.argv[1])
cap = int(sys.argv[2])
big = pb.ModelInferRequest(model_name="onerec")
big.inputs.add(name="user_id", datatype="INT64", shape=[1])
big.raw_input_contents.append(b"\\0" * (cap + 1))
odd = pb.ModelInferRequest(model_name="onerec")
odd.inputs.add(name="user_id", datatype="INT65", shape=[1])
out = {}
for name, msg in [("valid", valid_grpc_message()), ("big", big.SerializeToString()),
                  ("garbage", b"\\xff\\xff\\xff"), ("datatype", odd.SerializeToString())]:
    o = s.send(msg, 20)
    out[name] = [o.status, o.message]
print(json.dumps(out))
"""


def test_grpc_limit_and_undecodable_messages(server) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", GRPC_PROBE, server["grpc"], str(CAP)], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)
    assert out["valid"][0] == "OK"
    status, message = out["big"]  # serve.max_request_bytes is grpc's receive limit
    assert status == "RESOURCE_EXHAUSTED" and f"vs. {CAP})" in message, message
    status, message = out["garbage"]  # grpc alone answers UNKNOWN ("Unexpected DecodeError")
    assert status == "INVALID_ARGUMENT"
    assert message.startswith("ModelInfer: the message is not a valid request protobuf")
    status, message = out["datatype"]  # kserve alone: "invalid content type"
    assert status == "INVALID_ARGUMENT"
    assert message.startswith("input user_id: datatype INT65 is not a v2 datatype")


# -- config --------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, key", [
    ("serve.max_request_bytes=0", "serve.max_request_bytes: must be > 0"),
    ("serve.max_request_bytes=4294967296", "serve.max_request_bytes: must be < 2 GiB"),
    ("serve.max_json_depth=4", "serve.max_json_depth: must be >= 5"),
    ("serve.max_json_elements=-1", "serve.max_json_elements: must be > 0"),
])
def test_limits_are_validated_config_keys(override: str, key: str) -> None:
    from onerec.config import Config, ConfigError

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        Config.from_preset("tiny", [override])
    serve = Config.from_preset("tiny").serve
    assert (serve.max_request_bytes, serve.max_json_depth, serve.max_json_elements) == (
        1 << 20, 32, 100_000)


# -- the scan on its own -------------------------------------------------------------------------
def test_blank_strings_removes_string_contents_escapes_included() -> None:
    from serving.limits import blank_strings

    text = json.dumps({'a\\': 'x"[', "b": [1, "]", "\\\\"], "c": "\\u00e9 {,"})
    assert blank_strings(text.encode()) == b'{"": "", "": [1, "", ""], "": ""}'
    assert blank_strings(b'["abc') == b"["  # unterminated: runs to the end


@pytest.mark.parametrize("body, status, text", [
    (b'{"a": [1, 2, 3]}', None, ""),
    (b"[" * 33 + b"]" * 33, 400, "JSON nested 33 deep exceeds the limit serve.max_json_depth=32"),
    (b'["' + b"[" * 100 + b'"]', None, ""),  # inside a string
    (b"[" + b"1," * 100_000 + b"1]", 413, "about 100002 JSON values exceed the limit "
                                          "serve.max_json_elements=100000"),
    (b"[" + b"9" * 65 + b"]", 400, "a JSON number of 65 characters is longer than 64"),
    (b"[-" + b"9" * 63 + b"]", None, ""),  # 64 characters
    (b'["' + b"9" * 100 + b'"]', None, ""),
    (b'["\\ud800"]', 400, "lone UTF-16 surrogate"),
    (b'["\\ud83d\\ude00"]', None, ""),  # a pair
    (b'["\\\\ud800"]', None, ""),  # an escaped backslash, then text
    (b'["\\ud800', None, ""),  # not JSON: left to the parser
], ids=["plain", "deep", "brackets-in-string", "wide", "long-number", "64-chars",
        "digits-in-string", "lone-surrogate", "pair", "escaped-backslash", "truncated"])
def test_scan_json(body: bytes, status: int | None, text: str) -> None:
    from serving.limits import BodyLimits, LimitExceeded, scan_json

    if status is None:
        scan_json(body, BodyLimits())
        return
    with pytest.raises(LimitExceeded, match=re.escape(text)) as e:
        scan_json(body, BodyLimits())
    assert e.value.status == status


def test_the_scan_is_linear_on_hostile_bodies() -> None:
    """1 MiB of the worst shapes for a scanner (quotes, escapes, brackets, digits) in well
    under a second each: no input makes it quadratic."""
    import time

    from serving.limits import BodyLimits, LimitExceeded, scan_json

    cap = 1 << 20
    for body in (b'"' * cap, b'"\\' * (cap // 2), b'\\"' * (cap // 2), b"[" * cap,
                 b"1," * (cap // 2), b'"\\u00e9",' * (cap // 9), b"9" * cap):
        t0 = time.perf_counter()
        with contextlib.suppress(LimitExceeded):
            scan_json(body, BodyLimits(cap, 32, 10**7))
        assert time.perf_counter() - t0 < 0.5, body[:20]

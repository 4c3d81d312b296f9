"""Malformed Open Inference Protocol requests for `bench.fuzz`, drawn with hypothesis.

Why hypothesis: its strategies reach the edges a hand-written list forgets (empty lists, 2**63,
-0.0, NaN, lone surrogates, deep nesting) and its seeded engine makes a run reproducible
(`cases(strategy, n, seed)` yields the same n cases for the same seed). Only the *recipe* of a
case is drawn; bodies over a few KB (oversized, deep, wide) are built from it when sent, so
5,000 cases stay small in memory.

Everything a client controls is mutated: the JSON tree (fields replaced, deleted, added),
datatypes, shapes (huge, negative, non-integer, many dims), values (huge, negative, floats,
NaN/inf, long digit strings, strings, nested), parameters, outputs, ids, headers and content
type, the body's size and declared length, nesting depth, element count, batch and sequence
limits, duplicated and unknown inputs, truncated and garbage bodies, the binary tensor
extension, and for gRPC the protobuf message itself (every tensor-contents field, raw inputs,
every InferParameter type, garbage and truncated messages, oversized messages).

Never imports kserve: the gRPC side builds tritonclient's protobuf messages, and the two
libraries cannot share a process.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

MODEL, GRAPH = "onerec", "onerec-graph"
VIDEOS = [1000 + 7 * k for k in range(60)]  # the stand-in version's video ids
LENGTHS = {"short": 8, "pos": 8, "long": 16}  # the stand-in graph's input lengths
MAX_BEAM, MAX_TOP_N, MAX_SEQ, MAX_BATCH = 64, 100, 1024, 256  # tiny preset / Limits
V2_TYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
            "FP16", "FP32", "FP64", "BYTES"]


@dataclass
class Body:
    """prefix + unit * count + suffix: big bodies are built only when sent."""

    prefix: bytes = b""
    unit: bytes = b""
    count: int = 0
    suffix: bytes = b""

    def build(self) -> bytes:
        return self.prefix + self.unit * self.count + self.suffix

    def __len__(self) -> int:
        return len(self.prefix) + len(self.unit) * self.count + len(self.suffix)


@dataclass
class RestCase:
    what: str  # the mutation family, for the report
    path: str
    body: Body
    method: str = "POST"
    headers: list[tuple[str, str]] = field(default_factory=list)
    length: str = "honest"  # honest | chunked | short (declares fewer bytes than sent) | none
    expect: tuple[tuple[int, ...], str] | None = None  # (statuses, text in the answer) if known


@dataclass
class GrpcCase:
    what: str
    message: Callable[[], bytes]  # the serialized ModelInferRequest (or garbage)
    expect: str | None = None  # the status code name, where it is known


def cases(strategy: st.SearchStrategy, n: int, seed_: int) -> list:
    """n cases drawn from `strategy`, the same for the same seed (generation phase only: no
    shrinking, no example database)."""
    out: list = []
    k = 0
    while len(out) < n:
        @seed(seed_ * 1000 + k)
        @settings(max_examples=n - len(out), database=None, deadline=None,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @given(strategy)
        def collect(case: Any) -> None:
            if len(out) < n:
                out.append(case)

        collect()
        k += 1
    return out


# -- values a client can put anywhere ------------------------------------------------------------
EDGE_INTS = [0, -1, 1, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1,
             2**64, 10**30, -(10**30)]
ints = st.one_of(st.sampled_from(EDGE_INTS), st.integers(), st.integers(-5, 70))
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([math.nan, math.inf, -math.inf, 1.5, -0.0, 1e308, 5e-324]))


@st.composite
def digit_string(draw: st.DrawFn) -> str:
    return draw(st.sampled_from(["", "-", "--5", "+5", " 8 "])) + "9" * draw(
        st.sampled_from([1, 19, 20, 21, 64, 65, 4300, 4301, 10_000]))


@st.composite
def long_text(draw: st.DrawFn, surrogates: bool = True) -> str:
    """A character repeated up to 100,000 times (a lone surrogate only in JSON: protobuf
    strings must be valid UTF-8)."""
    chars = ["x", "\u00e9", "\x00", "\"", "\\", *(["\ud800"] if surrogates else [])]
    return draw(st.sampled_from(chars)) * draw(st.sampled_from([1, 100, 10_000, 100_000]))


scalars = st.one_of(ints, floats, st.booleans(), st.none(), st.text(max_size=20),
                    digit_string(), long_text())
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
shapes = st.one_of(
    st.lists(st.integers(-3, 300), max_size=4),
    st.lists(st.sampled_from(EDGE_INTS), min_size=1, max_size=3),
    st.sampled_from([[], [0], [1, 0], [0, 5], [2**32, 2**32], [4, 2**62], [1, 2**63 - 1],
                     [1] * 64, [1.5], ["1"], [True], [[1]], [None]]),
    json_values)
datatypes = st.one_of(st.sampled_from(V2_TYPES), st.sampled_from(["int64", "INT128", "", "STR"]),
                      long_text())


def data_values(n: int) -> st.SearchStrategy:
    """What can fill `data` for a tensor of n values."""
    return st.one_of(
        st.lists(ints, min_size=max(0, n - 1), max_size=n + 1),
        st.lists(st.one_of(ints, floats, st.booleans(), st.text(max_size=5), st.none()),
                 min_size=n, max_size=n),
        st.lists(st.lists(ints, max_size=3), max_size=3),  # nested, maybe ragged
        json_values)


# -- REST ----------------------------------------------------------------------------------------
def tensor(name: str, rows: list[list[int]] | list[int]) -> dict:
    flat = [v for r in rows for v in r] if rows and isinstance(rows[0], list) else rows
    shape = [len(rows), len(rows[0])] if rows and isinstance(rows[0], list) else [len(rows)]
    return {"name": name, "shape": shape, "datatype": "INT64", "data": flat}


@st.composite
def valid_model_request(draw: st.DrawFn) -> dict:
    b = draw(st.integers(1, 4))
    users = draw(st.lists(st.integers(0, 10**6), min_size=b, max_size=b))
    inputs = [tensor("user_id", users)]
    for name in draw(st.lists(st.sampled_from(["short_history", "pos_history",
                                               "long_history"]), unique=True, max_size=3)):
        length = draw(st.integers(1, 12))
        inputs.append(tensor(name, [draw(st.lists(st.sampled_from([*VIDEOS, -1, 5]),
                                                  min_size=length, max_size=length))
                                    for _ in range(b)]))
    body: dict[str, Any] = {"inputs": inputs}
    if draw(st.booleans()):
        beam = draw(st.integers(1, MAX_BEAM))
        body["parameters"] = {"beam_width": beam, "top_n": draw(st.integers(1, beam))}
    return body


@st.composite
def valid_graph_request(draw: st.DrawFn) -> dict:
    b = draw(st.integers(1, 3))
    inputs = [tensor("user", draw(st.lists(st.integers(0, 100), min_size=b, max_size=b)))]
    for name, length in LENGTHS.items():
        inputs.append(tensor(name, [draw(st.lists(st.integers(0, 60), min_size=length,
                                                  max_size=length)) for _ in range(b)]))
    return {"inputs": inputs, "parameters": {"beam_width": draw(st.integers(1, MAX_BEAM))}}


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into a JSON tree (dict keys and list indices)."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list) and len(node) <= 20:
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _parent(tree: Any, path: tuple) -> Any:
    for p in path[:-1]:
        tree = tree[p]
    return tree


@st.composite
def mutated(draw: st.DrawFn, base: dict) -> tuple[str, dict]:
    """One to three mutations of a valid request; -> (family, request)."""
    req = json.loads(json.dumps(base))
    names = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["replace", "delete", "add", "datatype", "shape", "data",
                                     "parameters", "inputs", "outputs", "id"]))
        names.append(kind)
        inputs = req.get("inputs") if isinstance(req, dict) else None
        one = (draw(st.sampled_from(inputs)) if isinstance(inputs, list) and inputs
               and all(isinstance(i, dict) for i in inputs) else None)
        if kind in ("replace", "delete"):
            paths = [p for p in _paths(req) if p]
            if not paths:
                continue
            path = draw(st.sampled_from(paths))
            parent = _parent(req, path)
            if kind == "delete":
                del parent[path[-1]]
            else:
                parent[path[-1]] = draw(json_values)
        elif kind == "add" and isinstance(req, dict):
            req[draw(st.sampled_from(["extra", "inputs ", "Inputs", "", "parameters"]))] = draw(
                json_values)
        elif kind == "datatype" and one is not None:
            one["datatype"] = draw(datatypes)
        elif kind == "shape" and one is not None:
            one["shape"] = draw(shapes)
        elif kind == "data" and one is not None:
            n = len(one.get("data", [])) if isinstance(one.get("data"), list) else 1
            one["data"] = draw(data_values(n))
        elif kind == "parameters" and isinstance(req, dict):
            req["parameters"] = draw(st.one_of(
                st.fixed_dictionaries({}, optional={
                    "beam_width": st.one_of(st.sampled_from([0, -1, 1, MAX_BEAM, MAX_BEAM + 1,
                                                             10**6]), scalars),
                    "top_n": st.one_of(st.sampled_from([0, 1, MAX_TOP_N, MAX_TOP_N + 1]),
                                       scalars),
                    "binary_data_output": scalars, "unknown": json_values}),
                json_values))
        elif kind == "inputs" and isinstance(inputs, list) and inputs:
            op = draw(st.sampled_from(["duplicate", "unknown", "drop", "empty", "many"]))
            if op == "duplicate":
                inputs.append(json.loads(json.dumps(draw(st.sampled_from(inputs)))))
            elif op == "unknown":
                inputs.append({"name": draw(st.one_of(st.sampled_from(
                    ["histroy", "user", "user_id ", ""]), long_text())), "shape": [1],
                    "datatype": "INT64", "data": [1]})
            elif op == "drop":
                inputs.pop(draw(st.integers(0, len(inputs) - 1)))
            elif op == "empty":
                inputs.clear()
            else:
                inputs.extend({"name": f"x{i}", "shape": [1], "datatype": "INT64", "data": [i]}
                              for i in range(draw(st.integers(10, 200))))
        elif kind == "outputs" and isinstance(req, dict):
            req["outputs"] = draw(st.one_of(
                st.lists(st.fixed_dictionaries(
                    {"name": st.sampled_from(["video_ids", "scores", "cold_start", "nope",
                                              "items", ""])},
                    optional={"parameters": st.one_of(
                        st.fixed_dictionaries({}, optional={"binary_data": scalars}),
                        json_values)}), max_size=5),
                json_values))
        elif kind == "id" and isinstance(req, dict):
            req["id"] = draw(st.one_of(scalars, long_text()))
    return "+".join(sorted(set(names))), req


def _json(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "application/x+json",
                 "text/plain", "application/octet-stream", "", "application/json;;;",
                 "multipart/form-data; boundary=x", "application/JSON"]


@st.composite
def headers_mutation(draw: st.DrawFn) -> tuple[str, list[tuple[str, str]]]:
    """Mostly the JSON content type; sometimes another, none, or odd extra headers."""
    choice = draw(st.integers(0, 9))
    if choice < 6:
        return "", [("Content-Type", "application/json")]
    if choice < 8:
        ct = draw(st.sampled_from(CONTENT_TYPES))
        return "content-type", [("Content-Type", ct)] if ct else []
    extra = draw(st.sampled_from([
        ("Inference-Header-Content-Length", "3"), ("Inference-Header-Content-Length", "-1"),
        ("Inference-Header-Content-Length", "abc"), ("Inference-Header-Content-Length",
                                                     "9" * 30),
        ("Content-Encoding", "gzip"), ("Expect", "100-continue"), ("X-Junk", "x" * 4000),
        ("Accept", "application/xml")]))
    return "headers", [("Content-Type", "application/json"), extra]


def _padded(units: int, unit: bytes, pre: bytes, post: bytes) -> Body:
    return Body(pre, unit, units, post)


@st.composite
def size_case(draw: st.DrawFn, cap: int) -> RestCase:
    """Bodies at and past serve.max_request_bytes, honest, chunked or declaring fewer bytes."""
    valid = _json({"inputs": [tensor("user_id", [1])]})
    mode = draw(st.sampled_from(["honest", "chunked", "short"]))
    kind = draw(st.sampled_from(["at-limit", "over", "way-over"]))
    expect: tuple[tuple[int, ...], str] = ((413,), "serve.max_request_bytes")
    if kind == "at-limit":  # a valid request padded with spaces to exactly the limit (or +1)
        extra = draw(st.sampled_from([0, 1]))
        body = Body(valid[:-1], b" ", cap - len(valid) + extra, b"}")
        if mode == "short":  # half the JSON declared: a truncated body
            expect = ((400,), "")
        elif not extra:
            expect = ((200,), "video_ids")
    else:
        over = draw(st.integers(1, 4096)) if kind == "over" else draw(st.integers(cap, 3 * cap))
        pre, post = b'{"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT64", ' \
                    b'"data": [1', b']}]}'
        body = _padded((cap + over - len(pre) - len(post)) // 2 + 1, b",1", pre, post)
    if mode == "short" and kind != "at-limit":  # the declared half may be within the limit
        expect = None
    return RestCase(f"size:{kind}:{mode}", f"/v2/models/{MODEL}/infer", body,
                    headers=[("Content-Type", "application/json")], length=mode,
                    expect=expect)


@st.composite
def structure_case(draw: st.DrawFn) -> RestCase:
    """Nesting depth and element counts around and far past the limits; long numbers."""
    kind = draw(st.sampled_from(["deep", "wide", "number", "string"]))
    pre = b'{"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT64", "data": '
    post = b"}]}"
    expect = None
    if kind == "deep":
        d = draw(st.sampled_from([27, 28, 29, 30, 31, 60, 1000, 100_000]))
        opener = draw(st.sampled_from([b"[", b'{"a":']))
        closer = b"]" if opener == b"[" else b"}"
        body = Body(pre + opener * d, b"", 0, b"1" + closer * d + post)
        if d + 3 > 32:  # the prefix nests 3 deep
            expect = ((400,), "serve.max_json_depth=32")
    elif kind == "wide":
        n = draw(st.sampled_from([99_990, 99_994, 99_995, 99_996, 100_000, 150_000, 400_000]))
        body = Body(pre + b"[1", b",1", n - 1, b"]" + post)
        if n > 100_000:
            expect = ((413,), "serve.max_json_elements=100000")
    elif kind == "number":
        n = draw(st.sampled_from([19, 64, 65, 4301, 100_000]))
        lead = draw(st.sampled_from([b"", b"-", b"0.", b"1e"]))
        body = Body(pre + b"[" + lead, b"9", n, b"]" + post)
        if n + len(lead) > 64:
            expect = ((400,), "longer than 64")
    else:
        n = draw(st.sampled_from([10, 100_000, 900_000]))
        body = Body(b'{"id": "', b"a", n, b'", "inputs": [{"name": "user_id", "shape": [1], '
                                             b'"datatype": "INT64", "data": [1]}]}')
    return RestCase(f"structure:{kind}", f"/v2/models/{MODEL}/infer", body,
                    headers=[("Content-Type", "application/json")], expect=expect)


@st.composite
def raw_case(draw: st.DrawFn) -> RestCase:
    """Truncated, garbage, non-object and non-UTF-8 bodies."""
    kind = draw(st.sampled_from(["truncated", "garbage", "text", "empty", "json-value",
                                 "bad-utf8", "bom"]))
    valid = _json(draw(valid_model_request()))
    if kind == "truncated":
        body = valid[:draw(st.integers(0, len(valid) - 1))]
    elif kind == "garbage":
        body = draw(st.binary(max_size=512))
    elif kind == "text":
        body = draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    elif kind == "empty":
        body = b""
    elif kind == "json-value":
        body = _json(draw(json_values))
    elif kind == "bad-utf8":
        body = valid.replace(b'"user_id"', b'"user_\xff\xfeid"')
    else:
        body = b"\xef\xbb\xbf" + valid
    return RestCase(f"raw:{kind}", f"/v2/models/{MODEL}/infer", Body(body),
                    headers=[("Content-Type", "application/json")])


@st.composite
def binary_case(draw: st.DrawFn) -> RestCase:
    """The v2 binary tensor extension: a JSON header, then raw tensors, with mutations."""
    b = draw(st.integers(1, 3))
    users = draw(st.lists(st.integers(-10, 10**6), min_size=b, max_size=b))
    raw = b"".join(u.to_bytes(8, "little", signed=True) for u in users)
    header: dict[str, Any] = {"inputs": [{"name": "user_id", "shape": [b], "datatype": "INT64",
                                          "parameters": {"binary_data_size": len(raw)}}]}
    what = "binary"
    if draw(st.integers(0, 3)) == 0:
        header["inputs"][0]["parameters"]["binary_data_size"] = draw(scalars)
        what = "binary:size"
    elif draw(st.booleans()):
        family, header = draw(mutated(header))
        what = f"binary:{family}"
    head = _json(header)
    tail = draw(st.sampled_from(["exact", "short", "long", "garbage"]))
    if tail == "short":
        raw = raw[:draw(st.integers(0, max(0, len(raw) - 1)))]
    elif tail == "long":
        raw += draw(st.binary(min_size=1, max_size=16))
    elif tail == "garbage":
        raw = draw(st.binary(max_size=64))
    declared = draw(st.one_of(st.just(str(len(head))), st.sampled_from(
        [str(len(head) - 1), str(len(head) + 1), "0", str(len(head) + len(raw) + 5), "-3", "x",
         " 12", "9" * 25])))
    ct = draw(st.sampled_from(["application/octet-stream", "application/json", ""]))
    headers = [("Inference-Header-Content-Length", declared)]
    if ct:
        headers.append(("Content-Type", ct))
    return RestCase(what, f"/v2/models/{draw(st.sampled_from([MODEL, GRAPH]))}/infer",
                    Body(head + raw), headers=headers)


@st.composite
def limits_case(draw: st.DrawFn) -> RestCase:
    """Batch, sequence length, beam and top-N at and just past their limits."""
    kind = draw(st.sampled_from(["batch", "seq", "beam", "top_n"]))
    req: dict[str, Any]
    if kind == "batch":
        b = draw(st.sampled_from([0, 1, MAX_BATCH, MAX_BATCH + 1, 5000]))
        req = {"inputs": [tensor("user_id", list(range(b)))]}
        if draw(st.booleans()) and b:
            req["inputs"].append(tensor("short_history", [[1000]] * b))
    elif kind == "seq":
        length = draw(st.sampled_from([MAX_SEQ, MAX_SEQ + 1, 20_000]))
        req = {"inputs": [tensor("user_id", [1]), tensor(
            draw(st.sampled_from(["short_history", "pos_history", "long_history"])),
            [[VIDEOS[i % 60] for i in range(length)]])]}
    else:
        req = {"inputs": [tensor("user_id", [1])], "parameters": {
            "beam_width": draw(st.sampled_from([1, MAX_BEAM, MAX_BEAM + 1, 2**63 - 1])),
            "top_n": draw(st.sampled_from([1, 5, MAX_TOP_N, MAX_TOP_N + 1, 0]))}}
    return RestCase(f"limits:{kind}", f"/v2/models/{MODEL}/infer", Body(_json(req)),
                    headers=[("Content-Type", "application/json")])


@st.composite
def route_case(draw: st.DrawFn) -> RestCase:
    """Other methods and paths: GET on infer, unknown and odd model names, non-infer POSTs."""
    path = draw(st.sampled_from([
        f"/v2/models/{MODEL}/infer", "/v2/models/nope/infer", "/v2/models//infer",
        "/v2/models/%00/infer", "/v2/models/" + "a" * 3000 + "/infer", f"/v2/models/{MODEL}",
        f"/v2/models/{MODEL}/ready", "/v2/health/live", "/onerec/versions", "/v2/models/%ff/infer",
        f"/v1/models/{MODEL}:predict"]))
    method = draw(st.sampled_from(["POST", "GET", "PUT", "DELETE", "PATCH"]))
    return RestCase(f"route:{method}", path, Body(_json(draw(valid_model_request()))), method,
                    [("Content-Type", "application/json")])


def _family(draw: st.DrawFn) -> int:
    """0..99, uniform (hypothesis' own integers lean to small values and bounds)."""
    return draw(st.randoms(use_true_random=False)).randrange(100)


@st.composite
def rest_case(draw: st.DrawFn, cap: int = 1 << 20) -> RestCase:
    family = _family(draw)
    if family < 45:  # the JSON tree, mutated
        graph = draw(st.integers(0, 4)) == 0
        base = draw(valid_graph_request() if graph else valid_model_request())
        what, req = draw(mutated(base))
        hw, headers = draw(headers_mutation())
        return RestCase(f"json:{what}" + (f":{hw}" if hw else ""),
                        f"/v2/models/{GRAPH if graph else MODEL}/infer", Body(_json(req)),
                        headers=headers)
    if family < 55:
        return draw(raw_case())
    if family < 65:
        return draw(binary_case())
    if family < 75:
        return draw(size_case(cap))
    if family < 85:
        return draw(structure_case())
    if family < 94:
        return draw(limits_case())
    return draw(route_case())


# -- gRPC ----------------------------------------------------------------------------------------
def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _pb() -> Any:
    from tritonclient.grpc import service_pb2

    return service_pb2


CONTENT_FIELDS = ["int64_contents", "int_contents", "uint_contents", "uint64_contents",
                  "fp32_contents", "fp64_contents", "bool_contents", "bytes_contents"]


@st.composite
def grpc_parameter(draw: st.DrawFn) -> tuple[str, Any]:
    """(InferParameter field, value): every oneof type, with edge values; '' = none set."""
    kind = draw(st.sampled_from(["int64_param", "string_param", "bool_param", "double_param",
                                 "uint64_param", ""]))
    value: Any = None
    if kind == "int64_param":
        value = draw(st.one_of(st.sampled_from([0, -1, 1, MAX_BEAM, MAX_BEAM + 1, 2**63 - 1,
                                                -(2**63)]), st.integers(-(2**63), 2**63 - 1)))
    elif kind == "uint64_param":
        value = draw(st.one_of(st.sampled_from([0, 1, 2**63, 2**64 - 1]),
                               st.integers(0, 2**64 - 1)))
    elif kind == "double_param":
        value = draw(floats)
    elif kind == "bool_param":
        value = draw(st.booleans())
    elif kind == "string_param":
        value = draw(st.one_of(digit_string(), st.text(max_size=10).filter(_utf8),
                               long_text(surrogates=False)))
    return kind, value


def _set_param(msg_params: Any, key: str, kind: str, value: Any) -> None:
    p = msg_params[key]
    if kind:
        setattr(p, kind, value)
    else:
        p.SetInParent()


@st.composite
def grpc_tensor(draw: st.DrawFn, name: str, shape: list[int]) -> dict:
    n = math.prod(shape)
    return {"name": name, "datatype": "INT64", "shape": shape,
            "contents": ("int64_contents",
                         draw(st.lists(st.integers(0, 2000), min_size=n, max_size=n)))}


@st.composite
def grpc_spec(draw: st.DrawFn) -> tuple[str, dict]:
    """A valid request spec, then mutations of it. -> (family, spec)."""
    graph = draw(st.integers(0, 4)) == 0
    b = draw(st.integers(1, 3))
    if graph:
        tensors = [draw(grpc_tensor("user", [b]))] + [
            draw(grpc_tensor(k, [b, n])) for k, n in LENGTHS.items()]
        for t in tensors[1:]:
            t["contents"] = ("int64_contents", [v % 61 for v in t["contents"][1]])
        params = {"beam_width": ("int64_param", draw(st.integers(1, MAX_BEAM)))}
    else:
        tensors = [draw(grpc_tensor("user_id", [b]))]
        for name in draw(st.lists(st.sampled_from(["short_history", "pos_history",
                                                   "long_history"]), unique=True, max_size=2)):
            tensors.append(draw(grpc_tensor(name, [b, draw(st.integers(1, 10))])))
        params = {}
    spec: dict[str, Any] = {"model_name": GRAPH if graph else MODEL, "inputs": tensors,
                            "parameters": params, "raw": None, "outputs": [], "id": "",
                            "model_version": ""}
    names = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["datatype", "shape", "contents", "raw", "parameters",
                                     "inputs", "outputs", "model", "id", "limits"]))
        names.append(kind)
        one = draw(st.sampled_from(tensors)) if tensors else None
        if kind == "datatype" and one:
            one["datatype"] = draw(st.one_of(st.sampled_from(V2_TYPES),
                                             st.sampled_from(["int64", "", "STR"]),
                                             long_text(surrogates=False)))
        elif kind == "shape" and one:
            one["shape"] = draw(st.one_of(
                st.lists(st.integers(-3, 300), max_size=4),
                st.lists(st.sampled_from([0, -1, 2**31, 2**62, 2**63 - 1, -(2**63)]),
                         min_size=1, max_size=3),
                st.sampled_from([[2**32, 2**32], [4, 2**62], [1] * 64, []])))
        elif kind == "contents" and one:
            fld = draw(st.sampled_from(CONTENT_FIELDS))
            if fld in ("int64_contents", "int_contents"):
                lo, hi = (-(2**63), 2**63 - 1) if fld == "int64_contents" else (-(2**31),
                                                                                 2**31 - 1)
                vals = draw(st.lists(st.integers(lo, hi), max_size=6))
            elif fld in ("uint_contents", "uint64_contents"):
                vals = draw(st.lists(st.integers(0, 2**32 - 1 if fld == "uint_contents"
                                                 else 2**64 - 1), max_size=6))
            elif fld in ("fp32_contents", "fp64_contents"):
                vals = draw(st.lists(st.floats(width=32 if fld == "fp32_contents" else 64),
                                     max_size=6))
            elif fld == "bool_contents":
                vals = draw(st.lists(st.booleans(), max_size=6))
            else:
                vals = draw(st.lists(st.binary(max_size=8), max_size=6))
            one["contents"] = (fld, vals)
        elif kind == "raw":
            op = draw(st.sampled_from(["exact", "wrong-size", "count", "with-contents"]))
            raws = []
            for t in tensors:
                vals = t["contents"][1] if t["contents"][0] == "int64_contents" else []
                raws.append(b"".join(int(v).to_bytes(8, "little", signed=True) for v in vals))
            if op == "wrong-size" and raws:
                i = draw(st.integers(0, len(raws) - 1))
                raws[i] = raws[i][:-1] + draw(st.binary(max_size=9))
            elif op == "count":
                raws = raws[:-1] if raws and draw(st.booleans()) else [*raws, b"\0" * 8]
            spec["raw"] = raws
            spec["raw_keep_contents"] = op == "with-contents"
        elif kind == "parameters":
            spec["parameters"] = {k: draw(grpc_parameter()) for k in draw(st.lists(
                st.sampled_from(["beam_width", "top_n", "unknown", "binary_data_output", ""]),
                unique=True, max_size=3))}
        elif kind == "inputs":
            op = draw(st.sampled_from(["duplicate", "unknown", "drop", "empty"]))
            if op == "duplicate" and tensors:
                tensors.append(dict(draw(st.sampled_from(tensors))))
            elif op == "unknown":
                tensors.append({"name": draw(st.one_of(st.sampled_from(["histroy", "", "user"]),
                                                       long_text(surrogates=False))),
                                "datatype": "INT64", "shape": [1],
                                "contents": ("int64_contents", [1])})
            elif op == "drop" and tensors:
                tensors.pop(draw(st.integers(0, len(tensors) - 1)))
            else:
                tensors.clear()
        elif kind == "outputs":
            spec["outputs"] = draw(st.lists(st.tuples(
                st.sampled_from(["video_ids", "scores", "nope", "", "items"]),
                st.booleans()), max_size=4))
        elif kind == "model":
            spec["model_name"] = draw(st.sampled_from([MODEL, GRAPH, "", "nope", "x" * 5000]))
            spec["model_version"] = draw(st.sampled_from(["", "", "1", "99", "\x00"]))
        elif kind == "id":
            spec["id"] = draw(long_text(surrogates=False))
        elif kind == "limits":
            what = draw(st.sampled_from(["batch", "seq"]))
            if what == "batch":
                n = draw(st.sampled_from([0, MAX_BATCH, MAX_BATCH + 1, 3000]))
                tensors[:] = [{"name": "user_id", "datatype": "INT64", "shape": [n],
                               "contents": ("int64_contents", list(range(n)))}]
            else:
                n = draw(st.sampled_from([MAX_SEQ, MAX_SEQ + 1, 10_000]))
                tensors[:] = [{"name": "user_id", "datatype": "INT64", "shape": [1],
                               "contents": ("int64_contents", [1])},
                              {"name": "long_history", "datatype": "INT64", "shape": [1, n],
                               "contents": ("int64_contents", [1000] * n)}]
            spec["model_name"] = MODEL
    return "+".join(sorted(set(names))), spec


def grpc_message(spec: dict) -> bytes:
    """A spec -> serialized ModelInferRequest."""
    pb = _pb()
    req = pb.ModelInferRequest(model_name=spec["model_name"], id=spec["id"],
                               model_version=spec["model_version"])
    for t in spec["inputs"]:
        inp = req.inputs.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        if spec["raw"] is None or spec.get("raw_keep_contents"):
            fld, vals = t["contents"]
            getattr(inp.contents, fld).extend(vals)
    for key, (kind, value) in spec["parameters"].items():
        _set_param(req.parameters, key, kind, value)
    for name, binary in spec["outputs"]:
        out = req.outputs.add(name=name)
        if binary:
            out.parameters["binary_data"].bool_param = True
    if spec["raw"] is not None:
        req.raw_input_contents.extend(spec["raw"])
    return req.SerializeToString()


@st.composite
def grpc_case(draw: st.DrawFn, cap: int = 1 << 20) -> GrpcCase:
    family = _family(draw)
    if family < 80:
        what, spec = draw(grpc_spec())
        return GrpcCase(f"proto:{what}", lambda: grpc_message(spec))
    if family < 92:  # bytes that may not be a ModelInferRequest at all
        kind = draw(st.sampled_from(["truncated", "garbage", "flipped"]))
        _, spec = draw(grpc_spec())
        msg = grpc_message(spec)
        if kind == "truncated":
            cut = draw(st.integers(0, max(0, len(msg) - 1)))
            return GrpcCase("bytes:truncated", lambda: msg[:cut])
        if kind == "garbage":
            junk = draw(st.binary(max_size=256))
            return GrpcCase("bytes:garbage", lambda: junk)
        i, x = draw(st.integers(0, max(0, len(msg) - 1))), draw(st.integers(1, 255))
        return GrpcCase("bytes:flipped", lambda: msg[:i] + bytes([msg[i] ^ x]) + msg[i + 1:]
                        if msg else b"")
    over = draw(st.sampled_from([-1024, 1, 4096, cap]))  # -1024: just under the limit

    def big() -> bytes:
        pb = _pb()
        req = pb.ModelInferRequest(model_name=MODEL)
        n = (cap + over) // 8
        req.inputs.add(name="user_id", datatype="INT64", shape=[n])
        req.raw_input_contents.append(b"\x01" * (8 * n))
        return req.SerializeToString()

    return GrpcCase(f"size:{'under' if over < 0 else 'over'}", big,
                    None if over < 0 else "RESOURCE_EXHAUSTED")

"""Fuzz the serving stack: malformed Open Inference Protocol requests against a real server.

    PYTHONPATH=. python -m bench.fuzz --requests 5000 [--protocol rest|grpc|both] [--seed 0]

Starts `onerec serve` (tiny preset, the stand-in graph of tests/serving_util.py, no Feast) on
free loopback ports, sends one valid request, then `--requests` malformed ones per protocol
(drawn by `bench.fuzz_cases` with hypothesis, reproducible with `--seed`), then the valid
request again. REST goes over raw sockets, so headers, declared lengths and chunking are the
fuzzer's to choose; gRPC over a grpc channel with identity (de)serializers, so the message
bytes are too (garbage and truncated protobuf included).

A request fails the run when the server answers it with a 5xx (gRPC: INTERNAL, UNKNOWN,
DATA_LOSS, UNAVAILABLE, DEADLINE_EXCEEDED, UNIMPLEMENTED), drops the connection, answers a 4xx
without a message, or, for cases whose answer is known (a body past a limit), answers another
status. The run also fails when the valid request's answer changes or the server dies. Prints
a table of answers by status per protocol (then as Markdown, for docs/results.md) and the
first failures; exits 1 on any failure. Never imports kserve (tritonclient.grpc and kserve
cannot share a process): the server is a subprocess.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from bench.fuzz_cases import GrpcCase, RestCase, cases, grpc_case, rest_case

ROOT = Path(__file__).resolve().parents[1]
SERVER_CODES = {"INTERNAL", "UNKNOWN", "DATA_LOSS", "UNAVAILABLE", "DEADLINE_EXCEEDED",
                "UNIMPLEMENTED"}
VALID = {"inputs": [
    {"name": "user_id", "shape": [3], "datatype": "INT64", "data": [1, 2, 9003]},
    {"name": "short_history", "shape": [3, 2], "datatype": "INT64",
     "data": [1001, 1000, -1, 5, -1, -1]}],
    "parameters": {"beam_width": 16, "top_n": 6}}


@dataclass
class Outcome:
    status: str  # "200", "413", "INVALID_ARGUMENT", "dropped", ...
    message: str  # the error text ("" for none)
    body: bytes = b""


# -- REST over a raw socket ----------------------------------------------------------------------
def _request_bytes(case: RestCase, body: bytes) -> bytes:
    lines = [f"{case.method} {case.path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
             *(f"{k}: {v}" for k, v in case.headers)]
    if case.length == "honest":
        lines.append(f"Content-Length: {len(body)}")
    elif case.length == "short":
        lines.append(f"Content-Length: {len(body) // 2}")
    elif case.length == "chunked":
        lines.append("Transfer-Encoding: chunked")
        step = 64 * 1024
        body = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + step]), body[i:i + step])
                        for i in range(0, len(body), step)) + b"0\r\n\r\n"
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _parse_response(raw: bytes) -> tuple[str, bytes] | None:
    head, sep, rest = raw.partition(b"\r\n\r\n")
    while sep and head.startswith(b"HTTP/1.1 1"):  # interim (100 Continue): the answer follows
        head, sep, rest = rest.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1."):
        return None
    lines = head.split(b"\r\n")
    status = lines[0].split(b" ")[1].decode()
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(b":")
                                                            for ln in lines[1:])}
    if headers.get(b"transfer-encoding") == b"chunked":
        body, i = b"", 0
        while True:
            j = rest.find(b"\r\n", i)
            if j < 0:
                return None
            size = int(rest[i:j].split(b";")[0], 16)
            if size == 0:
                break
            body += rest[j + 2:j + 2 + size]
            i = j + 4 + size
        return status, body
    n = int(headers.get(b"content-length", len(rest)))
    return (status, rest[:n]) if len(rest) >= n else None


def send_rest(addr: tuple[str, int], case: RestCase, timeout_s: float) -> Outcome:
    """One request on its own connection. The body is sent from a thread while the answer is
    read, so a server that refuses early (413 before the body is in) is heard, not deadlocked."""
    data = _request_bytes(case, case.body.build())
    sock = socket.create_connection(addr, timeout=timeout_s)

    def push() -> None:
        # the server may answer and close before taking everything: the answer is still read
        with suppress(OSError):
            sock.sendall(data)

    sender = threading.Thread(target=push, daemon=True)
    sender.start()
    raw, error = b"", ""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            raw += chunk
    except OSError as e:
        error = f"{type(e).__name__}: {e}"
    finally:
        sock.close()
        sender.join(timeout=timeout_s)
    parsed = _parse_response(raw)
    if parsed is None:
        return Outcome("dropped", error or f"no complete HTTP answer ({len(raw)} bytes)")
    status, body = parsed
    return Outcome(status, rest_message(body), body)


def rest_message(body: bytes) -> str:
    """The error text of an answer: the v2 {"error": ...}, FastAPI's {"detail": ...}, or the
    plain text of a protocol-level refusal."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()
    if isinstance(doc, dict):
        for key in ("error", "detail"):
            if isinstance(doc.get(key), str) and doc[key].strip():
                return doc[key]
    return ""


# -- gRPC ----------------------------------------------------------------------------------------
class GrpcSender:
    """ModelInfer with raw bytes in and out (identity serializers)."""

    def __init__(self, target: str) -> None:
        import grpc

        self.grpc = grpc
        self.channel = grpc.insecure_channel(target, options=[
            ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)])
        self.infer = self.channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")

    def send(self, message: bytes, timeout_s: float) -> Outcome:
        try:
            return Outcome("OK", "", self.infer(message, timeout=timeout_s))
        except self.grpc.RpcError as e:
            return Outcome(e.code().name, e.details() or "")

    def close(self) -> None:
        self.channel.close()


def valid_grpc_message() -> bytes:
    from tritonclient.grpc import service_pb2 as pb

    req = pb.ModelInferRequest(model_name="onerec")
    for inp in VALID["inputs"]:
        t = req.inputs.add(name=inp["name"], datatype="INT64", shape=inp["shape"])
        t.contents.int64_contents.extend(inp["data"])
    for k, v in VALID["parameters"].items():
        req.parameters[k].int64_param = v
    return req.SerializeToString()


def same_grpc_answer(a: bytes, b: bytes) -> bool:
    from tritonclient.grpc import service_pb2 as pb

    return pb.ModelInferResponse.FromString(a) == pb.ModelInferResponse.FromString(b)


# -- checks --------------------------------------------------------------------------------------
def failure(protocol: str, case: RestCase | GrpcCase, out: Outcome) -> str | None:
    """Why this answer fails the run, or None."""
    if protocol == "rest":
        if out.status == "dropped":
            return f"dropped connection ({out.message})"
        code = int(out.status)
        if code >= 500:
            return f"HTTP {code}: {out.message[:200]}"
        if 400 <= code < 500 and not out.message:
            return f"HTTP {code} without a message"
        if case.expect is not None:
            statuses, text = case.expect
            if code not in statuses or text not in out.message + out.body.decode("utf-8",
                                                                                 "replace"):
                return f"HTTP {code} ({out.message[:120]}), expected {statuses} with {text!r}"
        return None
    if out.status in SERVER_CODES:
        return f"{out.status}: {out.message[:200]}"
    if out.status != "OK" and not out.message:
        return f"{out.status} without a message"
    if case.expect is not None and out.status != case.expect:
        return f"{out.status} ({out.message[:120]}), expected {case.expect}"
    return None


def family(what: str) -> str:
    """A case's family for the by-case table: its first two name parts, several mutations
    of one request counted together."""
    parts = what.split(":")
    second = parts[1] if len(parts) > 1 else ""
    return f"{parts[0]}:{'several' if '+' in second else second}".rstrip(":")


@dataclass
class Report:
    counts: Counter  # (protocol, status) -> requests
    by_case: Counter  # (protocol, case family, status) -> requests
    failures: list  # (protocol, what, why)
    seconds: dict  # protocol -> seconds sending
    valid_same: dict  # protocol -> bool


def run(http: str, grpc_target: str, protocols: list[str], n: int, seed: int,
        timeout_s: float, console: Console, cap: int) -> Report:
    host, port = http.rsplit(":", 1)
    addr = (host, int(port))
    valid = RestCase("valid", "/v2/models/onerec/infer", _body(json.dumps(VALID).encode()),
                     headers=[("Content-Type", "application/json")])
    counts: Counter = Counter()
    by_case: Counter = Counter()
    failures: list = []
    seconds: dict = {}
    same: dict = {}
    grpc = GrpcSender(grpc_target) if "grpc" in protocols else None
    try:
        before = {"rest": send_rest(addr, valid, timeout_s)} if "rest" in protocols else {}
        if grpc is not None:
            before["grpc"] = grpc.send(valid_grpc_message(), timeout_s)
        for p, out in before.items():
            if out.status not in ("200", "OK"):
                raise SystemExit(f"{p}: the valid request failed before fuzzing: "
                                 f"{out.status} {out.message}")
        with console.status("drawing cases with hypothesis"):
            drawn = {p: cases(rest_case(cap) if p == "rest" else grpc_case(cap), n, seed)
                     for p in protocols}
        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
            for p in protocols:
                task = bar.add_task(f"{p:4s}", total=n)
                t0 = time.perf_counter()
                for case in drawn[p]:
                    out = (send_rest(addr, case, timeout_s) if p == "rest"
                           else grpc.send(case.message(), timeout_s))
                    counts[(p, out.status)] += 1
                    by_case[(p, family(case.what), out.status)] += 1
                    why = failure(p, case, out)
                    if why:
                        failures.append((p, case.what, why))
                    bar.advance(task)
                seconds[p] = time.perf_counter() - t0
        if "rest" in protocols:
            after = send_rest(addr, valid, timeout_s)
            same["rest"] = after.status == "200" and after.body == before["rest"].body
        if grpc is not None:
            after = grpc.send(valid_grpc_message(), timeout_s)
            same["grpc"] = after.status == "OK" and same_grpc_answer(after.body,
                                                                     before["grpc"].body)
    finally:
        if grpc is not None:
            grpc.close()
    return Report(counts, by_case, failures, seconds, same)


def _body(data: bytes) -> Any:
    from bench.fuzz_cases import Body

    return Body(data)


def print_by_case(console: Console, report: Report) -> None:
    """Answers per case family (the first two parts of its name)."""
    statuses = sorted({s for _, _, s in report.by_case})
    table = Table(title="answers by case family")
    table.add_column("protocol")
    table.add_column("case")
    for s in statuses:
        table.add_column(s, justify="right")
    for proto, what in sorted({(p, w) for p, w, _ in report.by_case}):
        table.add_row(proto, what, *(str(report.by_case.get((proto, what, s), "")) or ""
                                     for s in statuses))
    console.print(table)


def print_report(console: Console, report: Report, protocols: list[str], n: int) -> None:
    table = Table(title=f"bench.fuzz: answers to {n} malformed requests per protocol")
    for c in ("protocol", "status", "requests", "share"):
        table.add_column(c, justify="left" if c in ("protocol", "status") else "right")
    rows = []
    for p in protocols:
        for (proto, status), k in sorted(report.counts.items(), key=lambda kv: (kv[0][0],
                                                                               kv[0][1])):
            if proto == p:
                rows.append((p, status, str(k), f"{k / n:.1%}"))
    for r in rows:
        table.add_row(*r)
    console.print(table)
    for p in protocols:
        bad = sum(1 for f in report.failures if f[0] == p)
        console.print(f"{p}: {n} requests in {report.seconds.get(p, 0):.1f} s, {bad} failing; "
                      f"valid answer unchanged: {report.valid_same.get(p)}")
    print("| protocol | status | requests | share |")
    print("|---|---|---:|---:|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    if report.failures:
        grouped = Counter((p, what.split(":")[0], why[:160]) for p, what, why in report.failures)
        fails = Table(title=f"failures: {len(report.failures)} ({len(grouped)} kinds)")
        for c in ("protocol", "case", "why", "requests"):
            fails.add_column(c, overflow="fold")
        for (proto, what, why), k in grouped.most_common(30):
            fails.add_row(proto, what, why, str(k))
        console.print(fails)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=1000, help="malformed requests per protocol")
    p.add_argument("--protocol", choices=["rest", "grpc", "both"], default="both")
    p.add_argument("--seed", type=int, default=0, help="hypothesis seed (same seed, same cases)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    p.add_argument("--keep", action="store_true", help="keep the server's folder and log")
    p.add_argument("--by-case", action="store_true", help="also print answers per case family")
    p.add_argument("--http", default=None, help="fuzz this running server's REST host:port "
                                                "instead of starting one (its version: "
                                                "tests.serving_util.standin_server's)")
    p.add_argument("--grpc", default=None, help="... and its gRPC host:port")
    args = p.parse_args(argv)
    console = Console()
    protocols = ["rest", "grpc"] if args.protocol == "both" else [args.protocol]
    sys.path.insert(0, str(ROOT))
    from tests.serving_util import standin_server

    cap = 1 << 20  # serve.max_request_bytes of the tiny preset (the default)
    root = Path(tempfile.mkdtemp(prefix="onerec-fuzz-"))
    with ExitStack() as stack:
        if args.http or args.grpc:  # a server already running (tiny preset, stand-in version)
            srv = {"http": args.http, "grpc": args.grpc, "proc": None}
        else:
            with console.status("starting onerec serve"):
                srv = stack.enter_context(standin_server(root))
            console.print(f"onerec serve on {srv['http']} (REST), {srv['grpc']} (gRPC); "
                          f"log {srv['log']}")
        report = run(srv["http"], srv["grpc"], protocols, args.requests, args.seed,
                     args.timeout, console, cap)
        alive = srv["proc"] is None or srv["proc"].poll() is None
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    if args.by_case:
        print_by_case(console, report)
    print_report(console, report, protocols, args.requests)
    ok = not report.failures and all(report.valid_same.values()) and alive
    if not alive:
        console.print("[red]the server died during the run[/red]")
    console.print("[green]no server errors[/green]" if ok else "[red]FAILED[/red]")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

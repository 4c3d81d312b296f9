"""Request limits enforced before a body is parsed: size, JSON nesting depth, JSON values.

kserve hands a REST body to FastAPI, which reads all of it and runs `json.loads` on it before
any model code sees the request: a 1 GB body is buffered whole, 100,000 nested brackets hit
Python's recursion limit (an opaque 400 "error parsing the body" at best), and a million tiny
values become a million Python objects plus pydantic's copies. `RequestLimits`, an ASGI
middleware on kserve's FastAPI app, refuses such bodies first:

- a `Content-Length` above `serve.max_request_bytes` -> HTTP 413 at once, without reading the
  body; a body without a Content-Length (chunked) or longer than it claims is counted as it
  streams in and refused the moment it passes the limit;
- the JSON part (the whole body, or the `Inference-Header-Content-Length` bytes of a binary
  request) is scanned outside strings, in C-speed passes over bytes (`scan_json`, linear
  whatever the input; ~10 ms for 1 MiB of ids, faster than the parse it protects): nesting deeper than
  `serve.max_json_depth` -> 400, more values than `serve.max_json_elements` -> 413, a number
  token longer than `MAX_NUMBER_CHARS` -> 400 (no INT64 or FP64 needs more, and Python's int()
  refuses strings over 4,300 digits with an exception), a string escaping a lone UTF-16
  surrogate (`"\\ud800"`) -> 400 (Python's json accepts it; echoing it in a message fails);
- a POST to an infer route that is neither JSON nor a binary-extension request -> 415.

Every refusal is `{"error": "..."}` naming the limit's config key and value, as the v2
protocol's errors are. gRPC gets the size limit as the server's max receive message length
(`grpc_receive_limit`): grpc refuses a larger message with RESOURCE_EXHAUSTED before kserve
decodes it, and protobuf has no nesting to bound.
"""

from __future__ import annotations

import email.message
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import numpy as np

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# longest JSON number token accepted: INT64 needs 20 characters, a round-tripped FP64 24
MAX_NUMBER_CHARS = 64
BINARY_HEADER = "inference-header-content-length"  # v2 binary tensor extension
# bytes.translate tables: number characters -> "9", else " " (a long number is then a run of
# "9"s that bytes.find spots in one pass; a regex retried at every digit was 10x slower); and
# brackets -> +1 / -1 (as int8), else 0, for the running depth
_NUMBER_CHARS = bytes(ord("9") if c in b"-+0123456789.eE" else ord(" ") for c in range(256))
_DEPTH_STEP = bytes(1 if c in b"[{" else 255 if c in b"]}" else 0 for c in range(256))
# a \\u escape of a UTF-16 surrogate (paired or not): only bodies holding one are decoded
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


@dataclass(frozen=True)
class BodyLimits:
    """The limits of `serve.*` that apply before parsing (see onerec.config.ServeConfig)."""

    max_request_bytes: int = 1 << 20
    max_json_depth: int = 32
    max_json_elements: int = 100_000

    @classmethod
    def from_config(cls, serve: Any) -> BodyLimits:
        return cls(serve.max_request_bytes, serve.max_json_depth, serve.max_json_elements)


class _Disconnected(Exception):
    """The client went away before its body was complete: nothing to answer."""


class LimitExceeded(Exception):
    """A body breaks a limit; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def scan_json(buf: bytes, limits: BodyLimits) -> None:
    """Raise LimitExceeded if the JSON text `buf` nests too deep, holds too many values or a
    too-long number. Cheap: one regex pass blanks the strings, then counts over bytes; it does
    not validate the JSON (the parser does that once the body is known to be small)."""
    bare = blank_strings(buf)
    run = bare.translate(_NUMBER_CHARS).find(b"9" * (MAX_NUMBER_CHARS + 1))
    if run >= 0:
        n = len(bare[run:]) - len(bare[run:].lstrip(b"-+0123456789.eE"))
        raise LimitExceeded(400, f"request body: a JSON number of {n} characters is longer "
                                 f"than {MAX_NUMBER_CHARS} (no INT64 or FP64 needs more)")
    opens = bare.count(b"[") + bare.count(b"{")
    if opens > limits.max_json_depth:  # else it cannot nest deeper than the limit
        steps = np.frombuffer(bare.translate(_DEPTH_STEP), dtype=np.int8)
        depth = int(steps[steps != 0].cumsum(dtype=np.int32).max(initial=0))
        if depth > limits.max_json_depth:
            raise LimitExceeded(400, f"request body: JSON nested {depth} deep exceeds the limit "
                                     f"serve.max_json_depth={limits.max_json_depth}")
    values = bare.count(b",") + opens + 1
    if values > limits.max_json_elements:
        raise LimitExceeded(413, f"request body: about {values} JSON values exceed the limit "
                                 f"serve.max_json_elements={limits.max_json_elements}")
    if _SURROGATE_ESCAPE.search(buf):
        _check_surrogates(buf)


def blank_strings(buf: bytes) -> bytes:
    """The JSON text with every string's content removed (`"..."` -> `""`), in C-speed passes:
    drop escaped backslashes, then escaped quotes; every quote left delimits a string, so the
    pieces between them alternate outside / inside. An unterminated string runs to the end."""
    parts = buf.replace(b"\\\\", b"").replace(b'\\"', b"").split(b'"')
    return b'""'.join(parts[0::2])


def _check_surrogates(buf: bytes) -> None:
    """No string may decode to a lone UTF-16 surrogate: Python's json accepts `"\\ud800"`,
    and every message or log line that echoes the string then fails to encode (HTTP 500).
    Runs only on a body holding a surrogate escape, after the size, depth and value limits,
    so the parse it costs is one the server would make anyway."""
    try:
        doc = json.loads(buf)
    except (ValueError, RecursionError):
        return  # not JSON: the parser says so, with its position
    try:
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise LimitExceeded(400, "request body: a JSON string holds a lone UTF-16 surrogate "
                                 "escape (such as \\ud800); strings must be valid "
                                 "Unicode") from None


def is_json(content_type: str | None) -> bool:
    """FastAPI's test for a JSON body: application/json or application/*+json."""
    if not content_type:
        return False
    m = email.message.Message()
    m["content-type"] = content_type
    sub = m.get_content_subtype()
    return m.get_content_maintype() == "application" and (sub == "json" or sub.endswith("+json"))


def json_part(body: bytes, headers: dict[str, str]) -> bytes | None:
    """The bytes kserve will parse as JSON: the binary extension's header, else a JSON body,
    else None (kserve refuses the body without parsing it)."""
    if BINARY_HEADER in headers:
        raw = headers[BINARY_HEADER].strip()
        if not raw.isdigit() or len(raw) > 19:
            raise LimitExceeded(400, f"header Inference-Header-Content-Length: expected a byte "
                                     f"count, got {headers[BINARY_HEADER][:40]!r}")
        n = int(raw)
        if n > len(body):
            raise LimitExceeded(400, f"header Inference-Header-Content-Length: {n} exceeds "
                                     f"the body's {len(body)} bytes")
        return body[:n]
    return body if is_json(headers.get("content-type")) else None


def check_content_type(path: str, headers: dict[str, str]) -> None:
    """An infer POST must be JSON or a binary-extension request (else kserve answers with a
    message about a missing header that does not say what was wrong)."""
    if not path.endswith("/infer") or BINARY_HEADER in headers or is_json(
            headers.get("content-type")):
        return
    got = headers.get("content-type")
    raise LimitExceeded(415, f"header Content-Type: {got[:60]!r} is not JSON; send "
                             f"'application/json', or binary tensors with the "
                             f"Inference-Header-Content-Length header" if got else
                        "header Content-Type: missing; send 'application/json', or binary "
                        "tensors with the Inference-Header-Content-Length header")


class RequestLimits:
    """ASGI middleware: refuse oversized, too deep or too wide bodies before the app reads
    them (see the module docstring). Bodies within the limits are replayed to the app whole."""

    def __init__(self, app: ASGIApp, limits: BodyLimits) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", ())}
        try:
            body = await self._read(headers, receive)
            check_content_type(scope.get("path", ""), headers)
            part = json_part(body, headers)
            if part is not None:
                scan_json(part, self.limits)
        except LimitExceeded as e:
            await self._refuse(send, e)
            return
        except _Disconnected:
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read(self, headers: dict[str, str], receive: Receive) -> bytes:
        """The whole body, refusing it as soon as its size is known to pass the limit."""
        cap = self.limits.max_request_bytes
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise LimitExceeded(400, f"header Content-Length: expected a byte count, got "
                                         f"{declared[:40]!r}")
            if int(declared) > cap:
                raise LimitExceeded(413, f"request body: Content-Length {int(declared)} "
                                         f"exceeds the limit serve.max_request_bytes={cap}")
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise _Disconnected
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > cap:
                raise LimitExceeded(413, f"request body: more than {cap} bytes exceed the "
                                         f"limit serve.max_request_bytes={cap}")
            chunks.append(chunk)
            if not msg.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    async def _refuse(send: Send, e: LimitExceeded) -> None:
        body = json.dumps({"error": str(e)}).encode()
        await send({"type": "http.response.start", "status": e.status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def install(app: Any, limits: BodyLimits) -> None:
    """Add RequestLimits to kserve's FastAPI app (before the server starts)."""
    app.add_middleware(RequestLimits, limits=limits)


def grpc_receive_limit(limits: BodyLimits) -> int:
    """The gRPC server's max receive message length for these limits."""
    return limits.max_request_bytes

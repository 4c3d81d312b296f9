"""Decoding Open Inference Protocol v2 inputs without trusting them.

KServe hands a model the request as sent: a JSON list that does not fit its declared shape, a
float where INT64 was declared, or a raw buffer of the wrong size would otherwise surface as a
numpy error (HTTP 500) or, worse, be silently truncated to integers. Everything here raises
`RequestError` naming the input instead, which the models turn into HTTP 400 / gRPC
INVALID_ARGUMENT. The same code reads REST (JSON or binary) and gRPC (contents or raw).
"""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np
from kserve import InferRequest
from kserve.protocol.infer_type import to_http_parameters

from serving.schema import RequestError, check_tensor, clip

INT64_MAX = 2**63 - 1


def request_parameters(payload: InferRequest) -> dict[str, Any]:
    """Request parameters as plain Python values (REST dict or gRPC InferParameter map)."""
    params = payload.parameters
    return to_http_parameters(params) if params else {}


def binary_outputs(payload: InferRequest) -> bool:
    """Binary REST outputs when the request asked for them. gRPC always gets raw outputs from
    numpy data, and kserve 0.21's to_grpc fails on numpy data with the flag set."""
    return bool(payload.use_binary_outputs) and not payload.from_grpc


def check_names(payload: InferRequest, allowed: tuple[str, ...]) -> None:
    seen: set[str] = set()
    for inp in payload.inputs:
        if inp.name not in allowed:
            raise RequestError(f"input {clip(inp.name)}: unknown input (known: "
                               f"{', '.join(allowed)})")
        if inp.name in seen:
            raise RequestError(f"input {inp.name}: given twice")
        seen.add(inp.name)


def shape_of(name: str, shape: Any) -> list[int]:
    """The declared shape as Python ints (REST: pydantic ints; gRPC: int64), or RequestError."""
    try:
        dims = [operator.index(d) for d in shape]
    except TypeError:
        raise RequestError(f"input {name}: shape must be a list of integers, got "
                           f"{clip(shape)}") from None
    return dims


def input_array(payload: InferRequest, name: str, *, ndim: int, batch: int | None = None,
                required: bool = True) -> np.ndarray | None:
    """One INT64 input as a numpy array of its declared shape, or RequestError."""
    inp = payload.get_input_by_name(name)
    if inp is None:
        if required:
            raise RequestError(f"input {name}: missing (required)")
        return None
    shape = shape_of(name, inp.shape)
    check_tensor(name, inp.datatype, shape, ndim, batch)
    n = math.prod(shape)  # Python ints: exact, where np.prod would wrap past 2**63
    if inp._raw_data is None:
        data = inp.data
        if hasattr(data, "int64_contents"):  # gRPC InferTensorContents
            data = list(data.int64_contents)
        try:
            raw = np.asarray(data if data is not None else [])
        except (ValueError, TypeError, OverflowError):  # ragged nested lists, odd objects
            raise RequestError(f"input {name}: data is not a rectangular array") from None
        if raw.size != n:
            raise RequestError(f"input {name}: {raw.size} values do not fill shape {shape}")
        if raw.size and raw.dtype.kind not in "iu":
            raise RequestError(f"input {name}: values must be integers (datatype INT64)")
        if raw.size and raw.dtype.kind == "u" and raw.max() > INT64_MAX:
            raise RequestError(f"input {name}: value {int(raw.max())} is out of the INT64 "
                               f"range")
        return raw.astype(np.int64).reshape(shape)
    buf = inp._raw_data
    if len(buf) != n * 8:
        raise RequestError(f"input {name}: {len(buf)} raw bytes do not fill shape {shape} of "
                           f"INT64 ({n * 8} bytes)")
    return np.frombuffer(buf, dtype=np.int64).reshape(shape).copy()

"""The request/response schema of the `onerec` model, and the checks that enforce its limits.

Kept free of kserve and tritonclient so the server, the client and the docs share one list of
names (the two libraries cannot live in one process: duplicate protobuf symbols).

Request (Open Inference Protocol v2, model `onerec`):
- `user_id` INT64 [B]: required.
- `short_history`, `pos_history`, `long_history` INT64 [B, L]: optional video ids, oldest first
  (most recent last); a negative value is padding, so rows of different lengths fit one tensor.
  L may be at most `serve.max_request_seq_len`; longer histories than the model reads keep the
  most recent items.
- request parameters `beam_width` (1..serve.max_beam_width, default serve.beam_width) and
  `top_n` (1..min(serve.max_top_n, beam_width), default serve.top_n).

Response:
- `video_ids` INT64 [B, N]: recommended video ids, best first, -1 where there are fewer than N;
- `scores` FP32 [B, N]: the generator's log-probability (0 for padding and cold-start rows);
- `cold_start` BOOL [B]: true when the user had no usable history (no Feast row, none in the
  request, or every id unknown) and the row holds the cold-start table instead;
- `unknown_ids` INT64 [B]: history video ids the model does not know, dropped from the context;
- `features_unavailable` BOOL [B]: true when the user had no history in the request and the
  Feast online store could not be read (locked, missing, unreadable: `serving.online`), so the
  row was answered without the user's online features (the cold-start table);
- response parameters `model_version`, `beam_width`, `top_n`.

Every violation raises `RequestError` whose message names the input and the limit; the server
turns it into HTTP 400 / gRPC INVALID_ARGUMENT.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

USER = "user_id"
HISTORIES = ("short_history", "pos_history", "long_history")  # the model's three pathways
INPUTS = (USER, *HISTORIES)
VIDEO_IDS, SCORES, COLD_START, UNKNOWN = "video_ids", "scores", "cold_start", "unknown_ids"
FEATURES_UNAVAILABLE = "features_unavailable"
OUTPUTS = (VIDEO_IDS, SCORES, COLD_START, UNKNOWN, FEATURES_UNAVAILABLE)
PARAMETERS = ("beam_width", "top_n")
PADDING = -1  # padding in request histories and in `video_ids`

# The exported graph (one version folder's model.onnx): item indices, 0 = padding / none.
GRAPH_INPUTS = ("user", "short", "pos", "long")
GRAPH_OUTPUTS = ("items", "scores")


# no dimension of a request tensor may pass this (the batch and length limits are far below;
# it keeps shape products exact and small before they are compared with the data)
MAX_DIM = 2**31 - 1


class RequestError(ValueError):
    """A request breaks the schema or a limit; the message names the input and the limit."""


@dataclass(frozen=True)
class Limits:
    """Per-request limits and defaults, from Config.serve."""

    beam_width: int = 32
    max_beam_width: int = 512
    top_n: int = 10
    max_top_n: int = 100
    max_request_seq_len: int = 1024
    max_batch: int = 256  # users per request (not in Config: a guard against runaway requests)

    @classmethod
    def from_config(cls, serve: Any) -> Limits:
        return cls(beam_width=serve.beam_width, max_beam_width=serve.max_beam_width,
                   top_n=serve.top_n, max_top_n=serve.max_top_n,
                   max_request_seq_len=serve.max_request_seq_len)


@dataclass
class Request:
    """A checked request: arrays in numpy, parameters resolved against the limits."""

    user_id: np.ndarray  # (B,) int64
    histories: dict[str, np.ndarray]  # name -> (B, L) int64, only those given
    beam_width: int
    top_n: int


def clip(value: Any, limit: int = 60) -> str:
    """A client-sent value for an error message, cut to `limit` characters."""
    text = value if isinstance(value, str) else repr(value)
    text = text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")  # no lone surrogates


def check_tensor(name: str, datatype: str, shape: list[int], ndim: int,
                 batch: int | None = None) -> None:
    """Dtype and rank of one input (before its data is touched)."""
    if datatype != "INT64":
        raise RequestError(f"input {name}: datatype must be INT64, got {clip(datatype)}")
    if len(shape) != ndim:
        want = "[B]" if ndim == 1 else "[B, L]"
        raise RequestError(f"input {name}: shape must be {want}, got {clip(list(shape))}")
    if any(int(d) < 0 for d in shape):
        raise RequestError(f"input {name}: negative dimension in shape {list(shape)}")
    if any(int(d) > MAX_DIM for d in shape):
        raise RequestError(f"input {name}: dimension in shape {list(shape)} exceeds {MAX_DIM}")
    if batch is not None and int(shape[0]) != batch:
        raise RequestError(f"input {name}: first dimension must equal the batch of {USER} "
                           f"({batch}), got {shape[0]}")


def _int_param(params: Mapping[str, Any], name: str, default: int, low: int, high: int,
               limit_name: str) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        text = value.strip() if isinstance(value, str) else ""
        if re.fullmatch(r"-?[0-9]{1,20}", text):  # no int() of 5,000 digits or of "--5"
            value = int(text)
        else:
            raise RequestError(f"parameter {name}: must be an integer, got {clip(value)}")
    value = int(value)
    if value < low:
        raise RequestError(f"parameter {name}: must be >= {low}, got {value}")
    if value > high:
        raise RequestError(f"parameter {name}: {value} exceeds the limit {limit_name}={high}")
    return value


def check_parameters(params: Mapping[str, Any], limits: Limits) -> tuple[int, int]:
    """-> (beam_width, top_n) from request parameters, defaults from the limits."""
    beam = _int_param(params, "beam_width", limits.beam_width, 1, limits.max_beam_width,
                      "serve.max_beam_width")
    top_n = _int_param(params, "top_n", min(limits.top_n, beam), 1, limits.max_top_n,
                       "serve.max_top_n")
    if top_n > beam:
        raise RequestError(f"parameter top_n: {top_n} exceeds beam_width={beam} (a beam of W "
                           f"yields at most W videos)")
    return beam, top_n


def check_arrays(user_id: np.ndarray, histories: Mapping[str, np.ndarray],
                 limits: Limits) -> None:
    """Batch and sequence-length limits on decoded arrays."""
    if len(user_id) == 0:
        raise RequestError(f"input {USER}: empty batch")
    if len(user_id) > limits.max_batch:
        raise RequestError(f"input {USER}: batch of {len(user_id)} exceeds the limit "
                           f"max_batch={limits.max_batch}")
    for name, arr in histories.items():
        if arr.shape[1] > limits.max_request_seq_len:
            raise RequestError(f"input {name}: length {arr.shape[1]} exceeds the limit "
                               f"serve.max_request_seq_len={limits.max_request_seq_len}")

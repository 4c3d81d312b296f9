"""A `tritonclient` client for the `onerec` model, over HTTP or gRPC (what `onerec recommend`
and the serving benchmark use).

Never imports kserve: tritonclient.grpc and kserve register the same protobuf symbols and
cannot share a process. Requests carry histories as INT64 tensors, right-aligned and padded
with -1 (the schema in `serving.schema`). Over HTTP the default is JSON (with the
`Content-Type: application/json` header KServe's REST server wants for JSON bodies);
`binary=True` sends tensors as binary extensions, cheaper for long histories.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.schema import (
    COLD_START,
    FEATURES_UNAVAILABLE,
    HISTORIES,
    PADDING,
    SCORES,
    UNKNOWN,
    USER,
    VIDEO_IDS,
)


@dataclass
class Recommendation:
    user_id: int
    video_ids: list[int]  # best first (padding removed)
    scores: list[float]
    cold_start: bool
    unknown_ids: int
    features_unavailable: bool = False  # Feast could not be read for this user (see schema)


@dataclass
class Result:
    rows: list[Recommendation]
    model_version: int | None
    beam_width: int | None
    top_n: int | None


def pad_histories(rows: list[list[int]]) -> np.ndarray:
    """Video-id lists (oldest first) -> (B, L) INT64, left-padded with -1."""
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), max(width, 1)), PADDING, dtype=np.int64)
    for i, r in enumerate(rows):
        if r:
            out[i, out.shape[1] - len(r):] = r
    return out


class RecommendClient:
    """recommend(user_ids, histories) against a running server; protocol 'http' or 'grpc'.

    url: host:port without scheme (tritonclient's convention), e.g. 127.0.0.1:8080 for HTTP,
    127.0.0.1:8081 for gRPC.
    """

    def __init__(self, url: str, protocol: str = "http", model: str = "onerec", *,
                 binary: bool = False, timeout_s: float = 60.0) -> None:
        if protocol not in ("http", "grpc"):
            raise ValueError(f"protocol must be http or grpc, got {protocol!r}")
        self.protocol, self.model, self.binary = protocol, model, binary
        self.timeout_s = timeout_s  # per request: HTTP network timeout, gRPC deadline
        self.url = url.split("://", 1)[-1]
        if protocol == "http":
            import tritonclient.http as tc

            self.client: Any = tc.InferenceServerClient(
                self.url, connection_timeout=timeout_s, network_timeout=timeout_s)
        else:
            import tritonclient.grpc as tc

            self.client = tc.InferenceServerClient(self.url)
        self.tc = tc

    # -- health -------------------------------------------------------------------------------
    def live(self) -> bool:
        return bool(self.client.is_server_live())

    def ready(self) -> bool:
        return bool(self.client.is_model_ready(self.model))

    def reload(self) -> None:
        """Explicit hot swap: load the newest acceptable version (raises if it was refused)."""
        self.client.load_model(self.model)

    def close(self) -> None:
        self.client.close()

    # -- inference ----------------------------------------------------------------------------
    def _input(self, name: str, arr: np.ndarray) -> Any:
        inp = self.tc.InferInput(name, list(arr.shape), "INT64")
        if self.protocol == "http":
            inp.set_data_from_numpy(arr, binary_data=self.binary)
        else:
            inp.set_data_from_numpy(arr)
        return inp

    def infer_raw(self, user_ids: list[int], histories: dict[str, list[list[int]]] | None = None,
                  *, beam_width: int | None = None, top_n: int | None = None) -> Any:
        """The tritonclient result object (as_numpy(name), get_response())."""
        inputs = [self._input(USER, np.asarray(user_ids, dtype=np.int64))]
        for name, rows in (histories or {}).items():
            inputs.append(self._input(name, pad_histories(rows)))
        params = {k: v for k, v in (("beam_width", beam_width), ("top_n", top_n))
                  if v is not None}
        kwargs: dict[str, Any] = {"parameters": params or None}
        if self.protocol == "http":
            kwargs["outputs"] = [self.tc.InferRequestedOutput(n, binary_data=self.binary)
                                 for n in (VIDEO_IDS, SCORES, COLD_START, UNKNOWN,
                                           FEATURES_UNAVAILABLE)]
            if not self.binary:
                kwargs["headers"] = {"Content-Type": "application/json"}
        else:
            kwargs["client_timeout"] = self.timeout_s
        return self.client.infer(self.model, inputs, **kwargs)

    def parameters(self, result: Any) -> dict[str, Any]:
        if self.protocol == "http":
            return dict(result.get_response().get("parameters") or {})
        out = {}
        for k, p in result.get_response().parameters.items():
            out[k] = getattr(p, p.WhichOneof("parameter_choice"))
        return out

    def recommend(self, user_ids: list[int], histories: dict[str, list[list[int]]] | None = None,
                  *, beam_width: int | None = None, top_n: int | None = None) -> Result:
        unknown = set(histories or {}) - set(HISTORIES)
        if unknown:
            raise ValueError(f"unknown history {sorted(unknown)}; use {list(HISTORIES)}")
        res = self.infer_raw(user_ids, histories, beam_width=beam_width, top_n=top_n)
        vids, scores = res.as_numpy(VIDEO_IDS), res.as_numpy(SCORES)
        cold, unk = res.as_numpy(COLD_START), res.as_numpy(UNKNOWN)
        no_features = res.as_numpy(FEATURES_UNAVAILABLE)  # None from a server without it
        rows = []
        for i, u in enumerate(user_ids):
            keep = vids[i] >= 0
            rows.append(Recommendation(int(u), vids[i][keep].tolist(),
                                       [float(s) for s in scores[i][keep]], bool(cold[i]),
                                       int(unk[i]),
                                       bool(no_features[i]) if no_features is not None
                                       else False))
        p = self.parameters(res)

        def get(k: str) -> int | None:
            return int(p[k]) if k in p else None

        return Result(rows, get("model_version"), get("beam_width"), get("top_n"))

"""The transformer: user id in, video ids out (KServe's transformer pattern).

`preprocess` turns a request (schema in `serving.schema`) into the graph's inputs:
1. checks every input and parameter against the limits (HTTP 400 / gRPC INVALID_ARGUMENT
   naming the input and the limit);
2. per user: the histories in the request if it carries any for that user, else the user's
   three sequences from the Feast online store (`online_user_context`) when a feature repo is
   configured, else nothing. The store is read through `serving.online.OnlineFeatures`: when
   it is locked, missing or unreadable, those users get no online features (hence the
   cold-start table) and `features_unavailable` true, never an error;
3. maps video ids to the active version's item indices; unknown ids are dropped and counted
   (`unknown_ids` output, `onerec_unknown_video_ids_total` metric), the most recent ones kept,
   left-padded to the exported lengths;
4. a user left with no known video is a cold start: no generation, the cold-start table
   instead, `cold_start` true.

`predict` runs the graph on the other rows: in-process on the same version snapshot (local
mode, one ModelServer), or over v2 on a remote predictor (`--predictor_host`, the cluster:
Triton). `postprocess` maps item indices back to video ids, lets a reranker reorder each beam,
cuts to top-N and fills the cold-start rows. The reranker (`reranker_for`): the command line's
(`--rm_selection PATH` or `--reranker module:fn`) when given, else the version's own (RM
selection with the reward model it carries, the behaviour model's winner: the default), else
the generator's beam order (`keep_order`).

One request uses one `Predictor` snapshot from start to end, so a hot swap between its steps
cannot mix one version's item table with another's graph, nor its beam with another version's
reward model.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from kserve import InferInput, InferOutput, InferRequest, InferResponse, Model
from kserve.errors import InvalidInput, ModelNotReady

from serving import metrics
from serving.online import OnlineFeatures
from serving.runtime import Predictor
from serving.schema import (
    COLD_START,
    FEATURES_UNAVAILABLE,
    GRAPH_INPUTS,
    HISTORIES,
    INPUTS,
    PADDING,
    SCORES,
    UNKNOWN,
    USER,
    VIDEO_IDS,
    Limits,
    RequestError,
    check_arrays,
    check_parameters,
)
from serving.v2 import binary_outputs, check_names, input_array, request_parameters
from serving.versions import VersionManager

# (user_ids (B,), video_ids (B, W), scores (B, W)) -> (video_ids, scores) reordered per row
Reranker = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def keep_order(user_ids: np.ndarray, video_ids: np.ndarray,
               scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The default reranker: the generator's beam order."""
    return video_ids, scores


def describe(reranker: Any) -> str:
    """A reranker in words (the swap log line, /onerec/versions)."""
    if reranker is None or reranker is keep_order:
        return "beam order"
    if type(reranker).__str__ is not object.__str__:  # RMSelection says which reward model
        return str(reranker)
    return f"{getattr(reranker, '__module__', '?')}:{getattr(reranker, '__qualname__', reranker)}"


def load_reranker(spec: str | None) -> Reranker:
    """`package.module:function` -> that callable; None -> keep_order."""
    if not spec:
        return keep_order
    mod, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"--reranker: expected module:function, got {spec!r}")
    return getattr(importlib.import_module(mod), attr)


@dataclass
class Prepared:
    """preprocess -> predict: the checked request and the graph inputs of its warm rows."""

    request: InferRequest
    pred: Predictor  # the version snapshot this request uses throughout
    user_id: np.ndarray  # (B,)
    beam_width: int
    top_n: int
    cold: np.ndarray  # (B,) bool
    unknown: np.ndarray  # (B,) int64
    graph: dict[str, np.ndarray]  # graph inputs of the rows with ~cold
    no_features: np.ndarray  # (B,) bool: to be read from Feast, which could not answer


@dataclass
class Generated:
    prepared: Prepared
    items: np.ndarray  # (warm rows, W) item indices, 0 = none
    scores: np.ndarray  # (warm rows, W)
    beam_width: int  # the width that ran (a remote predictor runs its own graph's)


def compact(indices: np.ndarray, width: int) -> np.ndarray:
    """(B, L) item indices with holes (0) -> (B, width): the last `width` known items of each
    row in order, left-padded with 0."""
    out = np.zeros((indices.shape[0], width), dtype=np.int64)
    for i, row in enumerate(indices):
        kept = row[row > 0][-width:] if width > 0 else row[:0]
        if len(kept):
            out[i, width - len(kept):] = kept
    return out


def pad_lists(rows: list[list[int]]) -> np.ndarray:
    """Video-id lists (oldest first) -> (B, L) left-padded with PADDING."""
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width), PADDING, dtype=np.int64)
    for i, r in enumerate(rows):
        if r:
            out[i, width - len(r):] = r
    return out


class OneRecTransformer(Model):
    """`<name>`: the public recommendation model (see the module docstring)."""

    def __init__(self, name: str, manager: VersionManager, limits: Limits, *,
                 feature_repo: Path | None = None, cold_start: np.ndarray | None = None,
                 reranker: Reranker | None = None, graph_name: str | None = None,
                 feast_timeout_s: float = 1.0, feast_retry_s: float = 2.0) -> None:
        super().__init__(name)
        self.manager = manager
        self.limits = limits
        self.feature_repo = feature_repo
        self.cold_start_override = cold_start
        self.reranker = reranker  # the command line's; None: each version's own (or beam order)
        self.graph_name = graph_name or name  # the predictor's model name (remote mode)
        self.feast_timeout_s, self.feast_retry_s = feast_timeout_s, feast_retry_s
        self.online: OnlineFeatures | None = None
        self.ready = False

    @property
    def store(self) -> Any:
        """The Feast store read online (None: no feature repo)."""
        return self.online.store if self.online is not None else None

    @store.setter
    def store(self, store: Any) -> None:
        if self.online is not None:
            self.online.close()
        self.online = None if store is None else OnlineFeatures(
            store, timeout_s=self.feast_timeout_s, retry_s=self.feast_retry_s)

    # -- lifecycle ----------------------------------------------------------------------------
    def open_features(self) -> None:
        """Open the Feast store if one is configured (the server does it on the main thread
        before starting: importing feast while other threads compile code trips a CPython
        3.11 AST bug)."""
        if self.feature_repo is not None and self.store is None:
            from onerec.features.store import open_store

            self.store = open_store(self.feature_repo, check=False)
            assert self.online is not None  # nosec B101 # type narrowing: set by the setter
            self.online.warm_up()  # a store that cannot answer yet is an outage, not an error

    def load(self) -> bool:
        """Ready once the Feast store (if configured) is open and a model version is active."""
        self.open_features()
        self.ready = self.manager.current is not None
        return self.ready

    @property
    def remote(self) -> bool:
        cfg = self.predictor_config
        return bool(cfg is not None and cfg.predictor_host)

    def get_input_types(self) -> list[dict]:
        return [{"name": USER, "datatype": "INT64", "shape": [-1]}] + [
            {"name": n, "datatype": "INT64", "shape": [-1, -1]} for n in HISTORIES]

    def get_output_types(self) -> list[dict]:
        return [{"name": VIDEO_IDS, "datatype": "INT64", "shape": [-1, -1]},
                {"name": SCORES, "datatype": "FP32", "shape": [-1, -1]},
                {"name": COLD_START, "datatype": "BOOL", "shape": [-1]},
                {"name": UNKNOWN, "datatype": "INT64", "shape": [-1]},
                {"name": FEATURES_UNAVAILABLE, "datatype": "BOOL", "shape": [-1]}]

    def reranker_for(self, pred: Predictor) -> Reranker:
        """The command line's reranker, else the version's own (RM selection), else beam
        order: `pred` is the request's snapshot, so the reward model is its version's."""
        return self.reranker or pred.reranker or keep_order

    def validate(self, payload: Any) -> Any:
        return payload  # checked in preprocess

    # -- preprocess ---------------------------------------------------------------------------
    def _decode(self, payload: InferRequest) -> tuple[np.ndarray, dict[str, np.ndarray], int,
                                                       int]:
        check_names(payload, INPUTS)
        beam, top_n = check_parameters(request_parameters(payload), self.limits)
        user = input_array(payload, USER, ndim=1)
        hist = {n: a for n in HISTORIES
                if (a := input_array(payload, n, ndim=2, batch=len(user), required=False))
                is not None}
        check_arrays(user, hist, self.limits)
        return user, hist, beam, top_n

    async def _feast_rows(self, users: list[int]) -> tuple[dict[int, tuple[list[int], ...]],
                                                          bool]:
        """-> (rows by user, whether the store answered); no store configured: ({}, True)."""
        if self.online is None or not users:
            return {}, True
        return await self.online.fetch(users)

    async def preprocess(self, payload: InferRequest,
                         headers: dict[str, str] | None = None) -> Prepared:
        if not isinstance(payload, InferRequest):
            raise InvalidInput("expected an Open Inference Protocol v2 request "
                               "(POST /v2/models/<name>/infer)")
        try:
            user, hist, beam, top_n = self._decode(payload)
            pred = self.manager.current
            if pred is None:
                raise ModelNotReady(self.name, "no model version loaded yet")
            pred.graph_for(beam)
        except RequestError as e:
            raise InvalidInput(str(e)) from None
        b = len(user)
        given = np.zeros(b, dtype=bool)
        for a in hist.values():
            given |= (a >= 0).any(axis=1)
        feast, answered = await self._feast_rows([int(u) for u in user[~given]])
        no_features = ~given & (not answered)
        unknown = np.zeros(b, dtype=np.int64)
        # the graph's user input is a feature bucket; Triton (remote mode) does not fold ids
        graph: dict[str, np.ndarray] = {"user": user % max(1, pred.manifest.n_user_buckets)}
        for k, name in enumerate(HISTORIES):
            req = hist.get(name)
            rows = [[] for _ in range(b)]
            for i in range(b):
                if given[i]:
                    rows[i] = [] if req is None else req[i][req[i] >= 0].tolist()
                else:
                    rows[i] = feast.get(int(user[i]), ([], [], []))[k]
            idx, unk = pred.to_indices(pad_lists(rows))
            unknown += unk
            gname = GRAPH_INPUTS[k + 1]
            width = pred.lengths.get(gname) or max(1, idx.shape[1])
            graph[gname] = compact(idx, width)
        cold = ~np.any([(graph[n] > 0).any(axis=1) for n in GRAPH_INPUTS[1:]], axis=0)
        metrics.UNKNOWN_IDS.inc(int(unknown.sum()))
        metrics.COLD_START.inc(int(cold.sum()))
        warm = {n: np.ascontiguousarray(a[~cold]) for n, a in graph.items()}
        return Prepared(payload, pred, user, beam, top_n, cold, unknown, warm, no_features)

    # -- predict ------------------------------------------------------------------------------
    async def predict(self, payload: Prepared, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> Generated:
        p = payload
        n_warm = len(p.graph["user"])
        if n_warm == 0:
            empty = np.zeros((0, p.beam_width))
            return Generated(p, empty.astype(np.int64), empty.astype(np.float32), p.beam_width)
        if self.remote:
            items, scores = await self._remote(p, headers)
            return Generated(p, items, scores, min(p.beam_width, items.shape[1]))
        else:
            loop = asyncio.get_running_loop()
            items, scores = await loop.run_in_executor(
                None, p.pred.predict, p.graph["user"], p.graph["short"], p.graph["pos"],
                p.graph["long"], p.beam_width)
        return Generated(p, items, scores, p.beam_width)

    async def _remote(self, p: Prepared,
                      headers: dict[str, str] | None) -> tuple[np.ndarray, np.ndarray]:
        """The cluster path: the graph on a v2 predictor (Triton), over REST or gRPC. (Which
        exported width Triton runs is its model's; `beam_width` goes along as a parameter.)"""
        # Triton's config declares `user` as dims [1] reshaped to [] under max_batch_size, so
        # it takes [B, 1]; the local graph model accepts [B] and [B, 1] alike
        arrays = {**p.graph, "user": p.graph["user"].reshape(-1, 1)}
        inputs = [InferInput(n, list(arrays[n].shape), "INT64") for n in GRAPH_INPUTS]
        for inp in inputs:
            inp.set_data_from_numpy(arrays[inp.name], binary_data=False)
        req = InferRequest(model_name=self.graph_name, infer_inputs=inputs,
                           request_id=p.request.id, parameters={"beam_width": p.beam_width})
        cfg = self.predictor_config
        if cfg.protocol == "grpc-v2":
            res = await self._grpc_client.infer(infer_request=req)
        else:
            res = await self._http_client.infer(cfg.predictor_base_url, data=req,
                                                model_name=self.graph_name,
                                                headers={"Content-Type": "application/json"})
        out = {o.name: o.as_numpy() for o in res.outputs}
        # Every version this transformer accepts carries the pinned codebook fingerprint, hence
        # the same item table, so a predictor on another version (a canary) maps consistently.
        return out["items"].astype(np.int64), out["scores"].astype(np.float32)

    # -- postprocess --------------------------------------------------------------------------
    async def postprocess(self, result: Generated, headers: dict[str, str] | None = None,
                          response_headers: dict[str, str] | None = None) -> InferResponse:
        p = result.prepared
        b, n = len(p.user_id), p.top_n
        video = np.full((b, n), PADDING, dtype=np.int64)
        score = np.zeros((b, n), dtype=np.float32)
        warm = np.flatnonzero(~p.cold)
        if len(warm):
            vids = p.pred.to_videos(result.items)
            sc = np.where(vids >= 0, result.scores, 0.0).astype(np.float32)
            rerank = self.reranker_for(p.pred)
            if getattr(rerank, "wants_contexts", False):  # RM selection
                vids, sc = rerank(p.user_id[warm], vids, sc, contexts=p.graph)
            else:
                vids, sc = rerank(p.user_id[warm], vids, sc)
            k = min(n, vids.shape[1])
            video[warm, :k], score[warm, :k] = vids[:, :k], sc[:, :k]
        table = self.cold_start_override if self.cold_start_override is not None \
            else p.pred.cold_start
        if p.cold.any() and table is not None:
            k = min(n, len(table))
            video[np.ix_(p.cold, np.arange(k))] = table[:k]
        outputs = [InferOutput(VIDEO_IDS, [b, n], "INT64", data=video),
                   InferOutput(SCORES, [b, n], "FP32", data=score),
                   InferOutput(COLD_START, [b], "BOOL", data=p.cold.copy()),
                   InferOutput(UNKNOWN, [b], "INT64", data=p.unknown),
                   InferOutput(FEATURES_UNAVAILABLE, [b], "BOOL", data=p.no_features.copy())]
        params = {"model_version": p.pred.version, "beam_width": result.beam_width, "top_n": n}
        return InferResponse(response_id=p.request.id or "", model_name=self.name,
                             infer_outputs=outputs, model_version=str(p.pred.version),
                             parameters=params,
                             use_binary_outputs=binary_outputs(p.request),
                             requested_outputs=p.request.request_outputs)

"""The predictor: the exported generation graph behind Open Inference Protocol v2 (REST, gRPC).

What Triton serves in the cluster, served here by the KServe Python ModelServer with ONNX
Runtime (CPU; CUDA when the build has it), so the laptop and the cluster speak the same
protocol. Inputs are the graph's (`user`, `short`, `pos`, `long`: INT64 item indices, 0 =
padding, left-padded to the exported lengths) plus the request parameter `beam_width`; outputs
`items` INT64 [B, W] and `scores` FP32 [B, W].

Following the KServe custom-predictor samples: `load()` sets `ready`; `predict` takes a v2
`InferRequest` and returns an `InferResponse`. Generation runs in the event loop's executor so
health checks and other requests are answered while a batch runs (ONNX Runtime releases the
GIL). The active version comes from a shared `VersionManager` (hot swap, `serving.versions`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.errors import InvalidInput, ModelNotReady

from serving.schema import GRAPH_INPUTS, RequestError, check_parameters
from serving.v2 import binary_outputs, input_array, request_parameters
from serving.versions import VersionManager


class GraphPredictor(Model):
    """`<name>`: raw generation over item indices from the active model version."""

    def __init__(self, name: str, manager: VersionManager, limits: Any) -> None:
        super().__init__(name)
        self.manager = manager
        self.limits = limits
        self.ready = False

    def load(self) -> bool:
        """Load the newest acceptable version (never blocks on a load already running)."""
        self.manager.refresh(blocking=False)
        self.ready = self.manager.current is not None
        return self.ready

    def get_input_types(self) -> list[dict]:
        p = self.manager.current
        lengths = p.lengths if p is not None else {}
        return [{"name": "user", "datatype": "INT64", "shape": [-1]}] + [
            {"name": n, "datatype": "INT64", "shape": [-1, lengths.get(n) or -1]}
            for n in GRAPH_INPUTS[1:]]

    def get_output_types(self) -> list[dict]:
        return [{"name": "items", "datatype": "INT64", "shape": [-1, -1]},
                {"name": "scores", "datatype": "FP32", "shape": [-1, -1]}]

    async def predict(self, payload: InferRequest, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> InferResponse:
        pred = self.manager.current
        if pred is None:
            raise ModelNotReady(self.name, "no model version loaded yet")
        try:
            beam, _ = check_parameters({**request_parameters(payload), "top_n": 1}, self.limits)
            got = payload.get_input_by_name("user")
            if got is not None and len(got.shape) == 2 and int(got.shape[1]) == 1:
                user = input_array(payload, "user", ndim=2).reshape(-1)  # Triton's [B, 1]
            else:
                user = input_array(payload, "user", ndim=1)
            feeds = {"user": user}
            for name in GRAPH_INPUTS[1:]:
                arr = input_array(payload, name, ndim=2, batch=len(user))
                want = pred.lengths.get(name)
                if want is not None and arr.shape[1] != want:
                    raise RequestError(f"input {name}: length must be {want} (the exported "
                                       f"graph's), got {arr.shape[1]}")
                if arr.size and (arr.min() < 0 or arr.max() > pred.n_items):
                    raise RequestError(f"input {name}: item indices must be in 0..{pred.n_items}")
                feeds[name] = arr
            pred.graph_for(beam)
        except RequestError as e:
            raise InvalidInput(str(e)) from None
        loop = asyncio.get_running_loop()
        items, scores = await loop.run_in_executor(
            None, pred.predict, feeds["user"], feeds["short"], feeds["pos"], feeds["long"], beam)
        outputs = [InferOutput("items", list(items.shape), "INT64", data=items),
                   InferOutput("scores", list(scores.shape), "FP32", data=scores)]
        return InferResponse(response_id=payload.id or "", model_name=self.name,
                             infer_outputs=outputs, model_version=str(pred.version),
                             parameters={"model_version": pred.version, "beam_width": beam},
                             use_binary_outputs=binary_outputs(payload))


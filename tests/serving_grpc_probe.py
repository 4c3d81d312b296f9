"""Run gRPC checks against a server in a process that never imports kserve, print JSON.

    python -m tests.serving_grpc_probe HOST:PORT '<json list of bad requests>'

tritonclient.grpc and kserve register the same protobuf symbols, so the gRPC client cannot
live in the pytest process (which imports kserve for the in-process tests).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

from serving.client import RecommendClient


def main(url: str, bad: list[dict]) -> dict:
    c = RecommendClient(url, "grpc")
    out: dict = {"live": c.live(), "ready": c.ready()}
    r = c.recommend([1, 2, 9003], {"short_history": [[1001, 1000], [5], []]}, beam_width=16,
                    top_n=6)
    out["rows"] = [vars(row) for row in r.rows]
    out["params"] = {"model_version": r.model_version, "beam_width": r.beam_width,
                     "top_n": r.top_n}
    errors = []
    for case in bad:
        inputs = []
        for name, (dtype, arr) in case["inputs"].items():
            a = np.asarray(arr, dtype={"INT64": np.int64, "FP32": np.float32}[dtype])
            inp = tc.InferInput(name, list(a.shape), dtype)
            inp.set_data_from_numpy(a)
            inputs.append(inp)
        try:
            c.client.infer("onerec", inputs, parameters=case.get("parameters"))
            errors.append({"status": "OK", "message": ""})
        except InferenceServerException as e:
            errors.append({"status": str(e.status()), "message": e.message()})
    out["errors"] = errors
    try:
        c.reload()
        out["reload"] = "ok"
    except InferenceServerException as e:
        out["reload"] = f"{e.status()}: {e.message()}"
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], json.loads(sys.argv[2]))))

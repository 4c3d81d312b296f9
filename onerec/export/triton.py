"""Triton `config.pbtxt` for the exported generation graph: ONNX Runtime and TensorRT.

Two backends read the same version folder contract (`onerec.export.artifact`):
- `onnxruntime_onnx` (CPU or GPU): serves `<version>/model.onnx` as exported;
- `tensorrt_plan` (GPU): serves `<version>/model.plan`, an FP16 engine built from the same
  ONNX file by `onerec.export.tensorrt` (precision is baked into the engine at build time).

Both use dynamic batching: requests of single users are merged into one graph call of up to
`max_batch_size` users (the graph's batch axis is its only dynamic one). Triton's dims leave
out the batch axis; `user` is [B] in the graph, so it is declared as dims [1] reshaped to [].
The text is generated, not templated, and `parse_config` checks it against Triton's own
ModelConfig protobuf (from tritonclient) in the tests.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

_TYPES = {"int64": "TYPE_INT64", "int32": "TYPE_INT32", "float32": "TYPE_FP32",
          "float16": "TYPE_FP16"}


def _tensor(spec: dict[str, Any]) -> str:
    shape = spec["shape"]
    if not shape or shape[0] != "batch":
        raise ValueError(f"{spec['name']}: the first axis must be the dynamic 'batch' axis")
    dims = [int(d) for d in shape[1:]]
    body = [f'name: "{spec["name"]}"', f"data_type: {_TYPES[spec['dtype']]}"]
    if dims:
        body.append(f"dims: [ {', '.join(map(str, dims))} ]")
    else:  # a per-user scalar: Triton wants at least one dim
        body += ["dims: [ 1 ]", "reshape: { shape: [ ] }"]
    return "  {\n    " + "\n    ".join(body) + "\n  }"


def _config(name: str, platform: str, filename: str, inputs: list[dict[str, Any]],
            outputs: list[dict[str, Any]], *, max_batch_size: int, kind: str,
            instances: int, queue_delay_us: int, comment: str) -> str:
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    return "\n".join([
        f"# {comment}",
        f'name: "{name}"',
        f'platform: "{platform}"',
        f'default_model_filename: "{filename}"',
        f"max_batch_size: {max_batch_size}",
        "version_policy: { latest: { num_versions: 1 } }",
        "input [\n" + ",\n".join(_tensor(s) for s in inputs) + "\n]",
        "output [\n" + ",\n".join(_tensor(s) for s in outputs) + "\n]",
        f"dynamic_batching {{ max_queue_delay_microseconds: {queue_delay_us} }}",
        f"instance_group [ {{ kind: {kind} count: {instances} }} ]",
        "",
    ])


def onnxruntime_config(name: str, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]],
                       *, max_batch_size: int = 64, gpu: bool = False, instances: int = 1,
                       queue_delay_us: int = 2000) -> str:
    """config.pbtxt for the ONNX Runtime backend serving `<version>/model.onnx`."""
    return _config(name, "onnxruntime_onnx", "model.onnx", inputs, outputs,
                   max_batch_size=max_batch_size, kind="KIND_GPU" if gpu else "KIND_CPU",
                   instances=instances, queue_delay_us=queue_delay_us,
                   comment="OneRec generation (encoder + beam search), ONNX Runtime backend")


def tensorrt_config(name: str, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]],
                    *, max_batch_size: int = 64, instances: int = 1,
                    queue_delay_us: int = 1000) -> str:
    """config.pbtxt for a TensorRT FP16 engine `<version>/model.plan` (GPU)."""
    return _config(name, "tensorrt_plan", "model.plan", inputs, outputs,
                   max_batch_size=max_batch_size, kind="KIND_GPU", instances=instances,
                   queue_delay_us=queue_delay_us,
                   comment="OneRec generation (encoder + beam search), TensorRT FP16 engine")


def _model_config_pb2() -> Any:
    """tritonclient's model_config_pb2 module, loaded without `tritonclient.grpc/__init__`.

    That package init also registers Triton's gRPC service protos, whose `inference.*` names
    collide with kserve's in protobuf's default pool; ModelConfig alone does not, so the module
    file is loaded on its own and this works in a process that has imported kserve too.
    """
    name = "tritonclient.grpc.model_config_pb2"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("parse_config needs tritonclient[grpc] (the `serving` extra)")
    path = Path(next(iter(spec.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    mspec = importlib.util.spec_from_file_location(name, path)
    if mspec is None or mspec.loader is None:
        raise ImportError(f"tritonclient has no {path}")
    module = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(module)
    sys.modules[name] = module
    return module


def parse_config(text: str):  # -> tritonclient.grpc.model_config_pb2.ModelConfig
    """Parse config.pbtxt text with Triton's ModelConfig schema (needs tritonclient[grpc])."""
    from google.protobuf import text_format

    return text_format.Parse(text, _model_config_pb2().ModelConfig())

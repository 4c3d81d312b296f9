"""Export: the whole generation as one ONNX graph, Triton model versions, TensorRT engines.

- `onnx`: `export_onnx` (encoder + unrolled beam search -> one graph), ONNX Runtime helpers;
- `artifact`: the model version folder that serving loads (`export_version`, `load_manifest`);
- `triton`: config.pbtxt for the ONNX Runtime and TensorRT backends;
- `tensorrt`: FP16 engine builder (TensorRT Python API, or the `trtexec` command line).
"""

from onerec.export.artifact import (
    ArtifactError,
    FingerprintMismatch,
    Manifest,
    export_version,
    load_manifest,
    load_trained,
)
from onerec.export.onnx import GRAPH_INPUTS, GRAPH_OUTPUTS, export_onnx, ort_session, run_onnx

__all__ = ["GRAPH_INPUTS", "GRAPH_OUTPUTS", "ArtifactError", "FingerprintMismatch", "Manifest",
           "export_onnx", "export_version", "load_manifest", "load_trained", "ort_session",
           "run_onnx"]

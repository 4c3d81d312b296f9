"""Triton model configs (ONNX Runtime on CPU, TensorRT on GPU) parse as ModelConfig."""

from __future__ import annotations

import pytest

from onerec.export.triton import onnxruntime_config, parse_config, tensorrt_config

SPECS = [{"name": "user", "dtype": "int64", "shape": ["batch"]},
         {"name": "short", "dtype": "int64", "shape": ["batch", 50]},
         {"name": "pos", "dtype": "int64", "shape": ["batch", 50]},
         {"name": "long", "dtype": "int64", "shape": ["batch", 256]}]


OUTS = [{"name": "items", "dtype": "int64", "shape": ["batch", 512]},
        {"name": "scores", "dtype": "float32", "shape": ["batch", 512]}]


@pytest.mark.parametrize("make", [onnxruntime_config, tensorrt_config])
def test_triton_configs_parse_as_model_config(make):
    pb = parse_config(make("onerec", SPECS, OUTS, max_batch_size=32))
    platform, filename, kind = (("onnxruntime_onnx", "model.onnx", 2)  # KIND_CPU
                                if make is onnxruntime_config else
                                ("tensorrt_plan", "model.plan", 1))  # KIND_GPU
    assert (pb.name, pb.platform, pb.default_model_filename) == ("onerec", platform, filename)
    assert pb.max_batch_size == 32 and pb.HasField("dynamic_batching")
    assert pb.instance_group[0].kind == kind
    ins = {i.name: i for i in pb.input}
    assert list(ins["user"].dims) == [1] and list(ins["user"].reshape.shape) == []
    assert list(ins["long"].dims) == [256] and ins["long"].data_type == 9  # TYPE_INT64
    outs = {o.name: o for o in pb.output}
    assert list(outs["scores"].dims) == [512] and outs["scores"].data_type == 11  # TYPE_FP32
    with pytest.raises(ValueError, match="max_batch_size"):
        make("onerec", SPECS, OUTS, max_batch_size=0)

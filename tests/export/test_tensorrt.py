"""The TensorRT engine builder: the trtexec command, its absence, an fp16 build (GPU only)."""

from __future__ import annotations

import pytest

from onerec.export.artifact import (
    export_version,
    load_manifest,
)
from onerec.export.tensorrt import (
    TensorRTUnavailable,
    build_engine,
    trtexec_command,
)
from tests.export.test_artifact import tiny_trained
from tests.export.test_triton import SPECS


def test_trtexec_command_has_fp16_and_a_batch_profile():
    cmd = trtexec_command("v/model.onnx", "v/model.plan", SPECS, max_batch=64, opt_batch=16)
    assert cmd[:3] == ["trtexec", "--onnx=v/model.onnx", "--saveEngine=v/model.plan"]
    assert "--minShapes=user:1,short:1x50,pos:1x50,long:1x256" in cmd
    assert "--optShapes=user:16,short:16x50,pos:16x50,long:16x256" in cmd
    assert "--maxShapes=user:64,short:64x50,pos:64x50,long:64x256" in cmd
    assert "--fp16" in cmd and "--memPoolSize=workspace:4096M" in cmd
    assert "--fp16" not in trtexec_command("a", "b", SPECS, max_batch=8, fp16=False)
    with pytest.raises(ValueError, match="max_batch"):
        trtexec_command("a", "b", SPECS, max_batch=0)


def test_without_tensorrt_the_builder_says_so(tmp_path, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(TensorRTUnavailable, match="serve the ONNX graph"):
        build_engine(tmp_path / "m.onnx", tmp_path / "m.plan", SPECS, max_batch=4)
    assert not (tmp_path / "m.plan").exists()


def test_tensorrt_fp16_engine_builds(tmp_path):
    pytest.importorskip("tensorrt")
    model, space, cfg, _ = tiny_trained()
    v = export_version(model, space, cfg, tmp_path, beam_widths=[8], moe="dense")
    m = load_manifest(v)
    plan = build_engine(m.graph_path(), v / "model.plan", m.inputs, max_batch=4)
    assert plan.stat().st_size > 0

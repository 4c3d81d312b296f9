"""The ONNX exporters: which one `auto` picks, and TorchScript refusing a causal encoder."""

from __future__ import annotations

import pytest

from onerec.checkpoint import build_model
from onerec.config import Config
from onerec.export.artifact import (
    export_version,
    load_manifest,
)
from onerec.export.onnx import export_onnx
from onerec.items import ItemSpace
from onerec.trie import ItemTrie
from tests.export.test_artifact import OVERRIDES, make_codebook, tiny_trained


def test_auto_exporter_takes_torchscript_unless_the_encoder_is_causal(tmp_path):
    from onerec.config import ConfigError
    from onerec.export.onnx import resolve_exporter

    model, space, cfg, _ = tiny_trained()
    assert cfg.serve.exporter == "auto"
    assert resolve_exporter("auto", model) == "torchscript"
    causal = build_model(Config.from_preset("tiny", [*OVERRIDES, "model.causal_encoder=true"]),
                         space.codes, space.vocab_sizes, n_user_buckets=5)
    assert resolve_exporter("auto", causal) == "dynamo"
    assert resolve_exporter("dynamo", model) == "dynamo"
    with pytest.raises(ValueError, match=r"serve\.exporter"):
        resolve_exporter("onnxscript", model)
    with pytest.raises(ConfigError, match=r"serve\.exporter"):
        Config.from_preset("tiny", ["serve.exporter=onnxscript"])
    v = export_version(model, space, cfg, tmp_path, beam_widths=[4])  # from the Config
    assert load_manifest(v).exporter == "torchscript"


def test_torchscript_exporter_refuses_a_causal_encoder(tmp_path):
    cfg = Config.from_preset("tiny", [*OVERRIDES, "model.causal_encoder=true"])
    space = ItemSpace.from_codebook(make_codebook(seed=2))
    model = build_model(cfg, space.codes, space.vocab_sizes, n_user_buckets=5).eval()
    trie = ItemTrie.from_codes(space.codes, space.vocab_sizes)
    with pytest.raises(ValueError, match=r"causal_encoder.*dynamo"):
        export_onnx(model, trie, cfg, tmp_path / "m.onnx", beam_width=4, exporter="torchscript")
    assert not (tmp_path / "m.onnx").exists()

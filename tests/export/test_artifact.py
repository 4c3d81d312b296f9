"""Export: the version folder contract (an ONNX graph equal to the PyTorch generator, the
manifest, fingerprints), several beam widths, and the `onerec export` command."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from onerec.app.cli import app
from onerec.checkpoint import build_model
from onerec.config import Config
from onerec.export.artifact import (
    ArtifactError,
    FingerprintMismatch,
    export_version,
    load_manifest,
    load_trained,
    next_version,
)
from onerec.export.onnx import graph_metadata, ort_session, run_onnx
from onerec.export.tensorrt import (
    tensorrt_version,
)
from onerec.export.triton import parse_config
from onerec.generate import generate
from onerec.items import ItemSpace
from onerec.model import Batch
from onerec.tokenizer.codebook import Codebook
from onerec.trie import ItemTrie
from tests.reward.util import save_space_rm

OVERRIDES = ["model.n_decoder_layers=2", "model.n_experts=3", "model.top_k_experts=2"]


def make_codebook(n_items: int = 60, seed: int = 0) -> Codebook:
    """A real codebook (3 levels of 4 codes + disambiguation) over made-up video ids."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 4, (n_items, 3))
    return Codebook.from_codes(rng.normal(size=(3, 4, 2)), 1000 + 7 * np.arange(n_items), codes)


def tiny_trained() -> tuple:
    """(model, space, cfg, codebook): the tiny preset's model (initial weights, 5 user buckets)
    over `make_codebook()`."""
    cfg = Config.from_preset("tiny", OVERRIDES)
    cb = make_codebook()
    space = ItemSpace.from_codebook(cb)
    model = build_model(cfg, space.codes, space.vocab_sizes, n_user_buckets=5).eval()
    return model, space, cfg, cb


@pytest.fixture(scope="module")
def trained():
    return tiny_trained()


@pytest.fixture(scope="module")
def version_dir(trained, tmp_path_factory):
    model, space, cfg, _ = trained
    repo = tmp_path_factory.mktemp("repo")
    # dynamo named: `serve.exporter` auto would take TorchScript for this model
    return export_version(model, space, cfg, repo, beam_widths=[8], exporter="dynamo")


def users(space: ItemSpace, b: int, seed: int) -> Batch:
    """b users with different history lengths (tiny preset: S=8, P=8, G=16)."""
    g = torch.Generator().manual_seed(seed)
    n = len(space) + 1
    short, pos, long = (torch.randint(1, n, (b, w), generator=g) for w in (8, 8, 16))
    for u in range(b):
        short[u, : (3 * u) % 8], pos[u, : (5 * u) % 9], long[u, : (7 * u) % 17] = 0, 0, 0
    return Batch(user=torch.arange(b) % 5, short=short, pos=pos, long=long)


@pytest.mark.parametrize("b", [1, 3])
def test_onnx_graph_equals_pytorch_on_a_dynamic_batch(trained, version_dir, b):
    model, space, _, _ = trained
    session = ort_session(version_dir / "model.onnx", threads=1)
    batch = users(space, b, seed=b)
    items, scores = run_onnx(session, batch)
    ref = generate(model, batch, beam_width=8, trie=ItemTrie.from_codes(space.codes,
                                                                        space.vocab_sizes))
    assert items.shape == (b, 8) and items.dtype == np.int64 and scores.dtype == np.float32
    assert np.array_equal(items, ref.items.numpy())
    np.testing.assert_allclose(scores, ref.scores.numpy(), rtol=1e-4, atol=1e-5)
    assert (items > 0).all() and (items <= len(space)).all()


def test_version_folder_layout_and_manifest_round_trip(trained, version_dir):
    _, space, cfg, _ = trained
    repo_model = version_dir.parent
    assert version_dir.name == "1" and repo_model.name == "onerec"
    assert sorted(p.name for p in version_dir.iterdir()) == [
        "config.yaml", "items.npy", "manifest.json", "model.onnx"]
    # readable by a server running as another user
    assert all(p.stat().st_mode & 0o444 == 0o444 for p in [version_dir, *version_dir.iterdir(),
                                                          repo_model / "config.pbtxt"])
    m = load_manifest(version_dir, config_fingerprint=cfg.fingerprint(),
                      codebook_fingerprint=space.fingerprint)
    assert load_manifest(version_dir / "manifest.json") == m
    assert (m.version, m.model_name, m.beam_widths, m.default_beam_width) == (1, "onerec", [8], 8)
    assert m.top_n == cfg.serve.top_n and m.n_items == len(space) and m.n_user_buckets == 5
    assert [i["name"] for i in m.inputs] == ["user", "short", "pos", "long"]
    assert [i["shape"] for i in m.inputs] == [["batch"], ["batch", 8], ["batch", 8],
                                              ["batch", 16]]
    assert m.outputs == [{"name": "items", "dtype": "int64", "shape": ["batch", 8]},
                         {"name": "scores", "dtype": "float32", "shape": ["batch", 8]}]
    assert m.graph_path() == version_dir / "model.onnx"
    assert np.array_equal(m.item_ids(), space.item_ids)
    meta = graph_metadata(m.graph_path())
    assert meta["config_fingerprint"] == cfg.fingerprint()
    assert meta["codebook_fingerprint"] == space.fingerprint and meta["beam_width"] == "8"
    assert Config.from_file(version_dir / "config.yaml").fingerprint() == cfg.fingerprint()
    text = (repo_model / "config.pbtxt").read_text()
    pb = parse_config(text)
    assert pb.platform == "onnxruntime_onnx" and list(pb.output[0].dims) == [8]
    with pytest.raises(ArtifactError, match="beam_width 32 was not exported"):
        m.graph_path(32)


def copy_version(version_dir, tmp_path):
    dst = tmp_path / "onerec" / "1"
    shutil.copytree(version_dir, dst)
    return dst


def edit_manifest(folder, fn):
    raw = json.loads((folder / "manifest.json").read_text())
    fn(raw)
    (folder / "manifest.json").write_text(json.dumps(raw))


def test_missing_or_corrupt_manifest_is_a_clear_error(version_dir, tmp_path):
    with pytest.raises(ArtifactError, match=r"manifest.json: missing"):
        load_manifest(tmp_path)
    v = copy_version(version_dir, tmp_path)
    (v / "manifest.json").write_text('{"format": "onerec-model/1", "version": ')
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_manifest(v)
    shutil.rmtree(v)
    v = copy_version(version_dir, tmp_path)
    edit_manifest(v, lambda r: r.pop("codebook_fingerprint"))
    with pytest.raises(ArtifactError, match="missing field 'codebook_fingerprint'"):
        load_manifest(v)
    edit_manifest(v, lambda r: r.update(codebook_fingerprint="x", version="one"))
    with pytest.raises(ArtifactError, match="field 'version' has the wrong type"):
        load_manifest(v)
    edit_manifest(v, lambda r: r.update(version=1, format="other/9"))
    with pytest.raises(ArtifactError, match="field 'format'"):
        load_manifest(v)


def test_missing_files_are_named(version_dir, tmp_path):
    v = copy_version(version_dir, tmp_path)
    (v / "items.npy").unlink()
    with pytest.raises(ArtifactError, match=r"'items_file' names items\.npy, which is missing"):
        load_manifest(v)
    (v / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match=r"'graphs\[8\].file' names model.onnx"):
        load_manifest(v)


def test_fingerprint_mismatch_is_refused(trained, version_dir, tmp_path):
    cfg = trained[2]
    with pytest.raises(FingerprintMismatch, match="'config_fingerprint'"):
        load_manifest(version_dir, config_fingerprint="0" * 16)
    with pytest.raises(FingerprintMismatch, match="'codebook_fingerprint'"):
        load_manifest(version_dir, config_fingerprint=cfg.fingerprint(),
                      codebook_fingerprint="f" * 64)
    v = copy_version(version_dir, tmp_path)
    with open(v / "model.onnx", "ab") as f:  # a replaced / torn graph
        f.write(b"\0")
    with pytest.raises(FingerprintMismatch, match="sha256"):
        load_manifest(v)
    assert isinstance(FingerprintMismatch("x"), ArtifactError)


def test_several_beam_widths_with_the_torchscript_exporter(trained, tmp_path):
    model, space, cfg, _ = trained
    v = export_version(model, space, cfg, tmp_path, model_name="rec", version=7,
                       beam_widths=[4, 16, 4], exporter="torchscript")
    m = load_manifest(v)
    assert v == tmp_path / "rec" / "7" and m.beam_widths == [4, 16]
    assert {w: g["file"] for w, g in m.graphs.items()} == {"4": "model.onnx",
                                                           "16": "model_w16.onnx"}
    batch = users(space, 2, seed=9)
    trie = ItemTrie.from_codes(space.codes, space.vocab_sizes)
    for w in (4, 16):
        items, scores = run_onnx(ort_session(m.graph_path(w), threads=1), batch)
        ref = generate(model, batch, beam_width=w, trie=trie)
        assert np.array_equal(items, ref.items.numpy())
        np.testing.assert_allclose(scores, ref.scores.numpy(), rtol=1e-4, atol=1e-5)
    assert next_version(tmp_path / "rec") == 8
    with pytest.raises(ValueError, match="max_beam_width"):
        export_version(model, space, cfg, tmp_path, beam_widths=[cfg.serve.max_beam_width + 1])
    with pytest.raises(ValueError, match="model_name"):
        export_version(model, space, cfg, tmp_path, model_name="../x")
    with pytest.raises(ValueError, match="version must be >= 1"):
        export_version(model, space, cfg, tmp_path, version=0)


@pytest.mark.slow  # a second dynamo export (~15 s)
def test_causal_encoder_exports_equal_to_pytorch(tmp_path):
    cfg = Config.from_preset("tiny", [*OVERRIDES, "model.causal_encoder=true"])
    space = ItemSpace.from_codebook(make_codebook(seed=2))
    model = build_model(cfg, space.codes, space.vocab_sizes, n_user_buckets=5).eval()
    assert_exported_graph_equals_pytorch(model, space, cfg, tmp_path)


def assert_exported_graph_equals_pytorch(model, space: ItemSpace, cfg: Config, folder) -> None:
    """Export at beam 8, then the ONNX graph's beams and scores equal the PyTorch generator's
    on 3 users with different history lengths."""
    v = export_version(model, space, cfg, folder, beam_widths=[8])
    batch = users(space, 3, seed=5)
    items, scores = run_onnx(ort_session(v / "model.onnx", threads=1), batch)
    ref = generate(model, batch, beam_width=8, trie=ItemTrie.from_codes(space.codes,
                                                                        space.vocab_sizes))
    assert np.array_equal(items, ref.items.numpy())
    np.testing.assert_allclose(scores, ref.scores.numpy(), rtol=1e-4, atol=1e-5)


def write_checkpoint(model, cfg: Config, cb: Codebook, ck):
    """`ck` in the layout `onerec.train.save_checkpoint` writes (5 user buckets); -> ck."""
    ck.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "n_user_buckets": 5,
                "vocab_sizes": model.vocab_sizes}, ck / "state.pt")
    cfg.save(ck / "config.yaml")
    (ck / "meta.json").write_text(json.dumps({"step": 1, "codebook_fingerprint": cb.fingerprint,
                                              "config_fingerprint": cfg.fingerprint()}))
    return ck


def test_cli_export_writes_a_loadable_version(trained, tmp_path):
    model, space, cfg, cb = trained
    cb.save(tmp_path / "codebook")
    ck = write_checkpoint(model, cfg, cb, tmp_path / "checkpoint")
    loaded, _, _ = load_trained(ck, tmp_path / "codebook")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                 model.state_dict().values(), strict=True))
    runner = CliRunner()
    res = runner.invoke(app, ["export", "--checkpoint", str(ck), "--codebook",
                              str(tmp_path / "codebook"), "--out", str(tmp_path / "repo"),
                              "--beam-width", "4", "--exporter", "torchscript"])
    assert res.exit_code == 0, res.output
    m = load_manifest(tmp_path / "repo" / "onerec" / "1", codebook_fingerprint=cb.fingerprint)
    assert m.beam_widths == [4] and m.config_fingerprint == cfg.fingerprint()
    assert m.reward_model is None  # beam order unless a reward model is given
    save_space_rm(cfg, space, tmp_path / "rm")
    res = runner.invoke(app, ["export", "--checkpoint", str(ck), "--codebook",
                              str(tmp_path / "codebook"), "--out", str(tmp_path / "repo"),
                              "--beam-width", "4", "--exporter", "torchscript",
                              "--reward-model", str(tmp_path / "rm")])
    assert res.exit_code == 0 and "carries its reward model" in " ".join(res.output.split())
    assert load_manifest(tmp_path / "repo" / "onerec" / "2").reward_model["dir"] == "reward_model"
    res = runner.invoke(app, ["export", "--checkpoint", str(tmp_path / "nope"), "--codebook",
                              str(tmp_path / "codebook"), "--out", str(tmp_path / "repo")])
    assert res.exit_code == 2 and "incomplete" in " ".join(res.stderr.split())
    other = make_codebook(seed=1)
    other.save(tmp_path / "other")
    res = runner.invoke(app, ["export", "--checkpoint", str(ck), "--codebook",
                              str(tmp_path / "other"), "--out", str(tmp_path / "repo")])
    assert res.exit_code == 2 and "refusing codebook" in " ".join(res.stderr.split())


def test_tensorrt_version_folder_from_an_onnx_version(version_dir, tmp_path):
    def fake_builder(onnx_path, plan_path, inputs, **kw):  # stands in for the GPU-only build
        assert onnx_path.name == "model.onnx" and kw["fp16"] and kw["max_batch"] == 16
        plan_path.write_bytes(b"engine:" + onnx_path.read_bytes()[:64])
        return plan_path

    v = tensorrt_version(version_dir, tmp_path, max_batch=16, builder=fake_builder)
    assert v == tmp_path / "onerec_trt" / "1"
    assert sorted(p.name for p in v.iterdir()) == [
        "config.yaml", "items.npy", "manifest.json", "model.onnx", "model.plan"]
    m = load_manifest(v)  # the same checks serving runs
    raw = json.loads((v / "manifest.json").read_text())
    assert m.model_name == "onerec_trt" and raw["engine"]["precision"] == "fp16"
    pb = parse_config((tmp_path / "onerec_trt" / "config.pbtxt").read_text())
    assert pb.platform == "tensorrt_plan" and pb.max_batch_size == 16


# -- the reward model a version carries (serving's RM selection) ---------------------------------
def fake_engine(onnx_path, plan_path, inputs, **kw):
    """Stands in for the GPU-only TensorRT build."""
    plan_path.write_bytes(b"engine:" + onnx_path.read_bytes()[:64])
    return plan_path


def test_a_version_carries_its_reward_model_checked_by_sha256(trained, tmp_path):
    model, space, cfg, _ = trained
    rm = save_space_rm(cfg, space, tmp_path / "rm")
    v = export_version(model, space, cfg, tmp_path / "repo", beam_widths=[4],
                       exporter="torchscript", reward_model=rm)
    assert sorted(p.name for p in (v / "reward_model").iterdir()) == [
        "config.yaml", "meta.json", "state.pt"]
    m = load_manifest(v, codebook_fingerprint=space.fingerprint)  # checks the copy's sha256
    assert m.reward_model["dir"] == "reward_model"
    assert m.reward_model["codebook_fingerprint"] == space.fingerprint
    assert set(m.reward_model["sha256"]) == {"config.yaml", "meta.json", "state.pt"}
    # TensorRT's version folder carries it too
    t = tensorrt_version(v, tmp_path / "trt", builder=fake_engine)
    assert load_manifest(t).reward_model == m.reward_model
    with open(v / "reward_model" / "state.pt", "ab") as f:  # a torn or swapped reward model
        f.write(b"\0")
    with pytest.raises(ArtifactError, match=r"reward_model/state\.pt: sha256 does not match"):
        load_manifest(v)
    # a reward model of another codebook never ships: the export fails, no version appears
    other = ItemSpace.from_codebook(make_codebook(seed=1))
    save_space_rm(cfg, other, tmp_path / "rm-other")
    with pytest.raises(ValueError, match="refusing codebook"):
        export_version(model, space, cfg, tmp_path / "repo", version=2, beam_widths=[4],
                       exporter="torchscript", reward_model=tmp_path / "rm-other")
    assert not (tmp_path / "repo" / "onerec" / "2").exists()


def test_export_stage_carries_the_cycles_reward_model_unless_skipped_or_switched_off(
        trained, tmp_path):
    from onerec import stages

    model, space, cfg, cb = trained
    cb.save(tmp_path / "codebook")
    write_checkpoint(model, cfg, cb, tmp_path / "candidate" / "checkpoint")
    rm = save_space_rm(cfg, space, tmp_path / "rm")
    (tmp_path / "skipped").mkdir()  # the reward stage left out: its output folder is empty
    args = (tmp_path / "candidate", tmp_path / "codebook")
    out = stages.export(cfg, *args, tmp_path / "a", reward_dir=rm)
    assert out["reward_model"]["carried"] and "reward_model/state.pt" in " ".join(out["files"])
    assert load_manifest(tmp_path / "a" / "onerec" / "1").reward_model is not None
    out = stages.export(cfg, *args, tmp_path / "b", reward_dir=tmp_path / "skipped")
    assert out["reward_model"] == {"carried": False, "why": "the reward stage did not run (no "
                                                           "reward model): served in beam order"}
    assert load_manifest(tmp_path / "b" / "onerec" / "1").reward_model is None
    off = Config.from_preset("tiny", [*OVERRIDES, "serve.rm_selection=false"])
    assert stages._carried_reward(off, rm) == (None, "serve.rm_selection is off: served in "
                                                     "beam order")

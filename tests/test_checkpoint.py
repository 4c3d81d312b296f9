"""onerec.checkpoint: the one writer and reader of model checkpoints.

A round trip gives the same model (same outputs), a failed save leaves the previous checkpoint,
and a checkpoint from another codebook, a corrupt one, or one whose weights do not fit its
Config is refused with an error naming the folder.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

from onerec.checkpoint import (
    CKPT_NAME,
    CheckpointError,
    build_model,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from onerec.config import Config
from onerec.data.synthetic import make_dataset
from onerec.stream import RequestStream, collate, requests_from_events

VOCAB = [8, 8, 8]
N_BUCKETS = 3


@pytest.fixture(scope="module")
def setup():
    cfg = Config.from_preset("tiny")
    ds = make_dataset(cfg.data)
    index = {int(v): i + 1 for i, v in enumerate(ds.items["video_id"])}
    g = torch.Generator().manual_seed(0)
    codes = torch.cat([torch.zeros(1, 3, dtype=torch.long),
                       torch.stack([torch.randint(0, k, (len(index),), generator=g)
                                    for k in VOCAB], 1)])
    reqs = requests_from_events(ds.events, index, cfg.data, n_user_buckets=N_BUCKETS)
    return cfg, codes, reqs


def _trained(cfg, codes, reqs, steps=3):
    """A model a few optimizer steps away from its initialisation, its optimizer and stream."""
    model = build_model(cfg, codes, VOCAB, N_BUCKETS)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    stream = RequestStream(reqs, cfg.train.batch_size, seed=0)
    for _ in range(steps):
        loss = model(collate(reqs, stream.next_indices(), codes))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, opt, stream


def _save(tmp_path, cfg, model, opt, stream, step=3, fingerprint="cb-a"):
    return save_checkpoint(tmp_path, model=model, opt=opt, step=step, stream=stream, cfg=cfg,
                           codebook_fingerprint=fingerprint, n_user_buckets=N_BUCKETS)


def test_round_trip_gives_the_same_model(setup, tmp_path):
    cfg, codes, reqs = setup
    model, opt, stream = _trained(cfg, codes, reqs)
    path = _save(tmp_path, cfg, model, opt, stream)
    assert path == tmp_path / CKPT_NAME
    back, back_cfg, n_buckets = load_model(path, "cb-a")
    assert not back.training and n_buckets == N_BUCKETS
    assert back_cfg.fingerprint() == cfg.fingerprint() and back.vocab_sizes == VOCAB
    model.eval()
    batch = collate(reqs, torch.arange(min(32, len(reqs))).numpy(), codes)
    with torch.no_grad():
        a, b = model(batch), back(batch)
        mem_a, _ = model.encode(batch)
        mem_b, _ = back.encode(batch)
    assert torch.equal(a["loss"], b["loss"]) and torch.equal(mem_a, mem_b)
    fresh = build_model(cfg, codes, VOCAB, N_BUCKETS).eval()
    with torch.no_grad():
        assert not torch.equal(fresh(batch)["loss"], a["loss"])  # the weights came back, not init
    ck = load_checkpoint(path)
    meta = json.loads((path / "meta.json").read_text())
    assert ck["meta"] == meta and meta["step"] == ck["state"]["step"] == 3
    assert meta["codebook_fingerprint"] == "cb-a" and meta["watermark_ms"] == stream.watermark_ms
    assert ck["state"]["stream"] == stream.state_dict()


def test_a_failed_save_leaves_the_previous_checkpoint(setup, tmp_path, monkeypatch):
    cfg, codes, reqs = setup
    model, opt, stream = _trained(cfg, codes, reqs)
    path = _save(tmp_path, cfg, model, opt, stream, step=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)

    def disk_full(self, dest):
        (dest.parent / "config.yaml").write_text("half")  # something was written already
        raise OSError("No space left on device")

    monkeypatch.setattr(Config, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        _save(tmp_path, cfg, model, opt, stream, step=4)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [CKPT_NAME]  # no temporary left over
    back, _, _ = load_model(path)
    assert load_checkpoint(path)["meta"]["step"] == 3
    for k, v in back.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_a_checkpoint_from_another_codebook_is_refused(setup, tmp_path):
    cfg, codes, reqs = setup
    model, opt, stream = _trained(cfg, codes, reqs, steps=0)
    path = _save(tmp_path, cfg, model, opt, stream, fingerprint="cb-a")
    for load in (load_model, load_checkpoint):
        with pytest.raises(ValueError, match="trained with codebook cb-a, refusing codebook cb-b"
                           ) as e:
            load(path, "cb-b")
        assert isinstance(e.value, CheckpointError) and str(path) in str(e.value)
    meta = json.loads((path / "meta.json").read_text())
    del meta["codebook_fingerprint"]
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="records no codebook fingerprint"):
        load_model(path, "cb-a")
    load_model(path)  # no fingerprint asked for: not checked


def test_corrupt_or_missing_files_give_a_clear_error(setup, tmp_path):
    cfg, codes, reqs = setup
    model, opt, stream = _trained(cfg, codes, reqs, steps=0)
    path = _save(tmp_path, cfg, model, opt, stream)
    where = re.escape(str(path))
    (path / "state.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=f"checkpoint {where} is unreadable"):
        load_model(path)
    (path / "state.pt").unlink()
    with pytest.raises(CheckpointError, match=rf"checkpoint {where} is incomplete: missing .*state\.pt"):
        load_model(path)
    with pytest.raises(CheckpointError, match=r"is incomplete: missing .*meta\.json"):
        load_checkpoint(tmp_path / "nope")


def test_a_state_without_the_model_keys_or_weights_that_do_not_fit_are_refused(setup, tmp_path):
    cfg, codes, reqs = setup
    model, opt, stream = _trained(cfg, codes, reqs, steps=0)
    path = _save(tmp_path, cfg, model, opt, stream)
    state = torch.load(path / "state.pt", weights_only=True)
    torch.save({k: v for k, v in state.items() if k != "vocab_sizes"}, path / "state.pt")
    with pytest.raises(CheckpointError, match=r"state\.pt has no vocab_sizes"):
        load_model(path)
    torch.save(state, path / "state.pt")
    Config.from_preset("tiny", ["model.d_model=48"]).save(path / "config.yaml")
    with pytest.raises(CheckpointError, match=r"weights do not fit the model its config\.yaml"):
        load_model(path)


class _RunsCode:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('ran')",))


def test_a_checkpoint_that_would_run_code_is_refused_not_run(tmp_path, monkeypatch):
    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    (ckpt / "meta.json").write_text("{}")
    torch.save({"model": _RunsCode()}, ckpt / "state.pt")  # a state.pt swapped on the volume
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(ckpt)
    assert not (tmp_path / "PWNED").exists()  # weights_only: the pickle's code never ran


def test_the_version_label_follows_the_weights_not_what_else_the_checkpoint_records(
        setup, tmp_path):
    from onerec.stages import model_version

    cfg, codes, reqs = setup
    model, opt, stream = _trained(cfg, codes, reqs)
    for name, wall_s in (("a", 1.5), ("b", 97.25)):  # the alignment's history keeps wall times
        save_checkpoint(tmp_path / name, model=model, opt=opt, step=3, stream=stream, cfg=cfg,
                        codebook_fingerprint="cb-a", n_user_buckets=N_BUCKETS,
                        extra_state={"align": {"history": [{"wall_s": wall_s}]}})
    assert ((tmp_path / "a" / CKPT_NAME / "state.pt").read_bytes()
            != (tmp_path / "b" / CKPT_NAME / "state.pt").read_bytes())
    label = model_version(tmp_path / "a", "2022-04-28")
    assert re.fullmatch(r"2022-04-28-[0-9a-f]{8}", label)
    assert model_version(tmp_path / "b", "2022-04-28") == label
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    _save(tmp_path / "c", cfg, model, opt, stream)
    assert model_version(tmp_path / "c", "2022-04-28") != label


def test_a_version_label_needs_model_weights_and_names_the_file_without_them(tmp_path):
    from onerec.stages import StageError, model_version

    (tmp_path / "a" / CKPT_NAME).mkdir(parents=True)
    (tmp_path / "a" / CKPT_NAME / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(StageError, match=r"a/checkpoint/state.pt: not a readable checkpoint"):
        model_version(tmp_path / "a", "2022-04-28")
    (tmp_path / "b" / CKPT_NAME).mkdir(parents=True)
    torch.save({"step": 3}, tmp_path / "b" / CKPT_NAME / "state.pt")
    with pytest.raises(StageError, match="holds no model weights"):
        model_version(tmp_path / "b", "2022-04-28")

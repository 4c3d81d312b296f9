from __future__ import annotations

import itertools

import pytest
import torch

from onerec.config import Config
from onerec.model import Batch, OneRec


def tiny_model(arch="encoder_decoder", vocab=(4, 3, 2), n_items=20, seed=0):
    torch.manual_seed(seed)
    cfg = Config.from_preset("tiny", [f"model.arch={arch}"]).model
    space = torch.tensor(list(itertools.product(*(range(k) for k in vocab))))
    codes = space[torch.randperm(len(space))[:n_items]]  # distinct IDs, as a codebook's are
    codes = torch.cat([torch.zeros(1, len(vocab), dtype=torch.long), codes])
    return OneRec(cfg, item_codes=codes, vocab_sizes=list(vocab), n_user_buckets=5,
                  max_seq_len=8, max_pos_len=8)


def random_batch(model, b=3, t=None, s=8, p=8, g=16):
    n = model.item_codes.shape[0]
    t = t or b
    short = torch.randint(0, n, (b, s))
    short[0, :3] = 0  # padding on the left
    return Batch(user=torch.randint(0, 5, (b,)), short=short, pos=torch.randint(0, n, (b, p)),
                 long=torch.randint(0, n, (b, g)),
                 target_codes=model.item_codes[torch.randint(1, n, (t,))],
                 target_req=torch.randint(0, b, (t,)))


@pytest.mark.parametrize("arch", ["encoder_decoder", "lazy_decoder"])
def test_forward_shapes_and_finite_loss(arch):
    model = tiny_model(arch)
    batch = random_batch(model, b=3, t=7)
    memory, mask = model.encode(batch)
    m = 1 + 8 + 8 + model.cfg.n_long_tokens
    assert memory.shape == (3, m, model.cfg.d_model) and mask.shape == (3, m)
    out = model(batch)
    assert out["loss"].shape == () and torch.isfinite(out["loss"])
    assert out["level_losses"].shape == (3,)
    assert model.expert_load().shape == (1, model.cfg.n_experts)


def test_lazy_decoder_has_no_encoder_layers():
    assert len(tiny_model("lazy_decoder").encoder) == 0
    assert len(tiny_model("encoder_decoder").encoder) == 1


def test_compute_compression_equals_encoding_each_target_separately():
    model = tiny_model().eval()
    batch = random_batch(model, b=2, t=5)
    grouped = model(batch)["ntp_loss"]
    req = batch.target_req
    expanded = Batch(user=batch.user[req], short=batch.short[req], pos=batch.pos[req],
                     long=batch.long[req], target_codes=batch.target_codes)
    torch.testing.assert_close(grouped, model(expanded)["ntp_loss"])


def test_padding_items_do_not_change_the_encoding():
    model = tiny_model().eval()
    batch = random_batch(model, b=1)
    short2 = batch.short.clone()
    short2[0, :3] = 0
    batch.short = short2
    a, _ = model.encode(batch)
    item_emb_before = model.item_emb.weight[0].clone()
    with torch.no_grad():
        model.item_emb.weight[0].add_(5.0)  # the padding row must be ignored
    b, _ = model.encode(batch)
    torch.testing.assert_close(a[:, 1 + 3:], b[:, 1 + 3:])
    assert torch.equal(model.embed_items(torch.zeros(1, 2, dtype=torch.long)),
                       torch.zeros(1, 2, model.cfg.d_model))
    with torch.no_grad():
        model.item_emb.weight[0].copy_(item_emb_before)


def test_loss_falls_when_fitting_a_fixed_batch():
    model = tiny_model()
    batch = random_batch(model, b=4, t=8)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        opt.zero_grad()
        loss = model(batch)["loss"]
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.5 * first


def test_bad_item_codes_shape_is_rejected():
    cfg = Config.from_preset("tiny").model
    with pytest.raises(ValueError, match="item_codes"):
        OneRec(cfg, item_codes=torch.zeros(5, 2, dtype=torch.long), vocab_sizes=[4, 4, 4])


@torch.no_grad()
def test_beams_sharing_memory_equal_beams_with_copied_memory():
    model = tiny_model().eval()
    batch = random_batch(model, b=3)
    memory, mask = model.encode(batch)
    prefix = torch.randint(0, 3, (3 * 4, 2)) % torch.tensor([4, 3])
    shared, _ = model.decode(prefix, memory, mask, group=4)
    copied, _ = model.decode(prefix, memory.repeat_interleave(4, 0), mask.repeat_interleave(4, 0))
    torch.testing.assert_close(shared, copied, rtol=1e-5, atol=1e-6)


def test_context_dropout_drops_history_items_in_training_only():
    model = tiny_model()
    batch = random_batch(model, b=4)
    model.eval()
    ref, _ = model.encode(batch)
    model.cfg.context_dropout = 0.5
    again, _ = model.encode(batch)
    assert torch.equal(ref, again)  # inference never drops
    model.train()  # tiny preset: no other dropout, so only the dropped items change memory
    torch.manual_seed(0)
    dropped, _ = model.encode(batch)
    model.cfg.context_dropout = 0.0
    whole, _ = model.encode(batch)
    assert torch.allclose(whole, ref, atol=1e-5)
    assert not torch.allclose(dropped, whole, atol=1e-3)


def test_context_dropout_must_be_a_probability():
    from onerec.config import ConfigError

    with pytest.raises(ConfigError, match=r"model\.context_dropout"):
        Config.from_preset("tiny", ["model.context_dropout=1.0"])


def test_item_id_dropout_reads_dropped_items_as_their_codes_in_training_only():
    model = tiny_model()
    model.cfg.item_id_dropout = 0.5
    codes = model.code_emb(model.item_codes.long() + model.code_offsets).sum(-2)
    torch.manual_seed(0)
    table = model.context_table()
    dropped = torch.isclose(table, codes, atol=1e-7).all(-1)
    kept = torch.isclose(table, codes + 2.0 * model.item_emb.weight, atol=1e-6).all(-1)
    assert (dropped ^ kept).all()  # each item whole: codes alone, or codes + id / (1 - p)
    assert dropped[1:].any() and kept[1:].any()
    batch = random_batch(model, b=4)
    model.eval()
    ref, _ = model.encode(batch)
    model.cfg.item_id_dropout = 0.0
    torch.testing.assert_close(model.encode(batch)[0], ref)  # inference keeps every vector
    torch.testing.assert_close(model.context_table(), model.item_table())  # off: unchanged


@pytest.mark.parametrize("override", ["model.item_id_dropout=1.0",
                                      "model.item_id_dropout=-0.1"])
def test_item_id_dropout_must_be_a_probability(override):
    from onerec.config import ConfigError

    with pytest.raises(ConfigError, match=r"model\.item_id_dropout"):
        Config.from_preset("tiny", [override])
    with pytest.raises(ConfigError, match=r"needs model\.item_id_embedding"):
        Config.from_preset("tiny", ["model.item_id_dropout=0.3", "model.item_id_embedding=false"])


def test_encoder_dropout_regularises_the_encoder_only():
    torch.manual_seed(0)
    base = Config.from_preset("tiny", ["model.dropout=0", "model.encoder_dropout=0.5"]).model
    assert base.encoder_rate == 0.5
    vocab, n_items = (4, 3, 2), 20
    space = torch.tensor(list(itertools.product(*(range(k) for k in vocab))))
    codes = space[torch.randperm(len(space))[:n_items]]  # distinct IDs, as a codebook's are
    codes = torch.cat([torch.zeros(1, len(vocab), dtype=torch.long), codes])
    model = OneRec(base, item_codes=codes, vocab_sizes=list(vocab), n_user_buckets=5,
                   max_seq_len=8, max_pos_len=8).train()
    batch = random_batch(model)
    first, mask = model.encode(batch)
    assert not torch.allclose(first, model.encode(batch)[0])  # the encoder drops
    prefix = batch.target_codes[:, :-1]
    a, _ = model.decode(prefix, first, mask)
    b, _ = model.decode(prefix, first, mask)
    torch.testing.assert_close(a, b)  # the decoder, at model.dropout = 0, does not
    model.eval()
    torch.testing.assert_close(model.encode(batch)[0], model.encode(batch)[0])
    # null falls back to model.dropout
    assert Config.from_preset("tiny", ["model.dropout=0.2"]).model.encoder_rate == 0.2


def test_without_item_id_embeddings_no_parameter_grows_with_the_catalogue():
    cfg = Config.from_preset("tiny", ["model.item_id_embedding=false",
                                      "model.item_loss_weight=1"]).model

    def build(n_items: int) -> OneRec:
        torch.manual_seed(0)
        codes = torch.cat([torch.zeros(1, 3, dtype=torch.long),
                           torch.tensor(list(itertools.product(range(8), range(8), range(4))))
                           [:n_items]])
        return OneRec(cfg, item_codes=codes, vocab_sizes=[8, 8, 4], n_user_buckets=5,
                      max_seq_len=8, max_pos_len=8)

    small, large = build(20), build(200)
    assert small.item_emb is None
    assert small.num_params() == large.num_params()  # the item head scores against codes too
    # an item is the sum of its codes' embeddings: two items sharing codes share those terms
    e = large.embed_items(torch.tensor([[5, 6]]))
    codes = large.item_codes[torch.tensor([5, 6])] + large.code_offsets
    assert torch.allclose(e[0], large.code_emb(codes).sum(-2))
    with_ids = Config.from_preset("tiny").model
    assert with_ids.item_id_embedding  # the default keeps each item's own vector
    batch = random_batch(large, b=3, t=5)
    batch.target_items = torch.randint(1, 201, (5,))
    batch.target_codes = large.item_codes[batch.target_items]
    out = large(batch)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert large.code_emb.weight.grad is not None


def test_item_codes_are_kept_as_int32_and_old_int64_states_still_load():
    model = tiny_model()
    assert model.item_codes.dtype == torch.int32  # half the bytes in memory and in the graph
    old = {k: (v.long() if k == "item_codes" else v) for k, v in model.state_dict().items()}
    fresh = tiny_model(seed=1)
    fresh.load_state_dict(old)  # a checkpoint written before: int64 codes
    assert fresh.item_codes.dtype == torch.int32
    assert torch.equal(fresh.item_codes, model.item_codes)
    batch = random_batch(model, b=2, t=3)
    batch.target_codes = batch.target_codes.to(torch.int32)  # any int type is accepted
    assert torch.isfinite(model(batch)["loss"])

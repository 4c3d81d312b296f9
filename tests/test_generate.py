"""The fast generator against the reference beam search, and its parts against the model."""

from __future__ import annotations

import itertools

import pytest
import torch

from onerec.beam_search import beam_search
from onerec.config import Config
from onerec.generate import Generator, generate, resolve_dtype
from onerec.model import Batch, OneRec
from onerec.trie import ItemTrie


def unique_codes(vocab: tuple[int, ...], n_items: int, seed: int) -> torch.Tensor:
    """(n_items + 1, L) distinct semantic IDs (row 0 padding), as a codebook guarantees."""
    g = torch.Generator().manual_seed(seed)
    space = torch.tensor(list(itertools.product(*(range(k) for k in vocab))))
    codes = space[torch.randperm(len(space), generator=g)[:n_items]]
    return torch.cat([torch.zeros(1, len(vocab), dtype=torch.long), codes])


def tiny_model(vocab=(6, 5, 4), n_items=40, seed=0, arch="encoder_decoder",
               causal: bool = False) -> OneRec:
    torch.manual_seed(seed)
    cfg = Config.from_preset("tiny", [f"model.arch={arch}", "model.n_decoder_layers=2",
                                      "model.n_experts=3", "model.top_k_experts=2",
                                      f"model.causal_encoder={str(causal).lower()}"]).model
    return OneRec(cfg, item_codes=unique_codes(vocab, n_items, seed), vocab_sizes=list(vocab),
                  n_user_buckets=5, max_seq_len=8, max_pos_len=8).eval()


def ragged_batch(model: OneRec, b: int = 4, seed: int = 1) -> Batch:
    """Users with different history lengths (left padding), some with none at all."""
    g = torch.Generator().manual_seed(seed)
    n = model.item_codes.shape[0]
    short = torch.randint(1, n, (b, 8), generator=g)
    pos = torch.randint(1, n, (b, 8), generator=g)
    long = torch.randint(1, n, (b, 16), generator=g)
    for u in range(b):
        short[u, : (u * 3) % 8] = 0
        pos[u, : (u * 5) % 9] = 0
        long[u, : (u * 7) % 17] = 0
    return Batch(user=torch.arange(b) % 5, short=short, pos=pos, long=long)


def assert_same_top(codes, scores, ref_codes, ref_scores, top_n):
    """Same scores, and the same IDs wherever the order is not decided by a near-tie."""
    torch.testing.assert_close(scores[:, :top_n], ref_scores[:, :top_n], rtol=1e-4, atol=1e-4)
    for u in range(scores.shape[0]):
        s = ref_scores[u, :top_n]
        for j in range(top_n):
            near = (s - s[j]).abs() < 1e-4
            if near.sum() == 1 and torch.isfinite(s[j]):
                assert codes[u, j].tolist() == ref_codes[u, j].tolist(), (u, j)


@pytest.mark.parametrize("constrained", [True, False])
@pytest.mark.parametrize("beam", [1, 4, 16, 64])
def test_fast_generation_equals_reference_beam_search(beam, constrained):
    model = tiny_model()
    batch = ragged_batch(model)
    trie = ItemTrie.from_codes(model.item_codes, model.vocab_sizes)
    top_n = min(beam, 10)
    ref_codes, ref_scores = beam_search(model, batch, beam_width=beam, top_n=beam,
                                        trie=trie if constrained else None)
    out = generate(model, batch, beam_width=beam, trie=trie, constrained=constrained)
    assert out.codes.shape == ref_codes.shape and out.items.shape == out.scores.shape
    assert_same_top(out.codes, out.scores, ref_codes, ref_scores, top_n)
    # items name the generated IDs: the catalogue's item where one exists, else 0
    by_sid = {tuple(row): i for i, row in enumerate(model.item_codes.tolist()) if i > 0}
    for sid, item in zip(out.codes.view(-1, 3).tolist(), out.items.view(-1).tolist(),
                         strict=True):
        assert item == by_sid.get(tuple(sid), 0)


@pytest.mark.parametrize(("arch", "causal"), [("lazy_decoder", False),
                                              ("encoder_decoder", True)])
def test_fast_generation_equals_reference_for_other_architectures(arch, causal):
    model = tiny_model(arch=arch, causal=causal, seed=13)
    batch = ragged_batch(model, seed=14)
    trie = ItemTrie.from_codes(model.item_codes, model.vocab_sizes)
    ref_codes, ref_scores = beam_search(model, batch, beam_width=16, top_n=16, trie=trie)
    out = generate(model, batch, beam_width=16, trie=trie)
    assert_same_top(out.codes, out.scores, ref_codes, ref_scores, 10)


def test_wide_beam_up_to_512_equals_reference_and_every_item_is_real():
    model = tiny_model(vocab=(16, 12, 8), n_items=700, seed=3)
    batch = ragged_batch(model, b=3, seed=4)
    trie = ItemTrie.from_codes(model.item_codes, model.vocab_sizes)
    ref_codes, ref_scores = beam_search(model, batch, beam_width=512, top_n=50, trie=trie)
    out = generate(model, batch, beam_width=512, trie=trie)
    assert out.items.shape == (3, 512)
    assert_same_top(out.codes, out.scores, ref_codes, ref_scores, 50)
    assert (out.items > 0).all() and torch.isfinite(out.scores).all()  # 700 items >= 512 beams
    assert all(len(set(row)) == 512 for row in out.items.tolist())  # distinct items per user


def test_batched_users_equal_one_user_at_a_time():
    model = tiny_model(seed=5)
    batch = ragged_batch(model, b=4, seed=6)
    trie = ItemTrie.from_codes(model.item_codes, model.vocab_sizes)
    together = generate(model, batch, beam_width=16, trie=trie)
    for u in range(4):
        one = Batch(user=batch.user[u:u + 1], short=batch.short[u:u + 1],
                    pos=batch.pos[u:u + 1], long=batch.long[u:u + 1])
        alone = generate(model, one, beam_width=16, trie=trie)
        torch.testing.assert_close(together.scores[u:u + 1], alone.scores, rtol=1e-5, atol=1e-5)
        assert torch.equal(together.items[u:u + 1], alone.items)


def test_last_decoder_step_runs_only_for_ids_that_several_items_share():
    model = tiny_model(vocab=(5, 4, 3), n_items=45, seed=11)
    batch = ragged_batch(model, b=3, seed=12)
    trie = ItemTrie.from_codes(model.item_codes, model.vocab_sizes)
    gen = Generator(model, trie, beam_width=20)
    seen: list[int] = []
    hook = model.heads[-1].register_forward_hook(lambda mod, inp, out: seen.append(len(inp[0])))
    try:
        _, scores, codes = gen(batch.user, batch.short, batch.pos, batch.long)
    finally:
        hook.remove()
    # the prefixes (c1, c2) the last level starts from, and how many items continue each
    shared: dict[tuple[int, ...], int] = {}
    for row in model.item_codes[1:].tolist():
        shared[tuple(row[:2])] = shared.get(tuple(row[:2]), 0) + 1
    prefixes = {tuple(c[:2]) for u in range(3)
                for c, s in zip(codes[u].tolist(), scores[u], strict=True) if torch.isfinite(s)}
    assert any(shared[p] == 1 for p in prefixes) and any(shared[p] > 1 for p in prefixes)
    assert len(seen) == 1 and 0 < seen[0] < 3 * 20  # only the beams with a real choice
    # and the result is still the reference's (renormalised there too)
    ref_codes, ref_scores = beam_search(model, batch, beam_width=20, top_n=20, trie=trie)
    assert_same_top(codes, scores, ref_codes, ref_scores, 20)


def test_constrained_beams_past_the_catalogue_are_dead_with_item_zero():
    model = tiny_model(vocab=(4, 3, 2), n_items=5, seed=7)
    trie = ItemTrie.from_codes(model.item_codes, model.vocab_sizes)
    out = generate(model, ragged_batch(model, b=2), beam_width=8, trie=trie)
    live = torch.isfinite(out.scores)
    assert live.sum(1).tolist() == [5, 5]  # exactly the 5 items, then dead beams
    assert (out.items[live] > 0).all() and (out.items[~live] == 0).all()
    assert sorted(out.items[0, :5].tolist()) == [1, 2, 3, 4, 5]


@torch.no_grad()
@pytest.mark.parametrize("arch", ["encoder_decoder", "lazy_decoder"])
def test_kv_cache_step_equals_full_prefix_decode(arch):
    model = tiny_model(arch=arch, seed=8)
    batch = ragged_batch(model, b=2)
    memory, mask = model.encode(batch)
    group = 3
    prefix = torch.stack([torch.randint(0, k, (2 * group,)) for k in model.vocab_sizes[:2]], 1)
    full, _ = model.decode(prefix, memory, mask, group=group)  # (N, 3, d), no cache
    cross = [layer.cross_memory(memory, mask) for layer in model.decoder]
    fused = [layer.self_attn.fused_qkv() for layer in model.decoder]
    caches: list = [None] * len(model.decoder)
    x = (model.bos + model.level_emb.weight[0]).expand(2 * group, -1)
    for t in range(3):
        for i, layer in enumerate(model.decoder):
            x, caches[i] = layer.step(x, caches[i], cross[i], group, fused[i])
        assert caches[0].shape[:2] == (2 * group, t + 1)
        torch.testing.assert_close(model.dec_norm(x), full[:, t], rtol=1e-5, atol=1e-5)
        if t < 2:
            x = model.code_emb(prefix[:, t] + model.code_offsets[t]) + model.level_emb.weight[t + 1]


@torch.no_grad()
def test_moe_inference_paths_equal_the_training_layer():
    model = tiny_model(seed=9)
    moe = model.decoder[0].moe
    x = torch.randn(37, model.cfg.d_model)
    expected, _ = moe(x)
    torch.testing.assert_close(moe.infer(x, "sparse"), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(moe.infer(x, "dense"), expected, rtol=1e-5, atol=1e-6)


def test_dense_moe_generator_matches_sparse():
    model = tiny_model(seed=10)
    batch = ragged_batch(model)
    trie = ItemTrie.from_codes(model.item_codes, model.vocab_sizes)
    a = generate(model, batch, beam_width=16, trie=trie, moe="sparse")
    b = generate(model, batch, beam_width=16, trie=trie, moe="dense")
    torch.testing.assert_close(a.scores, b.scores, rtol=1e-5, atol=1e-5)


def test_generator_checks_its_arguments():
    model = tiny_model()
    trie = ItemTrie.from_codes(model.item_codes, model.vocab_sizes)
    with pytest.raises(ValueError, match="beam_width"):
        Generator(model, trie, beam_width=0)
    other = ItemTrie.from_codes(unique_codes((6, 5, 5), 10, 0), [6, 5, 5])
    with pytest.raises(ValueError, match="vocab_sizes"):
        Generator(model, other, beam_width=4)
    assert Generator(model, trie, beam_width=64).widths() == [6, 30, 64]


def test_half_precision_needs_cuda():
    cpu = torch.device("cpu")
    assert resolve_dtype(cpu, None) == torch.float32
    with pytest.raises(ValueError, match="needs CUDA"):
        resolve_dtype(cpu, torch.float16)
    assert resolve_dtype(torch.device("cuda"), None) == torch.float16
    assert resolve_dtype(torch.device("cuda"), torch.bfloat16) == torch.bfloat16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_on_cuda_keeps_the_top_items(dtype):
    model = tiny_model(seed=12).cuda()
    batch = ragged_batch(model)
    trie = ItemTrie.from_codes(model.item_codes, model.vocab_sizes)
    ref = generate(model, batch, beam_width=16, trie=trie, dtype=torch.float32)
    half = generate(model, batch, beam_width=16, trie=trie, dtype=dtype)
    torch.testing.assert_close(half.scores, ref.scores, rtol=0.05, atol=0.05)
    overlap = [len(set(a[:5]) & set(b[:5])) for a, b in
               zip(half.items.tolist(), ref.items.tolist(), strict=True)]
    assert min(overlap) >= 3

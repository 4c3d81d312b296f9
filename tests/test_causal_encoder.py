"""Causal encoder: one encoder pass over a user's sequence serves every prefix of it."""

from __future__ import annotations

import numpy as np
import torch

from onerec.config import Config
from onerec.model import Batch, OneRec, left_align
from onerec.stream import collate, requests_from_sequences


def causal_model(vocab=(4, 3, 2), n_items=30, s=6, seed=0) -> OneRec:
    torch.manual_seed(seed)
    cfg = Config.from_preset("tiny", ["model.causal_encoder=true"]).model
    codes = torch.stack([torch.randint(0, k, (n_items,)) for k in vocab], 1)
    codes = torch.cat([torch.zeros(1, len(vocab), dtype=torch.long), codes])
    return OneRec(cfg, item_codes=codes, vocab_sizes=list(vocab), max_seq_len=s,
                  max_pos_len=1).eval()


def test_left_align_moves_padding_to_the_end():
    seq = torch.tensor([[0, 0, 5, 6, 7], [1, 2, 3, 4, 5], [0, 0, 0, 0, 0]])
    assert left_align(seq).tolist() == [[5, 6, 7, 0, 0], [1, 2, 3, 4, 5], [0, 0, 0, 0, 0]]


def test_causal_requests_cover_every_target_once_with_its_history():
    cfg = Config.from_preset("tiny", ["data.max_seq_len=4"])
    seqs = {1: [3, 4, 5], 2: list(range(10, 21))}  # the second is longer than one window
    causal = requests_from_sequences(seqs, cfg.data, causal=True)
    flat = requests_from_sequences(seqs, cfg.data)
    assert sorted(causal.targets.tolist()) == sorted(flat.targets.tolist())
    for r in range(len(causal)):
        window = [i for i in causal.short[r] if i > 0]
        for k in range(causal.target_offsets[r], causal.target_offsets[r + 1]):
            seen = window[: causal.target_len[k]]
            seq = seqs[1] if causal.targets[k] < 10 else seqs[2]
            j = seq.index(int(causal.targets[k]))
            assert seen == seq[j - len(seen): j]  # exactly the items right before the target
            assert len(seen) >= min(j, 2)  # at least half a window of history


def test_one_pass_equals_encoding_each_prefix_separately():
    model = causal_model()
    cfg = Config.from_preset("tiny", ["data.max_seq_len=6"])
    rng = np.random.default_rng(0)
    seqs = {u: rng.integers(1, 31, size=n).tolist() for u, n in ((0, 4), (1, 7), (2, 11))}
    shared = requests_from_sequences(seqs, cfg.data, causal=True)
    batch = collate(shared, np.arange(len(shared)), model.item_codes)
    assert batch.target_len is not None and len(shared) < shared.n_targets
    one_pass = model(batch)["ntp_loss"]
    per_prefix = []
    for r in range(len(shared)):
        window = [int(i) for i in shared.short[r] if i > 0]
        for k in range(shared.target_offsets[r], shared.target_offsets[r + 1]):
            hist = window[: shared.target_len[k]]
            short = torch.zeros(1, 6, dtype=torch.long)
            short[0, 6 - len(hist):] = torch.tensor(hist)
            single = Batch(user=torch.zeros(1, dtype=torch.long), short=short,
                           pos=torch.zeros(1, 1, dtype=torch.long),
                           long=torch.zeros(1, 1, dtype=torch.long),
                           target_codes=model.item_codes[[int(shared.targets[k])]])
            per_prefix.append(model(single)["ntp_loss"])
    torch.testing.assert_close(one_pass, torch.stack(per_prefix).mean())


def test_later_items_do_not_change_earlier_encoder_outputs():
    model = causal_model()
    short = torch.tensor([[0, 0, 3, 4, 5, 6]])
    changed = torch.tensor([[0, 0, 3, 4, 5, 9]])
    pad = torch.zeros(1, 1, dtype=torch.long)
    a, _ = model.encode(Batch(user=pad[:, 0], short=short, pos=pad, long=pad))
    b, _ = model.encode(Batch(user=pad[:, 0], short=changed, pos=pad, long=pad))
    torch.testing.assert_close(a[:, :4], b[:, :4])  # user token + the first three items
    assert not torch.allclose(a[:, 4], b[:, 4])

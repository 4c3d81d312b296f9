"""Training is bit-identical on several CPU threads (`onerec.determinism`, `train.deterministic`)."""

from __future__ import annotations

import hashlib

import pytest
import torch

from onerec.config import Config
from onerec.determinism import deterministic_kernels
from onerec.model import Batch, OneRec

from .test_train import fixture_data


def _skewed_model_and_batch() -> tuple[OneRec, Batch]:
    """A model and a training batch whose history slots repeat a few popular items, as real
    logs do: the backward of `table[items]` then adds many rows into the same row."""
    torch.manual_seed(0)
    cfg = Config.from_preset("tiny", ["model.d_model=64", "model.n_heads=2"]).model
    n_items, vocab = 400, [8, 8, 8]
    g = torch.Generator().manual_seed(0)
    codes = torch.stack([torch.randint(0, k, (n_items,), generator=g) for k in vocab], 1)
    codes = torch.cat([torch.zeros(1, 3, dtype=torch.long), codes])
    model = OneRec(cfg, item_codes=codes, vocab_sizes=vocab, n_user_buckets=5, max_seq_len=32,
                   max_pos_len=32)
    b, t = 64, 128

    def items(*shape: int) -> torch.Tensor:  # a heavy head: most slots hold a few items
        return 1 + (torch.rand(*shape, generator=g) ** 6 * (n_items - 1)).long()

    batch = Batch(user=torch.randint(0, 5, (b,), generator=g), short=items(b, 32),
                  pos=items(b, 32), long=items(b, 32), target_codes=codes[items(t)],
                  target_req=torch.randint(0, b, (t,), generator=g))
    return model, batch


def _grad_digests(model: OneRec, batch: Batch, repeats: int) -> set[str]:
    model.train()
    digests = set()
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        model(batch)["loss"].backward()
        h = hashlib.sha256()
        for p in model.parameters():
            if p.grad is not None:
                h.update(p.grad.numpy().tobytes())
        digests.add(h.hexdigest())
    return digests


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_the_models_backward_repeats_bit_for_bit_on_two_threads(two_threads):
    model, batch = _skewed_model_and_batch()
    with deterministic_kernels():
        assert len(_grad_digests(model, batch, repeats=6)) == 1


def test_the_context_turns_the_mode_on_and_restores_the_callers_setting():
    assert not torch.are_deterministic_algorithms_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    with deterministic_kernels():
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert not torch.utils.deterministic.fill_uninitialized_memory  # 14% of a step: off
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.utils.deterministic.fill_uninitialized_memory == fill
    with pytest.raises(RuntimeError), deterministic_kernels():
        raise RuntimeError("a failed step")
    assert not torch.are_deterministic_algorithms_enabled()  # restored on the way out too
    with deterministic_kernels(False):
        assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize("flag", [True, False])
def test_pretraining_runs_under_the_configs_setting(tmp_path, flag):
    from onerec.train import train

    cfg = Config.from_preset("tiny", ["train.max_steps=2", "train.log_every=1",
                                      f"train.deterministic={str(flag).lower()}"])
    _, _, codes, reqs = fixture_data(cfg)
    seen: list[bool] = []
    train(cfg, reqs, codes, [8, 8, 8], tmp_path, resume=False,
          log=lambda rec: seen.append(torch.are_deterministic_algorithms_enabled()))
    assert seen == [flag, flag]
    assert not torch.are_deterministic_algorithms_enabled()

"""bench.training: the split step is the model's step, and the measurement adds up."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from bench.training import GROUPS, REGIONS, Workload, measure, split_backward, split_forward
from onerec.checkpoint import build_model
from onerec.config import Config
from onerec.data.synthetic import make_dataset
from onerec.items import ItemSpace
from onerec.pretrain import build_codebook
from onerec.stream import collate, requests_from_events, requests_from_sequences
from onerec.tokenizer.embeddings import catalogue_from_kuairand
from onerec.train import measure_peak_flops


@pytest.fixture(scope="module")
def tiny() -> tuple[Config, ItemSpace, object]:
    cfg = Config.from_preset("tiny", ["model.dropout=0.1"])  # dropout: RNG order must match too
    ds = make_dataset(cfg.data)
    space = ItemSpace.from_codebook(build_codebook(cfg, catalogue_from_kuairand(ds)))
    return cfg, space, requests_from_events(ds.events, space.index, cfg.data)


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("causal", [False, True])
def test_split_step_gives_the_model_loss_and_gradients(tiny, causal):
    cfg, space, reqs = tiny
    if causal:  # causal encoder: sequence windows whose targets see a prefix (target_len)
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, causal_encoder=True))
        rng = np.random.default_rng(0)
        seqs = {u: list(rng.integers(1, len(space) + 1, 12)) for u in range(20)}
        reqs = requests_from_sequences(seqs, cfg.data, causal=True)
    model = build_model(cfg, space.codes, space.vocab_sizes).train()
    batch = collate(reqs, np.arange(min(16, len(reqs))), space.codes)
    torch.manual_seed(1)
    ref = model(batch)
    ref["loss"].backward()
    want = _grads(model)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    p = split_forward(model, batch)
    torch.testing.assert_close(p.loss, ref["loss"], rtol=0, atol=0)
    torch.testing.assert_close(p.ntp_loss, ref["ntp_loss"], rtol=0, atol=0)
    split_backward(p)
    got = _grads(model)
    assert got.keys() == want.keys()
    for name, g in want.items():
        torch.testing.assert_close(got[name], g, rtol=1e-5, atol=1e-7, msg=name)


def test_measure_reports_throughput_mfu_and_shares_that_sum_to_one(tiny):
    cfg, space, reqs = tiny
    w = Workload("tiny", cfg, reqs, space.codes, space.vocab_sizes, 4096, {})
    res = measure(w, steps=4, windows=2, warmup=1, profile_steps=2,
                  peak=measure_peak_flops(torch.device("cpu")), log=lambda _m: None)
    assert res["samples_per_s"] > 0 and res["requests_per_s"] > 0
    assert res["samples_per_s"] >= res["requests_per_s"]  # a request has >= 1 target
    assert 0 < res["mfu"] < 1
    assert len(res["windows"]) == 2 and res["steps_timed"] == 4
    for key in ("shares_profiler", "shares_wall"):
        sh = res[key]
        named = sum(sh[r] for r in REGIONS)
        assert sum(sh.values()) == pytest.approx(1.0)
        assert 0.9 < named <= 1.0 + 1e-6, (key, sh)  # the regions cover (almost) the step
        assert all(sh[r] > 0 for g in GROUPS.values() for r in g), (key, sh)


@pytest.mark.parametrize("det", [True, False])
def test_measure_times_the_steps_under_the_training_loops_determinism(tiny, det, monkeypatch):
    import bench.training as bt

    cfg, space, reqs = tiny
    seen: list[bool] = []
    step = bt.Run.step

    def probe(self, clock):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return step(self, clock)

    monkeypatch.setattr(bt.Run, "step", probe)
    w = Workload("tiny", cfg, reqs, space.codes, space.vocab_sizes, 4096, {})
    res = measure(w, steps=2, windows=1, warmup=0, profile_steps=1, peak=1e9,
                  log=lambda _m: None, deterministic=det)
    assert res["deterministic"] is det and seen == [det] * 3
    assert not torch.are_deterministic_algorithms_enabled()  # restored after

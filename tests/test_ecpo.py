"""ECPO: the early clip, group advantages, sampling log-probabilities, the alignment loop."""

from __future__ import annotations

import copy
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from onerec.checkpoint import CheckpointError, build_model, load_checkpoint, load_model
from onerec.config import Config, ConfigError
from onerec.data.synthetic import make_dataset
from onerec.ecpo import (
    align,
    ecpo_loss,
    group_advantages,
    sample_group,
    sequence_logprob,
)
from onerec.items import ItemSpace
from onerec.model import Batch
from onerec.reward import build_reward_model
from onerec.stream import requests_from_events
from onerec.train import train
from tests.test_generate import unique_codes

EPS, DELTA = 0.2, 0.1


pytestmark = pytest.mark.usefixtures("one_thread")


def grads(logp0: torch.Tensor, logp_old: torch.Tensor, adv: torch.Tensor,
          delta: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    logp = logp0.clone().requires_grad_(True)
    loss, _ = ecpo_loss(logp, logp_old, adv, clip_eps=EPS, early_clip_delta=delta)
    loss.backward()
    return loss.detach(), logp.grad


def test_ecpo_equals_grpo_when_no_negative_advantage_is_clipped_early():
    g = torch.Generator().manual_seed(0)
    logp_old = -torch.rand(64, generator=g) * 5
    # ratios in [0.5, 1 + eps + delta): the early clip never binds, whatever the sign of A
    ratio = 0.5 + torch.rand(64, generator=g) * (0.5 + EPS + DELTA - 1e-3)
    adv = torch.randn(64, generator=g)
    logp = logp_old + ratio.log()
    l_e, g_e = grads(logp, logp_old, adv, DELTA)
    l_g, g_g = grads(logp, logp_old, adv, None)
    torch.testing.assert_close(l_e, l_g)
    torch.testing.assert_close(g_e, g_g)
    # positive advantages are never early-clipped, however far the ratio moved
    big = logp_old + math.log(10.0)
    pos = adv.abs()
    torch.testing.assert_close(grads(big, logp_old, pos, DELTA), grads(big, logp_old, pos, None))


def test_early_clip_bounds_the_gradient_of_negative_advantages():
    logp_old = torch.tensor([-3.0, -3.0, -3.0])
    logp = logp_old + torch.tensor([math.log(10.0), math.log(3.0), math.log(1.05)])
    adv = torch.tensor([-1.0, -2.0, -1.0])
    _, g_grpo = grads(logp, logp_old, adv, None)
    _, g_ecpo = grads(logp, logp_old, adv, DELTA)
    n = 3
    # d loss / d logp = -A * ratio / n on the unclipped branch: GRPO scales with the ratio
    torch.testing.assert_close(g_grpo, torch.tensor([10.0 * 1, 3.0 * 2, 1.05 * 1]) / n)
    bound = (1 + EPS + DELTA) * adv.abs() / n
    assert (g_ecpo.abs() <= bound + 1e-6).all()
    torch.testing.assert_close(g_ecpo[:2], bound[:2])  # clipped exactly at 1 + eps + delta
    torch.testing.assert_close(g_ecpo[2], g_grpo[2])  # a small ratio is left alone
    _, stats = ecpo_loss(logp, logp_old, adv, clip_eps=EPS, early_clip_delta=DELTA)
    assert stats["early_clip_frac"] == pytest.approx(2 / 3)


def test_group_advantages_are_normalised_within_each_group():
    r = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0], [0.0, 9.0, 1.0, 3.0]])
    valid = torch.tensor([[True] * 4, [True] * 4, [False, False, True, True]])
    a = group_advantages(r, valid)
    torch.testing.assert_close(a[0].mean(), torch.tensor(0.0))
    torch.testing.assert_close(a[0].std(unbiased=False), torch.tensor(1.0), atol=1e-4, rtol=0)
    assert (a[1] == 0).all()  # equal rewards: no preference
    assert a[2, 0] == 0 and a[2, 1] == 0 and a[2, 2] < 0 < a[2, 3]


def tiny_policy(vocab=(2, 3, 2), n_items=6):
    cfg = Config.from_preset("tiny")
    g = torch.Generator().manual_seed(1)
    codes = torch.cat([torch.zeros(1, len(vocab), dtype=torch.long),
                       torch.stack([torch.randint(0, k, (n_items,), generator=g)
                                    for k in vocab], 1)])
    return cfg, build_model(cfg, codes, list(vocab)).eval(), codes


def test_sequence_logprob_is_a_distribution_over_semantic_ids():
    _cfg, model, _codes = tiny_policy()
    ctx = Batch(user=torch.zeros(2, dtype=torch.long), short=torch.tensor([[0, 1, 2], [3, 4, 5]]),
                pos=torch.tensor([[0, 1], [0, 0]]), long=torch.tensor([[1, 2], [0, 6]]))
    every = torch.tensor(list(itertools.product(*(range(k) for k in model.vocab_sizes))))
    with torch.no_grad():
        logp, _ = sequence_logprob(model, ctx, every.unsqueeze(0).expand(2, -1, -1))
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(2))
    # sampling follows those probabilities: the most likely ID is sampled most often
    codes = sample_group(model, ctx, 400, generator=torch.Generator().manual_seed(0))
    assert codes.shape == (2, 400, 3)
    counts = (codes[0].unsqueeze(1) == every.unsqueeze(0)).all(-1).float().mean(0)
    assert abs(float(counts[logp[0].argmax()]) - float(logp[0].exp().max())) < 0.08


@pytest.fixture(scope="module")
def aligned_setup():
    cfg = Config.from_preset("tiny", ["align.steps=3", "align.checkpoint_every=2",
                                      "align.demoted_authors=[1, 2]", "align.fresh_days=5"])
    ds = make_dataset(cfg.data)
    item_ids = ds.items["video_id"].to_numpy()
    vocab = [4, 4, 4]
    codes = unique_codes(tuple(vocab), len(item_ids), seed=0)  # distinct, as a codebook's
    space = ItemSpace(item_ids=item_ids, codes=codes, vocab_sizes=vocab, fingerprint="cb-test")
    reqs = requests_from_events(ds.events, space.index, cfg.data)
    rm = build_reward_model(cfg, codes, vocab).eval()
    rm.item_ids, rm.codebook_fingerprint = item_ids, "cb-test"
    return cfg, ds, space, reqs, rm


@pytest.mark.parametrize("early_clip, sync_every", [(True, 1), (False, 2)])
def test_align_logs_its_signals_and_writes_a_pretraining_format_checkpoint(
        tmp_path, aligned_setup, early_clip, sync_every):
    cfg, ds, space, reqs, rm = aligned_setup
    cfg = Config.from_dict({**cfg.to_dict(), "align": {**cfg.align.__dict__,
                                                       "early_clip": early_clip,
                                                       "sync_every": sync_every}})
    policy = build_model(cfg, space.codes, space.vocab_sizes)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    model, res = align(cfg, policy, rm, reqs, space, tmp_path, items_table=ds.items)
    assert res.steps == 3 and len(res.history) == 3
    rec = res.history[-1]
    for key in ("reward", "pscore", "legality", "kl", "grad_norm", "clip_frac",
                "early_clip_frac", "ntp_loss", "distinct"):
        assert np.isfinite(rec[key]), key
    assert 0.0 <= rec["legality"] <= 1.0 and rec["kl"] >= 0.0
    if not early_clip:
        assert all(h["early_clip_frac"] == 0.0 for h in res.history)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    # serving/export load it like a pretrained checkpoint
    ck = load_checkpoint(res.checkpoint, "cb-test")
    meta = json.loads((res.checkpoint / "meta.json").read_text())
    assert meta["step"] == 3 and meta["algorithm"] == ("ecpo" if early_clip else "grpo")
    back, cfg2, _ = load_model(res.checkpoint, "cb-test")
    assert cfg2.align.early_clip is early_clip and ck["state"]["step"] == 3
    for k, v in model.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v)


def assert_same_state(a, b, where: str = "state") -> None:
    """Bit-for-bit equality of two checkpoint states: torch.equal on every tensor, == on the
    rest, recursing into dicts and lists; wall times (`wall_s`) are the only values skipped."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, set(a) ^ set(b))
        for k in a:
            if k != "wall_s":
                assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), where
    else:
        assert a == b, (where, a, b)


@pytest.mark.parametrize("sync_every", [1, 2])
def test_align_resumes_from_its_checkpoint_exactly(tmp_path, aligned_setup, sync_every):
    """Stopped after round 3 (with sync_every=2: between two copies into the sampler, so the
    sampler's own weights must come back), resumed to round 5: the uninterrupted run's weights,
    optimizer, RNG states, stream position and history."""
    cfg, ds, space, reqs, rm = aligned_setup
    cfg = Config.from_dict({**cfg.to_dict(), "align": {**cfg.align.__dict__,
                                                       "sync_every": sync_every}})
    messages: list[str] = []

    def run(out, steps, resume=False):
        policy = build_model(cfg, space.codes, space.vocab_sizes)
        return align(cfg, policy, rm, reqs, space, out, items_table=ds.items, steps=steps,
                     resume=resume, log=lambda r: messages.append(r.get("message", "")))

    full, res_full = run(tmp_path / "full", 5)
    run(tmp_path / "part", 3)
    resumed, res = run(tmp_path / "part", 5, resume=True)
    assert f"resuming alignment from {tmp_path / 'part' / 'checkpoint'} at round 3 of 5" in messages
    assert res.steps == res_full.steps == 5 and len(res.history) == 5
    assert_same_state(full.state_dict(), resumed.state_dict(), "model")
    assert_same_state(res_full.history, res.history, "history")
    a = load_checkpoint(res_full.checkpoint)["state"]
    b = load_checkpoint(res.checkpoint)["state"]
    assert_same_state(a, b)
    assert (b["align"]["sampler"] is None) == (sync_every == 1)
    # a resume with nothing left to do returns the finished run as it is
    again, res_again = run(tmp_path / "part", 5, resume=True)
    assert res_again.steps == 5 and len(res_again.history) == 5
    assert_same_state(full.state_dict(), again.state_dict(), "model")


def test_align_refuses_to_resume_a_checkpoint_it_cannot_continue(tmp_path, aligned_setup):
    cfg, ds, space, reqs, rm = aligned_setup

    def run(out, c=cfg, reward=rm, steps=2):
        policy = build_model(c, space.codes, space.vocab_sizes)
        return align(c, policy, reward, reqs, space, out, items_table=ds.items, steps=steps,
                     resume=True)

    run(tmp_path / "a")
    lr = Config.from_dict({**cfg.to_dict(), "align": {**cfg.align.__dict__, "lr": 1e-3}})
    with pytest.raises(CheckpointError, match=r"other settings \(align.lr: 1e-05 -> 0.001"):
        run(tmp_path / "a", c=lr, steps=3)
    other_rm = copy.deepcopy(rm)
    with torch.no_grad():
        next(other_rm.parameters()).add_(1.0)
    with pytest.raises(CheckpointError, match="the reward model differs"):
        run(tmp_path / "a", reward=other_rm, steps=3)
    # a pretraining checkpoint in the folder: not something alignment can continue
    train(cfg, reqs, space.codes, space.vocab_sizes, tmp_path / "pre",
          codebook_fingerprint=space.fingerprint, max_steps=1, resume=False)
    with pytest.raises(CheckpointError, match="not an alignment checkpoint"):
        run(tmp_path / "pre")
    with pytest.raises(ConfigError, match=r"align\.checkpoint_every: must be > 0"):
        Config.from_preset("tiny", ["align.checkpoint_every=0"])


def test_pipeline_reward_and_align_stages_run_on_the_shipped_sample(tmp_path):
    """The continuous-training stages (onerec.stages) drive this module's API end to end."""
    from onerec import stages

    data = Path(__file__).resolve().parents[1] / "data" / "kuairand-pure"
    cfg = Config.from_preset("tiny", ["align.steps=2", "reward.steps=3"])
    root = tmp_path / "state"
    stages.validate(cfg, data, tmp_path / "snap", until="2022-04-26", root=root)
    stages.refresh_codebook(cfg, tmp_path / "snap", tmp_path / "cb", root=root)
    stages.pretrain(cfg, tmp_path / "snap", tmp_path / "cb", tmp_path / "pre", root=root,
                    max_steps=2)
    rm = stages.train_reward(cfg, tmp_path / "snap", tmp_path / "cb", tmp_path / "rm")
    assert rm["steps"] == 3 and "click" in rm["metrics"]
    # the run pages' data: calibration bins over every held-out impression, the histories
    assert set(rm["calibration"]) == set(rm["metrics"])
    assert sum(rm["calibration"]["pscore"]["count"]) == rm["n_heldout_impressions"] > 0
    assert len(json.loads((tmp_path / "pre" / "history.json").read_text())) >= 1
    out = stages.align(cfg, tmp_path / "snap", tmp_path / "cb", tmp_path / "pre", tmp_path / "rm",
                       tmp_path / "aligned")
    assert out["aligned"] and out["align_steps"] == 2
    history = json.loads((tmp_path / "aligned" / "history.json").read_text())
    assert [r["step"] for r in history] == [1, 2] and all("clip_frac" in r for r in history)
    load_checkpoint(tmp_path / "aligned" / "checkpoint")


# -- one recipe: every alignment setting reaches it ----------------------------------------------
class _Crash(RuntimeError):
    pass


# a changed value per AlignConfig field; the base run (ALIGN_BASE) is sharp enough that ratio
# clipping and the early clip bite within its 3 rounds
ALIGN_BASE = ["align.steps=3", "align.checkpoint_every=2", "align.log_every=1", "align.lr=0.05",
              "align.ppo_epochs=3", "align.demoted_authors=[1, 2]", "align.fresh_days=10"]
ALIGN_CHANGES = {
    "group_size": 3, "clip_eps": 0.05, "early_clip": False, "early_clip_delta": 2.0,
    "ntp_loss_weight": 0.0, "lr": 0.01, "steps": 2, "batch_size": 4, "ppo_epochs": 1,
    "sync_every": 2, "temperature": 0.5, "kl_weight": 1.0, "grad_clip": 1e-3,
    "format_weight": 0.0, "format_k": 1, "format_select": "topk", "industrial_weight": 0.0,
    "demoted_authors": [3], "author_penalty": 1.0, "fresh_days": 20.0, "fresh_bonus": 1.0,
    "diversity_weight": 1.0,
    "checkpoint_every": 3,
    "log_every": 2, "seed": 7}


def _align_behaviour(overrides: list[str], setup, out: Path) -> tuple:
    """What alignment did: its weights after round 3, its logged signals (no timings), and the
    round of the checkpoint an interruption right after round 3's log line leaves."""
    _, ds, space, reqs, rm = setup
    cfg = Config.from_preset("tiny", overrides)
    policy = build_model(cfg, space.codes, space.vocab_sizes)
    logged: list[dict] = []

    def log(rec: dict) -> None:
        logged.append({k: v for k, v in rec.items() if "_s" not in k and k != "message"})
        if rec.get("step") == 3:
            raise _Crash  # after round 3's update, before its checkpoint
    finished = True
    try:
        align(cfg, policy, rm, reqs, space, out, items_table=ds.items, log=log)
    except _Crash:
        finished = False
    meta = out / "checkpoint" / "meta.json"
    left = json.loads(meta.read_text())["step"] if meta.exists() else None
    return {k: v.clone() for k, v in policy.state_dict().items()}, logged, left, finished


def test_every_alignment_setting_changes_what_alignment_does(tmp_path, aligned_setup):
    """Each field of `cfg.align` reaches `onerec.ecpo.align` (the one recipe of the pipeline's
    align stage and `onerec align`): changing it changes the weights, the logged signals or the
    checkpoint left behind."""
    import dataclasses

    from onerec.config import AlignConfig

    assert set(ALIGN_CHANGES) == {f.name for f in dataclasses.fields(AlignConfig)}
    base = _align_behaviour(ALIGN_BASE, aligned_setup, tmp_path / "base")
    assert base[2] == 2 and len(base[1]) == 3 and not base[3]
    assert _same_align(_align_behaviour(ALIGN_BASE, aligned_setup, tmp_path / "again"), base)
    unchanged = [name for name, value in ALIGN_CHANGES.items()
                 if _same_align(_align_behaviour([*ALIGN_BASE, f"align.{name}={value}"],
                                                 aligned_setup, tmp_path / name), base)]
    assert unchanged == []


def _same_align(a: tuple, b: tuple) -> bool:
    same_w = a[0].keys() == b[0].keys() and all(
        a[0][k].shape == b[0][k].shape and torch.equal(a[0][k], b[0][k]) for k in a[0])
    return same_w and json.dumps(a[1:], sort_keys=True, default=str) == json.dumps(
        b[1:], sort_keys=True, default=str)


def _first_level_entropy(model, reqs, space) -> float:
    """Mean entropy (nats) of the policy's first-level code over 16 users' contexts."""
    from onerec.stream import collate

    batch = collate(reqs, np.arange(16), space.codes)
    ctx = Batch(batch.user, batch.short, batch.pos, batch.long)
    with torch.no_grad():
        memory, mask = model.encode(ctx)
        hidden, _ = model.decode(torch.zeros(16, 0, dtype=torch.long), memory, mask, group=1)
        p = model.level_logits(hidden[:, -1], 0).float().softmax(-1)
    return float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean())


def test_the_diversity_reward_keeps_the_aligned_policy_spread_over_first_level_clusters(
        tmp_path, aligned_setup):
    """With the P-Score alone, alignment concentrates the policy on the first-level clusters the
    reward model likes; align.diversity_weight penalises crowded clusters within each group, so
    the same run ends with a flatter first-level distribution."""
    _, ds, space, reqs, rm = aligned_setup
    ent = {}
    for w in (0.0, 2.0):
        cfg = Config.from_preset("tiny", ["align.steps=12", "align.lr=0.02", "align.kl_weight=0",
                                          "align.ntp_loss_weight=0", "align.format_weight=0",
                                          f"align.diversity_weight={w}", "align.checkpoint_every=100"])
        torch.manual_seed(0)
        policy = build_model(cfg, space.codes, space.vocab_sizes)
        if w == 0.0:
            ent["start"] = _first_level_entropy(policy, reqs, space)
        model, _ = align(cfg, policy, rm, reqs, space, tmp_path / f"w{w}", items_table=ds.items)
        ent[w] = _first_level_entropy(model, reqs, space)
    assert ent[0.0] < ent["start"] - 0.5  # the P-Score alone narrows the first level
    assert ent[2.0] > ent[0.0] + 0.5, ent  # the diversity reward keeps it spread

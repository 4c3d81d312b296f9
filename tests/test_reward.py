"""P-Score reward model, duration-aware shaping, format and industrial rewards, RM selection."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from onerec.config import Config, ConfigError
from onerec.data.synthetic import make_dataset
from onerec.evaluate import auc, split_cut_ms
from onerec.items import ItemSpace
from onerec.model import Batch
from onerec.reward import (
    TASKS,
    DurationShaper,
    RewardModelError,
    build_reward_model,
    ece,
    load_reward_model,
    loss_fn,
    predict,
    reward_data,
    reward_metrics,
    rm_select,
    save_reward_model,
    train_reward_model,
)
from onerec.rewards import IndustrialRules, format_advantage

VOCAB = [4, 4, 3]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one thread is faster than two fighting over a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_codes(n_items: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    codes = torch.stack([torch.randint(0, k, (n_items,), generator=g) for k in VOCAB], 1)
    return torch.cat([torch.zeros(1, len(VOCAB), dtype=torch.long), codes])


@pytest.fixture(scope="module")
def tiny():
    cfg = Config.from_preset("tiny", ["reward.steps=40"])
    ds = make_dataset(cfg.data)
    item_ids = ds.items["video_id"].to_numpy()
    index = {int(v): i + 1 for i, v in enumerate(item_ids)}
    ev = ds.events
    shaper = DurationShaper.fit(ev["duration_ms"].to_numpy(), ev["play_time_ms"].to_numpy(),
                                cfg.reward.duration_buckets)
    data = reward_data(ev, index, cfg, shaper)
    codes = random_codes(len(item_ids))
    return cfg, ds, item_ids, codes, shaper, data


def make_rm(cfg, codes, item_ids):
    rm = build_reward_model(cfg, codes, VOCAB)
    rm.item_ids = np.asarray(item_ids)
    rm.codebook_fingerprint = "cb-test"
    return rm


def test_duration_shaper_ranks_watch_time_within_its_duration_bucket():
    rng = np.random.default_rng(0)
    short_d = np.full(1000, 10_000.0)
    long_d = np.full(1000, 300_000.0)
    dur = np.concatenate([short_d, long_d])
    play = np.concatenate([rng.uniform(0, 10_000, 1000), rng.uniform(0, 300_000, 1000)])
    shaper = DurationShaper.fit(dur, play, n_buckets=2)
    p = shaper(np.array([10_000.0, 10_000.0, 300_000.0]), np.array([2_000.0, 9_000.0, 9_000.0]))
    assert p[0] < p[1]  # longer watch, higher percentile
    assert p[1] > 0.8 and p[2] < 0.1  # 9 s is most of a short video, little of a long one
    assert np.all((p >= 0) & (p <= 1))


def test_labels_come_from_each_impressions_own_feedback(tiny):
    _cfg, ds, _ids, _codes, shaper, data = tiny
    ev = ds.events.reset_index(drop=True)
    rows = data.reqs.target_rows
    assert len(rows) == data.labels.shape[0] == len(data.target_req)
    np.testing.assert_array_equal(data.labels[:, 0], ev["is_click"].to_numpy()[rows])
    np.testing.assert_array_equal(data.labels[:, 3], ev["is_follow"].to_numpy()[rows])
    np.testing.assert_allclose(data.labels[:, 5], shaper(ev["duration_ms"].to_numpy()[rows],
                                                         ev["play_time_ms"].to_numpy()[rows]))
    # every impression is a target once, and the target is that impression's video
    assert sorted(rows.tolist()) == list(range(len(ev)))
    index = {int(v): i + 1 for i, v in enumerate(_ids)}
    assert [index[v] for v in ev["video_id"].to_numpy()[rows]] == data.reqs.targets.tolist()


def test_reward_model_loss_falls_on_tiny_data(tiny):
    cfg, _ds, item_ids, codes, _shaper, data = tiny
    rm = make_rm(cfg, codes, item_ids)
    idx = np.arange(len(data.labels))

    def full_loss() -> float:
        pred = predict(rm, data, idx)
        out = {"logits": torch.logit(torch.from_numpy(pred["probs"]).float(), eps=1e-6),
               "probs": torch.from_numpy(pred["probs"]).float(),
               "pscore": torch.from_numpy(pred["pscore"]).float()}
        return float(loss_fn(out, torch.from_numpy(data.labels), 1.0)["loss"])

    before = full_loss()
    res = train_reward_model(cfg, data, idx, rm)
    after = full_loss()
    assert res.steps == cfg.reward.steps
    assert after < before - 0.05, (before, after)
    metrics = reward_metrics(predict(rm, data, idx), data.labels[idx])
    assert set(metrics) == {*TASKS, "pscore"}
    assert metrics["click"]["auc"] > 0.55  # synthetic clicks follow taste: learnable
    assert abs(metrics["click"]["mean_pred"] - metrics["click"]["mean_obs"]) < 0.1


def test_auc_and_ece_on_known_values():
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert auc(np.array([0.5, 0.5]), np.array([0, 1])) == pytest.approx(0.5)
    assert np.isnan(auc(np.array([0.1, 0.2]), np.array([1, 1])))
    # two bins, each half the data: |0 - 0.2| and |1 - 0.9| -> 0.5 * 0.2 + 0.5 * 0.1
    assert ece(np.array([0.2, 0.2, 0.9, 0.9]), np.array([0, 0, 1, 1]), 2) == pytest.approx(0.15)


def test_pscore_is_a_personalised_convex_fusion(tiny):
    cfg, _ds, item_ids, codes, _shaper, data = tiny
    rm = make_rm(cfg, codes, item_ids).eval()
    r = data.reqs
    ctx = Batch(user=torch.from_numpy(r.user[:4]), short=torch.from_numpy(r.short[:4]),
                pos=torch.from_numpy(r.pos[:4]), long=torch.from_numpy(r.long[:4]))
    out = rm(ctx, torch.tensor([[1, 2, 3]] * 4))
    w = out["weights"]
    torch.testing.assert_close(w.sum(-1), torch.ones(4, 3))
    assert (w > 0).all()
    torch.testing.assert_close(out["pscore"], (w * out["probs"]).sum(-1))
    assert ((out["pscore"] >= 0) & (out["pscore"] <= 1)).all()


def test_save_load_round_trip_and_codebook_refusal(tmp_path, tiny):
    cfg, _ds, item_ids, codes, shaper, data = tiny
    rm = make_rm(cfg, codes, item_ids).eval()
    path = save_reward_model(tmp_path / "rm", rm, cfg, shaper, {"click": {"auc": 0.7}})
    back, cfg2, shaper2 = load_reward_model(path, "cb-test")
    assert cfg2 == cfg and shaper2 is not None
    np.testing.assert_array_equal(back.item_ids, item_ids)
    idx = np.arange(50)
    np.testing.assert_allclose(predict(back, data, idx)["pscore"], predict(rm, data, idx)["pscore"])
    with pytest.raises(RewardModelError, match="codebook"):
        load_reward_model(path, "another-codebook")
    with pytest.raises(RewardModelError, match="missing"):
        load_reward_model(tmp_path / "nowhere")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps({**meta, "codebook_fingerprint": None}))
    with pytest.raises(RewardModelError, match="records no codebook fingerprint"):
        load_reward_model(path, "cb-test")


def test_the_package_exports_every_public_name_of_its_modules():
    """`from onerec.reward import X` is the way in: each module's public names are there."""
    import importlib

    import onerec.reward as rw

    for name in ("shaper", "model", "data", "train", "metrics", "io", "selection"):
        mod = importlib.import_module(f"onerec.reward.{name}")
        assert mod.__doc__, name
        own = {k for k, v in vars(mod).items() if not k.startswith("_")
               and getattr(v, "__module__", mod.__name__) == mod.__name__
               and not isinstance(v, type(importlib))}
        assert own <= set(rw.__all__), (name, own - set(rw.__all__))
    assert all(getattr(rw, k) is not None for k in rw.__all__)


def test_rm_select_returns_the_top_k_by_pscore(tiny):
    cfg, _ds, item_ids, codes, _shaper, data = tiny
    rm = make_rm(cfg, codes, item_ids).eval()
    r = data.reqs
    ctx = Batch(user=torch.from_numpy(r.user[:2]), short=torch.from_numpy(r.short[:2]),
                pos=torch.from_numpy(r.pos[:2]), long=torch.from_numpy(r.long[:2]))
    cands = [[int(v) for v in item_ids[:8]] + [int(item_ids[0])], [int(item_ids[3]), 10**9]]
    out = rm_select(rm, ctx, cands, k=3)
    scores = rm.pscore(ctx, torch.arange(1, 9).unsqueeze(0).expand(2, -1))[0]
    expect = [int(item_ids[j]) for j in scores.argsort(descending=True)[:3].tolist()]
    assert out[0] == expect
    assert out[1] == [int(item_ids[3]), 10**9]  # unknown video last, duplicates once
    with pytest.raises(ValueError, match="k must be"):
        rm_select(rm, ctx, cands, k=0)


def test_format_advantage_rewards_k_random_legal_samples_and_punishes_illegal():
    legal = torch.tensor([[True, True, True, False, True, False],
                          [True, True, True, True, True, True]])
    adv = format_advantage(legal, k=2, generator=torch.Generator().manual_seed(0))
    assert (adv[0][~legal[0]] < 0).all()
    assert int((adv[0] > 0).sum()) == 2 and (adv[0][legal[0]] >= 0).all()
    assert (adv[1] == 0).all()  # nothing illegal: nothing to learn
    picks = {tuple((format_advantage(legal[:1], 2, torch.Generator().manual_seed(s))[0] > 0)
                   .nonzero().flatten().tolist()) for s in range(20)}
    assert len(picks) > 1  # the chosen legal samples vary (random k, not the same ones)


def test_industrial_rules_demote_authors_and_boost_fresh_uploads():
    items = pd.DataFrame({"video_id": [10, 11, 12], "author_id": [1, 2, 3],
                          "upload_date": [20220501, 20220420, 20220430]})
    cfg = Config.from_preset("tiny", ["align.demoted_authors=[2]", "align.author_penalty=0.5",
                                      "align.fresh_days=3", "align.fresh_bonus=0.1"]).align
    rules = IndustrialRules.from_config(cfg, items, np.array([10, 11, 12, 99]))
    now = torch.tensor([pd.Timestamp("2022-05-02", tz="UTC").value // 10**6])
    r = rules(torch.tensor([[1, 2, 3, 4, 0]]), now)
    # item 10: fresh (1 day); 11: demoted, 12 days old; 12: 2 days; 99 unknown; 0 no video
    torch.testing.assert_close(r, torch.tensor([[0.1, -0.5, 0.1, 0.0, 0.0]]))


@pytest.mark.parametrize("override, key", [
    ("align.group_size=1", "align.group_size"),
    ("align.format_k=9", "align.format_k"),
    ("align.temperature=0", "align.temperature"),
    ("align.early_clip=maybe", "align.early_clip"),
    ("align.demoted_authors=[a]", "align.demoted_authors[0]"),
    ("align.fresh_days=-1", "align.fresh_days"),
    ("reward.d_model=15", "reward.d_model"),
    ("reward.dropout=1.0", "reward.dropout"),
    ("reward.duration_buckets=0", "reward.duration_buckets"),
    ("reward.n_tasks=3", "reward.n_tasks"),
])
def test_invalid_alignment_settings_are_rejected_by_name(override, key):
    with pytest.raises(ConfigError) as e:
        Config.from_preset("tiny", [override])
    assert str(e.value).startswith(key)


def test_heldout_split_is_by_request_time(tiny):
    _cfg, ds, *_rest, data = tiny
    cut = split_cut_ms(ds.events, 2)
    tr, te = data.split(cut)
    assert len(tr) and len(te) and len(tr) + len(te) == len(data.labels)
    assert data.target_time[tr].max() < cut <= data.target_time[te].min()


# -- one recipe: every reward setting reaches it -------------------------------------------------
def _behaviour(cfg: Config, ds, space, out) -> tuple:
    """What the recipe did under `cfg`: the weights it saved, its held-out metrics and
    calibration, and the log records of its run."""
    from onerec.reward import fit_p_score

    logged: list[dict] = []
    model, summary = fit_p_score(cfg, ds.events, space, split_cut_ms(ds.events, 1), out,
                                 log=logged.append)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    losses = [{k: v for k, v in r.items() if k == "step" or "loss" in k} for r in logged]
    return weights, summary["metrics"], summary["calibration"], summary["steps"], losses


# a changed value per RewardConfig field (the tiny preset's values stay valid)
CHANGES = {"d_model": 24, "n_heads": 4, "n_layers": 2, "hidden": 48, "max_seq_len": 3,
           "max_pos_seq_len": 3, "dropout": 0.3, "batch_size": 64, "lr": 1e-2,
           "weight_decay": 0.5, "steps": 9, "warmup_steps": 5, "grad_clip": 1e-3,
           "fusion_weight": 3.0, "duration_buckets": 2, "calibration_bins": 3, "log_every": 2,
           "seed": 7}


def test_every_reward_setting_changes_what_the_recipe_does(tiny, tmp_path):
    """`fit_p_score` is the one recipe of the reward stage and `onerec align`: each field of
    `cfg.reward` must reach it (no module sets a hyperparameter of its own)."""
    import dataclasses

    from onerec.config import RewardConfig

    _, ds, item_ids, codes, _, _ = tiny
    assert set(CHANGES) == {f.name for f in dataclasses.fields(RewardConfig)}
    space = ItemSpace(item_ids=np.asarray(item_ids), codes=codes, vocab_sizes=VOCAB,
                      fingerprint="cb-test")
    base_cfg = Config.from_preset("tiny", ["reward.steps=8", "reward.log_every=4"])
    base = _behaviour(base_cfg, ds, space, tmp_path / "base")
    assert _same(_behaviour(base_cfg, ds, space, tmp_path / "again"), base)  # deterministic
    for name, value in CHANGES.items():
        cfg = Config.from_preset("tiny", ["reward.steps=8", "reward.log_every=4",
                                          f"reward.{name}={value}"])
        got = _behaviour(cfg, ds, space, tmp_path / name)
        assert not _same(got, base), f"reward.{name}={value} changed nothing"


def _same(a: tuple, b: tuple) -> bool:
    wa, wb = a[0], b[0]
    same_w = wa.keys() == wb.keys() and all(
        wa[k].shape == wb[k].shape and torch.equal(wa[k], wb[k]) for k in wa)
    return same_w and _plain(a[1:]) == _plain(b[1:])


def _plain(x):
    import json

    return json.dumps(x, sort_keys=True, default=str)

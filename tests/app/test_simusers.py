"""The simulated KuaiRand users: a behaviour model that beats the baselines on held-out days,
and feedback on served slates that decides for the arm whose videos users engage with more."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from onerec import ab
from onerec.app import simusers
from onerec.data import kuairand


@pytest.fixture(scope="module")
def logs(shipped_dir) -> tuple[pd.DataFrame, pd.DataFrame]:
    return kuairand.read_events(shipped_dir), kuairand.read_items(shipped_dir)


@pytest.fixture(scope="module")
def world(logs) -> simusers.BehaviourModel:
    return simusers.BehaviourModel.fit(*logs)


def test_behaviour_model_beats_global_and_per_user_rates_on_held_out_days(logs):
    check = simusers.holdout(*logs, days=2)
    assert check["test_rows"] > 20_000 and check["train_rows"] > 150_000
    for target in simusers.TARGETS:
        m = check["metrics"][target]
        assert m["global"]["auc"] == 0.5
        assert m["model"]["log_loss"] < m["user"]["log_loss"] < m["global"]["log_loss"], m
        assert m["model"]["auc"] > m["user"]["auc"] + 0.02, m


def test_probabilities_are_in_range_and_long_views_need_clicks(world, logs):
    events = logs[0]
    users = world.user_ids[:50, None]
    pc, pl = world.predict(users, world.video_ids[None, :200])
    assert pc.shape == pl.shape == (50, 200)
    assert ((pc > 0) & (pc < 1)).all() and ((pl > 0) & (pl <= pc)).all()
    # the fitted rates match the log's on the logged impressions
    pc_log, pl_log = world.predict(events["user_id"].to_numpy(), events["video_id"].to_numpy())
    assert pc_log.mean() == pytest.approx(events["is_click"].mean(), abs=0.02)
    assert pl_log.mean() == pytest.approx(events["long_view"].mean(), abs=0.02)


def test_unknown_users_and_never_logged_videos_fall_back(world, logs):
    events, items = logs
    never_logged = np.setdiff1d(items["video_id"].to_numpy(np.int64),
                                events["video_id"].to_numpy(np.int64))
    assert len(never_logged) > 100
    unknown_user = int(events["user_id"].max()) + 1
    pc, _ = world.predict(np.full(len(never_logged), unknown_user), never_logged)
    assert np.isfinite(pc).all()
    assert pc.std() > 0.01  # the video features still tell the videos apart
    outside = world.predict([unknown_user], [10**9])[0][0]  # no features either: the base rate
    assert 0.2 < outside < 0.7


def _feedback(world, canary_slates, stable_slates, pct=30.0, n=40_000, seed=0):
    rng = np.random.default_rng(seed)
    users = world.draw_users(n, rng)
    arms = ab.TrafficSplitter(pct, salt="v2").arms(users)
    uniq = np.unique(users)
    slates = {}
    for u, c, s in zip(uniq, canary_slates(uniq), stable_slates(uniq), strict=True):
        slates[int(u)] = (c if ab.TrafficSplitter(pct, salt="v2").arm(int(u)) == "canary"
                          else s).tolist()
    return simusers.served_feedback(world, users, arms, slates, seed=seed)


def test_feedback_from_slates_promotes_better_videos_and_rolls_back_worse(world):
    rng = np.random.default_rng(1)

    def best(users):  # an oracle of this world: each user's top 10
        return world.top_videos(users, 10, candidates=world.video_ids[:2000])

    def random(users):
        return rng.choice(world.video_ids, size=(len(users), 10))

    good = _feedback(world, best, random, seed=2)
    assert (good.groupby("user_id")["variant"].nunique() == 1).all()  # sticky
    assert set(good["impressions"]) == {10}
    assert good["reward"].between(0, 2).all()
    r = ab.analyze(good, mde=0.05)
    assert r.decision == "promote", r.summary()
    per_arm = good.groupby("variant")["p_click"].mean()
    assert per_arm["canary"] > per_arm["stable"] + 0.05
    bad = _feedback(world, random, best, seed=3)
    assert ab.analyze(bad, mde=0.05).decision == "rollback"


def test_identical_slates_are_not_promoted(world):
    fixed = world.video_ids[100:110]

    def same(users):
        return np.tile(fixed, (len(users), 1))

    for seed in range(3):
        fb = _feedback(world, same, same, seed=seed)
        r = ab.analyze(fb, mde=0.05)
        assert r.decision != "promote", r.summary()
        assert abs(r.lift) < 0.05


def test_slate_p_click_is_the_models_mean_over_the_shown_videos(world):
    users = world.user_ids[:3]
    slates = {int(users[0]): [int(v) for v in world.video_ids[:5]],
              int(users[1]): [int(v) for v in world.video_ids[5:8]], int(users[2]): []}
    fb = simusers.served_feedback(world, np.repeat(users, 2), np.array(["stable"] * 6), slates)
    assert fb["impressions"].tolist() == [5, 5, 3, 3, 0, 0]
    pc, _ = world.predict(np.full(5, users[0]), world.video_ids[:5])
    assert fb["p_click"].iloc[0] == pytest.approx(pc.mean())
    assert (fb.loc[fb["impressions"] == 0, ["clicks", "reward", "p_click"]] == 0).all().all()
    assert (fb["long_views"] <= fb["clicks"]).all()

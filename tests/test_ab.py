"""The traffic split is sticky and follows the percentage; the A/B analysis decides right."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from onerec import ab


def synthetic(n_stable: int, n_canary: int, effect: float, seed: int = 0,
              mean: float = 1.0, sd: float = 0.5, requests: int = 3) -> pd.DataFrame:
    """Per-request rewards of users with a known canary effect (relative)."""
    rng = np.random.default_rng(seed)
    rows = []
    for variant, n, mu in (("stable", n_stable, mean), ("canary", n_canary, mean * (1 + effect))):
        user_mean = rng.normal(mu, sd, n)
        for r in range(requests):
            rows.append(pd.DataFrame({"user_id": np.arange(n) + (0 if variant == "stable" else 10**6),
                                      "variant": variant,
                                      "reward": user_mean + rng.normal(0, 0.1, n) * (r + 1)}))
    return pd.concat(rows, ignore_index=True)


# -- splitter -------------------------------------------------------------------------------------
def test_splitter_follows_the_percentage_within_tolerance():
    users = np.arange(50_000)
    for pct in (1, 10, 25, 50):
        share = (ab.TrafficSplitter(pct, "v7").arms(users) == "canary").mean()
        assert abs(share - pct / 100) < 0.01, (pct, share)
    assert (ab.TrafficSplitter(0, "v7").arms(users) == "stable").all()
    assert (ab.TrafficSplitter(100, "v7").arms(users) == "canary").all()


def test_splitter_is_sticky_per_user_and_a_ramp_only_adds_canary_users():
    users = np.arange(5_000)
    a = ab.TrafficSplitter(10, "v7").arms(users)
    b = ab.TrafficSplitter(10, "v7").arms(users[::-1])[::-1]  # another instance, another order
    assert (a == b).all()
    assert all(ab.TrafficSplitter(10, "v7").arm(int(u)) == a[u] for u in users[:200])
    wider = ab.TrafficSplitter(30, "v7").arms(users)
    assert (wider[a == "canary"] == "canary").all()
    assert (ab.TrafficSplitter(10, "v8").arms(users) != a).any()  # a new experiment reshuffles


def test_splitter_rejects_a_bad_percentage():
    with pytest.raises(ValueError):
        ab.TrafficSplitter(101)


# -- statistics -----------------------------------------------------------------------------------
def test_min_sample_size_matches_the_textbook_formula():
    # two arms of n: n = 2 (z_.975 + z_.8)^2 sd^2 / mde^2 = 2 * 2.8016^2 / 0.01 = 1569.8
    assert ab.min_sample_size(0.1, 1.0) == (1570, 1570)
    s, c = ab.min_sample_size(0.1, 1.0, canary_share=0.1)
    assert c < s and abs(c / (s + c) - 0.1) < 0.01
    assert ab.min_sample_size(0.05, 1.0)[0] > 4 * 1569  # half the effect, four times the users


def test_two_proportion_ztest():
    z, p = ab.two_proportion_ztest(500, 1000, 550, 1000)
    pooled = 1050 / 2000
    expected = 0.05 / np.sqrt(pooled * (1 - pooled) * 2 / 1000)
    assert z == pytest.approx(expected) and p == pytest.approx(0.0252, abs=1e-3)
    assert ab.two_proportion_ztest(550, 1000, 500, 1000)[0] == pytest.approx(-z)
    assert ab.two_proportion_ztest(0, 10, 0, 10) == (0.0, 1.0)


# -- decisions ------------------------------------------------------------------------------------
def test_positive_effect_is_promoted():
    r = ab.analyze(synthetic(4000, 4000, effect=0.08, seed=1), mde=0.05)
    assert r.decision == "promote", r.summary()
    assert r.lift > 0.04 and r.ci_low > 0 and r.n_canary >= r.required_canary


def test_negative_effect_is_rolled_back():
    r = ab.analyze(synthetic(4000, 4000, effect=-0.08, seed=2), mde=0.05)
    assert r.decision == "rollback", r.summary()
    assert r.ci_high < 0


def test_no_effect_waits():
    for seed in range(3):
        r = ab.analyze(synthetic(4000, 4000, effect=0.0, seed=seed), mde=0.05)
        assert r.decision == "wait" and r.n_stable >= r.required_stable, r.summary()


def test_too_few_users_wait_even_with_an_effect():
    r = ab.analyze(synthetic(60, 60, effect=0.05, seed=3), mde=0.02)
    assert r.decision == "wait" and r.n_canary < r.required_canary, r.summary()
    assert ab.analyze(synthetic(1, 1, effect=0.5)).decision == "wait"
    empty = synthetic(100, 0, effect=0.0)
    assert ab.analyze(empty).reason == "too few users to compare"


def test_clear_harm_rolls_back_before_the_planned_sample():
    r = ab.analyze(synthetic(300, 300, effect=-0.5, seed=4), mde=0.01)
    assert r.decision == "rollback" and r.n_canary < r.required_canary


def test_analysis_counts_users_not_requests():
    fb = synthetic(500, 500, effect=0.0, requests=5)
    r = ab.analyze(fb)
    assert (r.n_stable, r.n_canary) == (500, 500)
    with pytest.raises(ValueError, match="variant"):
        ab.analyze(fb.drop(columns="variant"))


# -- simulated KuaiRand users -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def behaviour(shipped_dir):
    return ab.UserBehaviour.from_kuairand(str(shipped_dir))


def test_user_propensities_come_from_kuairand_with_shrinkage(behaviour, shipped_dir):
    from onerec.data import kuairand

    ev = kuairand.read_events(shipped_dir)
    assert len(behaviour.user_ids) == ev["user_id"].nunique()
    assert ((behaviour.click > 0) & (behaviour.click < 1)).all()
    assert behaviour.activity.sum() == pytest.approx(1.0)
    # the population mean stays near the logged rate; users spread around it
    weighted = float((behaviour.click * behaviour.activity).sum())
    assert weighted == pytest.approx(ev["is_click"].mean(), abs=0.02)
    assert behaviour.click.std() > 0.05
    one = ab.UserBehaviour.from_events(pd.DataFrame(
        {"user_id": [1, 2, 2, 2], "is_click": [1, 0, 0, 0], "long_view": [0, 0, 0, 0]}),
        prior_strength=4)
    # user 1: one click in one impression -> (1 + 4 * 0.25) / 5, not 100%
    assert one.click[0] == pytest.approx(0.4)


def test_simulated_feedback_reaches_the_right_decision(behaviour):
    split = ab.TrafficSplitter(30, "v2")
    good = ab.simulate_feedback(behaviour, split, 40_000, canary_effect=0.06, seed=5)
    share = good.groupby("user_id")["variant"].nunique()
    assert (share == 1).all()  # sticky: no user in both arms
    assert abs((good["variant"] == "canary").mean() - 0.3) < 0.03
    assert ab.analyze(good, mde=0.03).decision == "promote"
    bad = ab.simulate_feedback(behaviour, split, 40_000, canary_effect=-0.06, seed=6)
    assert ab.analyze(bad, mde=0.03).decision == "rollback"

"""A/B analysis of a canary: split traffic, collect feedback per arm, decide.

- `TrafficSplitter` assigns users to `stable` or `canary` by a hash of (salt, user id): the same
  user always lands in the same arm (a user who flips arms sees two models and their feedback
  belongs to neither), the canary share follows the percentage, and raising the percentage only
  moves users from stable to canary (a ramp keeps everyone already in the canary there). The salt
  is the canary version, so each experiment draws a fresh split. Locally this is the traffic
  split; in the cluster KServe splits requests (docs/deploy.md).
- `analyze` compares the arms on a per-user metric (the unit of randomisation is the user, so the
  unit of analysis is too: per-user mean reward, not per-request rows, which are correlated) with
  Welch's t-test, after a power calculation says how many users each arm needs to detect the
  minimum effect of interest. It returns promote, rollback or wait; a clearly harmful canary is
  rolled back before the planned sample is reached (at a much stricter level, to keep the
  repeated looks from firing on noise). `two_proportion_ztest` serves binary per-request metrics.
- `UserBehaviour` is a simulated population: per-user click and long-view propensities
  estimated from real KuaiRand-Pure impressions (beta-binomial shrinkage toward the global
  rates, so a user with three impressions is not a 0% or 100% clicker), and
  `simulate_feedback` draws sessions from it with a chosen relative effect for the canary: a
  check of the decision rule on a known effect (`onerec rollout simulate`, tests). The demo's
  A/B assumes no effect: it serves both versions (`onerec.app.demo_ab`) and draws feedback on their
  slates from a behaviour model of users and videos (`onerec.app.simusers`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

Arm = Literal["stable", "canary"]
Decision = Literal["promote", "rollback", "wait"]
_BUCKETS = 10_000  # percent resolution of 0.01


class TrafficSplitter:
    """Sticky per-user assignment to the stable or canary arm, `canary_percent` % canary."""

    def __init__(self, canary_percent: float, salt: str = "") -> None:
        if not 0 <= canary_percent <= 100:
            raise ValueError(f"canary_percent {canary_percent}: must be in 0..100")
        self.canary_percent = float(canary_percent)
        self.salt = salt

    def bucket(self, user_id: int | str) -> int:
        """The user's fixed bucket in [0, 10000), independent of the percentage."""
        digest = hashlib.blake2b(f"{self.salt}:{user_id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") % _BUCKETS

    def arm(self, user_id: int | str) -> Arm:
        return "canary" if self.bucket(user_id) < self.canary_percent * _BUCKETS / 100 else "stable"

    def arms(self, user_ids: np.ndarray | list[int]) -> np.ndarray:
        """Vectorised `arm` (object array of 'stable' / 'canary'), hashing each user once."""
        uniq, inverse = np.unique(np.asarray(user_ids), return_inverse=True)
        return np.array([self.arm(u) for u in uniq], dtype=object)[inverse]


# -- power and tests --------------------------------------------------------------------------------
def min_sample_size(mde: float, sd: float, alpha: float = 0.05, power: float = 0.8,
                    canary_share: float = 0.5) -> tuple[int, int]:
    """Users needed (stable, canary) to detect an absolute difference `mde` in a mean with
    standard deviation `sd`, two-sided level `alpha`, at `power`, when the canary gets
    `canary_share` of the users: n_total = (z_a + z_b)^2 sd^2 / (mde^2 p (1 - p))."""
    if mde <= 0 or sd <= 0:
        raise ValueError("mde and sd must be > 0")
    if not 0 < canary_share < 1:
        raise ValueError("canary_share must be in (0, 1)")
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    total = (z * sd / mde) ** 2 / (canary_share * (1 - canary_share))
    return math.ceil(total * (1 - canary_share)), math.ceil(total * canary_share)


def two_proportion_ztest(successes_a: int, n_a: int, successes_b: int,
                         n_b: int) -> tuple[float, float]:
    """(z, two-sided p) for H0: p_a == p_b, pooled variance; positive z means b > a."""
    if min(n_a, n_b) <= 0:
        raise ValueError("both groups need at least one trial")
    pa, pb = successes_a / n_a, successes_b / n_b
    pooled = (successes_a + successes_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return 0.0, 1.0
    z = (pb - pa) / se
    return z, float(2 * stats.norm.sf(abs(z)))


@dataclass(frozen=True)
class ABResult:
    decision: Decision
    reason: str
    metric: str
    n_stable: int  # users
    n_canary: int
    mean_stable: float
    mean_canary: float
    lift: float  # relative: mean_canary / mean_stable - 1
    p_value: float
    ci_low: float  # confidence interval of mean_canary - mean_stable
    ci_high: float
    required_stable: int  # users per arm the power calculation asks for
    required_canary: int

    def summary(self) -> str:
        return (f"{self.decision}: {self.reason} ({self.metric}: stable {self.mean_stable:.4f} "
                f"n={self.n_stable}, canary {self.mean_canary:.4f} n={self.n_canary}, lift "
                f"{self.lift:+.2%}, p={self.p_value:.3g}, needed {self.required_stable}/"
                f"{self.required_canary})")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def per_user(feedback: pd.DataFrame, metric: str = "reward") -> pd.DataFrame:
    """One row per (variant, user): the user's mean `metric` over their requests."""
    for col in ("user_id", "variant", metric):
        if col not in feedback.columns:
            raise ValueError(f"feedback needs a {col!r} column")
    return feedback.groupby(["variant", "user_id"], as_index=False)[metric].mean()


def arm_intervals(feedback: pd.DataFrame, metric: str = "reward", *, alpha: float = 0.05
                  ) -> dict[str, dict[str, float]]:
    """Per arm: users, the mean of the per-user `metric` (the unit `analyze` compares) and its
    two-sided 1 - alpha t interval: what a chart of the arms shows."""
    users = per_user(feedback, metric)
    out: dict[str, dict[str, float]] = {}
    for arm, x in users.groupby("variant")[metric]:
        v = x.to_numpy(float)
        m = float(v.mean())
        half = (float(stats.t.ppf(1 - alpha / 2, len(v) - 1)) * float(v.std(ddof=1))
                / math.sqrt(len(v))) if len(v) > 1 else float("nan")
        out[str(arm)] = {"users": len(v), "mean": m, "low": m - half, "high": m + half}
    return out


def analyze(feedback: pd.DataFrame, metric: str = "reward", *, alpha: float = 0.05,
            power: float = 0.8, mde: float = 0.02, harm_alpha: float = 0.001) -> ABResult:
    """Promote, roll back or wait, from feedback rows (user_id, variant, metric).

    `mde` is the minimum relative effect worth detecting (0.02: 2% of the stable mean). Until
    each arm has the users the power calculation asks for, the answer is wait, unless the canary
    is already worse at `harm_alpha`. At the planned sample: promote if the canary is better at
    `alpha`, roll back if worse, else wait (no difference shown: more data, or an operator's call).
    """
    users = per_user(feedback, metric)
    s = users.loc[users["variant"] == "stable", metric].to_numpy(float)
    c = users.loc[users["variant"] == "canary", metric].to_numpy(float)
    ms = float(s.mean()) if len(s) else float("nan")
    mc = float(c.mean()) if len(c) else float("nan")
    if len(s) < 2 or len(c) < 2:
        return ABResult("wait", "too few users to compare", metric, len(s), len(c), ms, mc,
                        float("nan"), float("nan"), float("nan"), float("nan"), 0, 0)
    sd = float(np.sqrt((s.var(ddof=1) * (len(s) - 1) + c.var(ddof=1) * (len(c) - 1))
                       / (len(s) + len(c) - 2)))
    share = len(c) / (len(s) + len(c))
    if sd == 0 or ms == 0:
        need_s, need_c = len(s), len(c)
    else:
        need_s, need_c = min_sample_size(abs(mde * ms), sd, alpha, power, share)
    t = stats.ttest_ind(c, s, equal_var=False)
    p = float(t.pvalue) if np.isfinite(t.pvalue) else 1.0
    diff = mc - ms
    se = math.sqrt(s.var(ddof=1) / len(s) + c.var(ddof=1) / len(c))
    dof = float(t.df) if np.isfinite(t.df) else 1.0
    half = float(stats.t.ppf(1 - alpha / 2, dof)) * se
    lift = diff / ms if ms else float("nan")

    def result(decision: Decision, reason: str) -> ABResult:
        return ABResult(decision, reason, metric, len(s), len(c), ms, mc, lift, p, diff - half,
                        diff + half, need_s, need_c)

    if diff < 0 and p < harm_alpha:
        return result("rollback", f"canary worse at p < {harm_alpha}")
    if len(s) < need_s or len(c) < need_c:
        return result("wait", "sample below the power calculation's size")
    if p < alpha:
        return result("promote" if diff > 0 else "rollback",
                      f"canary {'better' if diff > 0 else 'worse'} at p < {alpha}")
    return result("wait", f"no significant difference at the planned sample (p >= {alpha})")


# -- simulated users ---------------------------------------------------------------------------------
@dataclass
class UserBehaviour:
    """Per-user engagement propensities estimated from logged impressions."""

    user_ids: np.ndarray  # int64, one per user
    click: np.ndarray  # P(click | impression), shrunk toward the global rate
    long_view: np.ndarray  # P(long view | impression)
    activity: np.ndarray  # share of impressions: how often the user comes back

    @classmethod
    def from_events(cls, events: pd.DataFrame, prior_strength: float = 20.0) -> UserBehaviour:
        """Beta-binomial posterior means: (k + m * global) / (n + m) per user, m = strength."""
        if events.empty:
            raise ValueError("no events to estimate user behaviour from")
        g = events.groupby("user_id").agg(n=("is_click", "size"), clicks=("is_click", "sum"),
                                          long=("long_view", "sum"))
        m = prior_strength
        p_click = events["is_click"].mean()
        p_long = events["long_view"].mean()
        return cls(user_ids=g.index.to_numpy(np.int64),
                   click=((g["clicks"] + m * p_click) / (g["n"] + m)).to_numpy(float),
                   long_view=((g["long"] + m * p_long) / (g["n"] + m)).to_numpy(float),
                   activity=(g["n"] / g["n"].sum()).to_numpy(float))

    @classmethod
    def from_kuairand(cls, data_dir: str = "data/kuairand-pure",
                      prior_strength: float = 20.0) -> UserBehaviour:
        from onerec.data import kuairand

        return cls.from_events(kuairand.read_events(data_dir), prior_strength)


def simulate_feedback(behaviour: UserBehaviour, splitter: TrafficSplitter, n_requests: int, *,
                      canary_effect: float = 0.0, impressions_per_request: int = 10,
                      seed: int = 0) -> pd.DataFrame:
    """Requests from users drawn by their activity, each showing `impressions_per_request`
    videos; clicks and long views drawn from the user's propensities, multiplied by
    (1 + canary_effect) in the canary arm. Columns: user_id, variant, clicks, long_views,
    impressions, reward (clicks + long views per impression: the engagement the arms compete on).
    """
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(behaviour.user_ids), size=n_requests, p=behaviour.activity)
    users = behaviour.user_ids[idx]
    arms = splitter.arms(users)
    factor = np.where(arms == "canary", 1.0 + canary_effect, 1.0)
    p_click = np.clip(behaviour.click[idx] * factor, 0.0, 1.0)
    p_long = np.clip(behaviour.long_view[idx] * factor, 0.0, 1.0)
    clicks = rng.binomial(impressions_per_request, p_click)
    longs = rng.binomial(impressions_per_request, p_long)
    return pd.DataFrame({"user_id": users, "variant": arms, "clicks": clicks,
                         "long_views": longs, "impressions": impressions_per_request,
                         "reward": (clicks + longs) / impressions_per_request})


def simulate_canary(data_dir: str, canary_percent: float, canary_version: str, n_requests: int,
                    *, canary_effect: float = 0.03, mde: float = 0.02,
                    seed: int = 0) -> tuple[ABResult, int]:
    """The local A/B loop of one canary: KuaiRand users split at `canary_percent` % (salted
    by the canary version), `n_requests` simulated requests with the canary's true relative
    effect `canary_effect`, then `analyze`. -> (result, number of simulated users)."""
    behaviour = UserBehaviour.from_kuairand(data_dir)
    splitter = TrafficSplitter(canary_percent, salt=canary_version)
    feedback = simulate_feedback(behaviour, splitter, n_requests, canary_effect=canary_effect,
                                 seed=seed)
    return analyze(feedback, mde=mde), len(behaviour.user_ids)

"""How many held-out users a gate comparison needs to see a difference (issue #13).

The gate compares two models on the same users with a paired one-sided test on per-user values
(users are the unit): with d_u = a_u - b_u, it calls `a` below `b` when mean(d) + z se < 0.
A test on n users at one-sided level alpha detects a true mean difference mean(d) with power
1 - beta when (normal approximation, the power calculation of a paired z test)

    n = ((z_{1-alpha} + z_{1-beta}) * sd(d) / mean(d))^2

At alpha = 5% and 80% power that is ((1.645 + 0.842) sd / mean)^2. gate.json records it beside
each compared pair (`users_needed`): a window measured on fewer users than that cannot, four
times in five, tell the two models apart at their observed difference, so "promote" there means
"not shown worse", not "as good". The same formula sizes the demo's held-out sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

ALPHA = 0.05  # one-sided level of the gate's tests
POWER = 0.8


def z_sum(alpha: float = ALPHA, power: float = POWER) -> float:
    """z_{1-alpha} + z_{power}: 1.645 + 0.842 at the defaults."""
    if not (0.0 < alpha < 1.0 and 0.0 < power < 1.0):
        raise ValueError(f"alpha and power must be in (0, 1), got {alpha}, {power}")
    return NormalDist().inv_cdf(1.0 - alpha) + NormalDist().inv_cdf(power)


def users_needed(sd: float, mean_diff: float, *, alpha: float = ALPHA,
                 power: float = POWER) -> int | None:
    """Users a paired one-sided test needs to detect `mean_diff` given the per-user sd of the
    differences; None when there is no difference to detect (mean_diff 0 or not finite)."""
    if not (math.isfinite(sd) and math.isfinite(mean_diff)) or mean_diff == 0.0:
        return None
    return math.ceil((z_sum(alpha, power) * abs(sd) / abs(mean_diff)) ** 2)


def paired_users_needed(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *,
                        alpha: float = ALPHA, power: float = POWER) -> int | None:
    """`users_needed` for two models' per-user values on the same users (a[i], b[i]: user i),
    at their observed mean difference and sd of the differences."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or len(x) < 2:
        raise ValueError(f"need two 1-D sequences over the same >= 2 users, got {x.shape}, "
                         f"{y.shape}")
    d = x - y
    return users_needed(float(d.std(ddof=1)), float(d.mean()), alpha=alpha, power=power)

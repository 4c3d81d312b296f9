"""How many held-out users a paired one-sided gate comparison needs (`onerec.power`)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from onerec.power import paired_users_needed, users_needed, z_sum


def test_users_needed_matches_a_hand_computation():
    # d = a - b = [0.1, 0.3, -0.1, 0.2, 0.0]: mean 0.1, sd sqrt(0.1 / 4) = 0.158114;
    # n = ((1.644854 + 0.841621) * 0.158114 / 0.1)^2 = 6.182557 * 2.5 = 15.456 -> 16 users
    a = [0.3, 0.5, 0.1, 0.4, 0.2]
    b = [0.2, 0.2, 0.2, 0.2, 0.2]
    assert z_sum() == pytest.approx(1.644854 + 0.841621, abs=1e-6)
    assert paired_users_needed(a, b) == 16
    assert paired_users_needed(b, a) == 16  # the direction does not matter
    # sd 0.2, a difference of 0.02: (2.486475 * 10)^2 = 618.26 -> 619
    assert users_needed(0.2, 0.02) == 619 == math.ceil((z_sum() * 0.2 / 0.02) ** 2)
    assert users_needed(0.2, 0.0) is None  # no difference: no sample size detects it
    # a stricter test needs more users: one-sided 1%, 90% power
    assert users_needed(0.2, 0.02, alpha=0.01, power=0.9) == math.ceil(
        ((2.326348 + 1.281552) * 10) ** 2)
    with pytest.raises(ValueError, match="same >= 2 users"):
        paired_users_needed([0.1], [0.2, 0.3])


def test_users_needed_grows_with_the_square_of_the_noise_to_difference_ratio():
    base = users_needed(0.1, 0.01)
    assert users_needed(0.2, 0.01) == pytest.approx(4 * base, abs=4)  # twice the sd
    assert users_needed(0.1, 0.005) == pytest.approx(4 * base, abs=4)  # half the difference
    assert users_needed(-0.1, -0.01) == base  # signs do not matter, only magnitudes


@pytest.mark.parametrize(("sd", "diff"), [(float("nan"), 0.1), (0.1, float("inf")),
                                          (float("inf"), 0.1)])
def test_a_non_finite_sd_or_difference_needs_no_count(sd, diff):
    assert users_needed(sd, diff) is None


@pytest.mark.parametrize(("alpha", "power"), [(0.0, 0.8), (1.0, 0.8), (0.05, 0.0),
                                              (0.05, 1.0)])
def test_z_sum_rejects_a_level_or_power_outside_the_open_unit_interval(alpha, power):
    with pytest.raises(ValueError, match="must be in \\(0, 1\\)"):
        z_sum(alpha, power)


def test_paired_users_needed_takes_arrays_and_is_none_for_identical_models():
    rng = np.random.default_rng(0)
    a = rng.random(50)
    assert paired_users_needed(a, a.copy()) is None  # every difference is 0
    assert paired_users_needed(a, a - 0.01) <= 1  # a shift without noise: any user shows it
    with pytest.raises(ValueError, match="1-D"):
        paired_users_needed(a.reshape(5, 10), a.reshape(5, 10))

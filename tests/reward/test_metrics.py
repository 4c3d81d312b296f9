"""Held-out quality of the reward model: calibration error."""

from __future__ import annotations

import numpy as np
import pytest

from onerec.reward import ece


def test_ece_weights_each_bins_calibration_gap_by_its_share_of_the_data():
    # two bins, each half the data: |0 - 0.2| and |1 - 0.9| -> 0.5 * 0.2 + 0.5 * 0.1
    assert ece(np.array([0.2, 0.2, 0.9, 0.9]), np.array([0, 0, 1, 1]), 2) == pytest.approx(0.15)

"""Codebook quality metrics (`onerec.tokenizer.metrics`) on codes whose answers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from onerec.tokenizer.metrics import (
    code_metrics,
    codebook_metrics,
    mean_relative_error,
    plot_metrics,
    relative_error,
)

# 4 items, 2 levels, K = 4: level 1 uses codes 0 and 1 twice each, level 2 code 3 three times
# and code 2 once; items 0 and 1 share the ID (0, 3): 3 distinct IDs, one collision
CODES = np.array([[0, 3], [0, 3], [1, 3], [1, 2]])


def test_utilisation_entropy_and_collisions_match_a_hand_count():
    m = code_metrics(CODES, codebook_size=4)
    assert (m["n_items"], m["levels"], m["codebook_size"]) == (4, 2, 4)
    assert m["utilisation"] == [0.5, 0.5]
    assert m["entropy_bits"][0] == pytest.approx(1.0)  # two codes, two items each
    assert m["entropy_bits"][1] == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))
    assert m["entropy_normalised"][0] == pytest.approx(0.5)  # 1 bit of log2(4) = 2
    assert m["n_semantic_ids"] == 3 and m["collision_rate"] == pytest.approx(0.25)
    assert m["items_per_id_max"] == 2 and m["items_per_id_mean"] == pytest.approx(4 / 3)


def test_unique_ids_have_no_collisions_and_even_use_has_normalised_entropy_one():
    codes = np.array([[0], [1], [2], [3]])
    m = code_metrics(codes, codebook_size=4)
    assert m["collision_rate"] == 0.0 and m["utilisation"] == [1.0]
    assert m["entropy_normalised"] == [pytest.approx(1.0)]


def test_relative_error_skips_zero_vectors():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
    x_hat = np.array([[3.0, 4.0 - 0.5], [1.0, 1.0], [0.0, 0.0]])
    err = relative_error(x, x_hat)
    assert err[0] == pytest.approx(0.1) and np.isnan(err[1]) and err[2] == pytest.approx(1.0)
    assert mean_relative_error(x, x_hat) == pytest.approx(0.55)
    assert mean_relative_error(np.zeros((2, 2)), np.ones((2, 2))) == 0.0  # nothing measurable
    m = codebook_metrics(CODES, 4, x[[0, 2, 0, 2]], x_hat[[0, 2, 0, 2]])
    assert m["reconstruction_error"] == pytest.approx(0.55) and m["n_semantic_ids"] == 3


def test_plot_metrics_writes_a_png_atomically(tmp_path):
    path = plot_metrics(code_metrics(CODES, 4), tmp_path / "plots" / "codebook.png")
    assert path == tmp_path / "plots" / "codebook.png"
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 0
    assert [p.name for p in path.parent.iterdir()] == ["codebook.png"]

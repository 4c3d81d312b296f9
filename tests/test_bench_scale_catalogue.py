"""bench.scale_catalogue: one catalogue's cell measured end to end, and the growth fit."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from bench.scale_catalogue import _without_outputs, cell, clustered, growth


def test_a_small_catalogue_cell_measures_every_column(one_thread):
    args = argparse.Namespace(dim=8, clusters=20, iters=3, beam=16, users=2, reference_users=1,
                              gate_users=20, threads=1)
    row = cell(600, 16, args)
    assert row["items"] == 600 and row["vocab"][:3] == [16, 16, 16]
    # the CSR tables: a few bytes an item, far below the dense (node, code) tables
    assert 0 < row["bytes_per_item"] <= 64 and row["dense_mb"] > row["tables_mb"]
    assert row["graph_mb"] > 0 and row["gate_legality"] == 1.0
    for key in ("fit_s", "refresh_s", "onnx_p50", "onnx_p99", "onnx_b64", "ref_p50",
                "gate_s_per_1k", "fit_peak_mb"):
        assert row[key] > 0, key
    assert row["onnx_p99"] >= row["onnx_p50"]
    assert not row["refresh_refit"]  # 1% new items from the same clusters: encoded, no refit


def test_growth_is_the_log_log_slope():
    rows = [{"items": n, "flat": 5.0, "linear": 3.0 * n, "sqrt": n ** 0.5}
            for n in (1e4, 1e5, 1e6)]
    assert growth(rows, "flat") == pytest.approx(0.0, abs=1e-9)
    assert growth(rows, "linear") == pytest.approx(1.0)
    assert growth(rows, "sqrt") == pytest.approx(0.5)
    assert np.isnan(growth(rows[:1], "linear"))


def test_cells_get_the_parents_arguments_less_its_outputs():
    argv = ["--sizes", "10", "--json", "out.json", "--plot", "p.png", "--users", "3"]
    assert _without_outputs(argv) == ["--sizes", "10", "--users", "3"]


def test_embeddings_are_seeded_clusters():
    a, b = clustered(500, 4, 5, seed=0), clustered(500, 4, 5, seed=0)
    assert a.dtype == np.float32 and np.array_equal(a, b)
    assert not np.array_equal(a, clustered(500, 4, 5, seed=1))


def test_interleaved_latency_compares_two_catalogues_in_one_process(one_thread):
    from bench.scale_catalogue import interleaved, random_codes

    codes, vocab = random_codes(500, 8)
    assert codes.shape == (501, 4) and vocab[:3] == [8, 8, 8]
    assert len({tuple(r) for r in codes[1:].tolist()}) == 500  # distinct IDs, as a codebook's
    args = argparse.Namespace(beam=16, runs=2, users=2, threads=1)
    (row,) = interleaved([300, 3000], 8, args)
    assert row[:3] == ["8", "300", "3,000"]
    assert float(row[5].rstrip("x")) > 0 and len(row[6].split()) == 2

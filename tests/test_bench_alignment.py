"""bench.alignment's judge statistics: the paired test users are the unit of, and its options."""

from __future__ import annotations

import numpy as np
import pytest

from bench.alignment import diversity_weights, paired_vs


def test_paired_test_finds_a_small_shift_the_users_share_and_not_noise():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.1, 0.5, 400)  # users differ far more than the models do
    better = base + 0.01 + rng.normal(0, 0.005, 400)
    d = paired_vs(better, base)
    assert d["p"] < 1e-6 and d["low"] < 0.01 < d["high"] and d["diff"] == pytest.approx(0.01, 0.1)
    noise = paired_vs(base + rng.normal(0, 0.005, 400), base)
    assert noise["p"] > 0.01 and noise["low"] < 0 < noise["high"]
    assert paired_vs(base, base) == {"diff": 0.0, "low": 0.0, "high": 0.0, "p": 1.0}


def test_diversity_weights_parse_a_comma_list():
    assert diversity_weights("0, 0.1,1") == [0.0, 0.1, 1.0]
    assert diversity_weights("") == []


def test_served_selection_names_the_row_the_configs_serve_settings_pick():
    from bench.alignment import served_selection
    from onerec.config import Config

    cfg = Config.from_preset("tiny")
    cfg.serve.rm_selection_top_m, cfg.serve.rm_selection_code_cap = 0, 0
    assert served_selection(cfg, 32) == (" + RM selection", None, None)
    cfg.serve.rm_selection_code_cap = 4
    assert served_selection(cfg, 32) == (" + RM selection cap 4", None, 4)
    cfg.serve.rm_selection_top_m = 64  # larger than the beam: the whole beam competes
    assert served_selection(cfg, 32) == (" + RM selection top 32 cap 4", 32, 4)
    cfg.serve.rm_selection = False
    assert served_selection(cfg, 32) is None


@pytest.mark.slow  # a whole (tiny) bench.alignment on the shipped KuaiRand sample, ~1 min
def test_bench_alignment_names_and_judges_the_served_row(tmp_path):
    import json
    import subprocess
    import sys

    from onerec.config import ServeConfig

    subprocess.run([sys.executable, "-m", "bench.alignment", "--quick", "--no-grpo",
                    "--test-users", "100", "--align-steps", "5", "--rm-minutes", "0.3",
                    "--pretrain-minutes", "0.3", "--threads", "2", "--out", str(tmp_path / "run"),
                    "--json", str(tmp_path / "r.json")], check=True, timeout=600)
    out = json.loads((tmp_path / "r.json").read_text())
    served = f"ECPO + RM selection cap {ServeConfig().rm_selection_code_cap}"
    assert out["served"]["row"] == served
    table = out["table"]
    assert {f"ECPO + RM selection cap {c}" for c in (4, 6, 8)} <= set(table)
    row = table[served]
    ok = (row["vs_pretrained"]["long_view"]["diff"] > 0
          and row["vs_pretrained"]["long_view"]["p"] < 0.05
          and row["ild@10"] >= 0.9 * table["pretrained"]["ild@10"]
          and row["legality_free"] == 1.0)
    assert out["served"]["meets_bound"] == ok  # the verdict is the bound, recomputed

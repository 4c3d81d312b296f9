"""The format reward's two selection rules (issue #18): top-k rewards the k most probable legal
samples, random-k k legal samples independent of the policy; illegal samples are punished by
both; `bench.align_curves`' table helpers."""

from __future__ import annotations

import pytest
import torch

from bench.align_curves import parse_overrides, sparse_rows, summary
from onerec.config import FORMAT_SELECTS, Config, ConfigError
from onerec.ecpo import format_legality
from onerec.rewards import format_advantage, format_choice

LEGAL = torch.tensor([[True, True, True, False, True, False, True, True],
                      [False, True, False, True, True, False, True, False]])
LOGP = torch.tensor([[-3.0, -1.0, -2.0, -0.1, -5.0, -0.2, -0.5, -4.0],
                     [-1.0, -2.0, -0.1, -3.0, -0.7, -0.3, -6.0, -2.5]])


def test_topk_rewards_exactly_the_k_most_probable_legal_samples():
    adv = format_advantage(LEGAL, format_choice(LEGAL, 2, select="topk", logp=LOGP))
    # row 0: legal logps -3, -1, -2, -5, -0.5, -4 -> samples 6 and 1 (the illegal 3 and 5 are
    # more probable but never chosen); row 1: legal -2, -3, -0.7, -6 -> samples 4 and 1
    assert (adv > 0).nonzero().tolist() == [[0, 1], [0, 6], [1, 1], [1, 4]]
    assert (adv[LEGAL & (adv <= 0)] == 0).all()  # the other legal samples get 0


def test_topk_breaks_ties_by_sample_index_and_ignores_the_generator():
    legal = torch.ones(1, 6, dtype=torch.bool)
    legal[0, 5] = False
    logp = torch.tensor([[-1.0, -0.5, -0.5, -0.5, -2.0, 0.0]])
    for seed in range(5):
        chosen = format_choice(legal, 2, select="topk", logp=logp,
                               generator=torch.Generator().manual_seed(seed))
        assert chosen[0].nonzero().flatten().tolist() == [1, 2]


def test_illegal_samples_keep_the_same_negative_advantage_under_both_rules():
    top = format_advantage(LEGAL, format_choice(LEGAL, 2, select="topk", logp=LOGP))
    rnd = format_advantage(LEGAL, format_choice(LEGAL, 2, select="random",
                                                  generator=torch.Generator().manual_seed(0)))
    assert (top[~LEGAL] < 0).all()
    torch.testing.assert_close(top[~LEGAL], rnd[~LEGAL])
    # the positive advantage is the same value; only who gets it differs
    torch.testing.assert_close(top[top > 0], rnd[rnd > 0])
    assert int((rnd > 0).sum()) == 4 and (rnd[LEGAL] >= 0).all()


def test_random_k_is_independent_of_logp_and_uniform_over_the_legal_samples():
    legal, logp = LEGAL[:1], LOGP[:1]
    counts = torch.zeros(8)
    n, differs = 3000, 0
    top = format_choice(legal, 2, select="topk", logp=logp)
    for seed in range(n):
        g = torch.Generator().manual_seed(seed)
        chosen = format_choice(legal, 2, select="random", logp=logp, generator=g)
        # the same draw whatever the logp: the rule never looks at the policy
        g2 = torch.Generator().manual_seed(seed)
        assert torch.equal(chosen, format_choice(legal, 2, select="random", logp=-logp,
                                                 generator=g2))
        counts += chosen[0].float()
        differs += int(not torch.equal(chosen, top))
    assert counts[~legal[0]].sum() == 0
    share = counts[legal[0]] / n  # 6 legal samples, 2 chosen: 1/3 each
    assert torch.allclose(share, torch.full_like(share, 1 / 3), atol=0.04), share
    assert differs > n // 2  # top-k's fixed pair is one of 15 random pairs


def test_k_at_least_the_legal_count_rewards_every_legal_sample_under_both_rules():
    for k in (6, 8):
        for select in ("topk", "random"):
            chosen = format_choice(LEGAL[:1], k, select=select, logp=LOGP[:1],
                                   generator=torch.Generator().manual_seed(1))
            adv = format_advantage(LEGAL[:1], chosen)
            assert ((adv[0] > 0) == LEGAL[0]).all() and (adv[0][~LEGAL[0]] < 0).all()


def test_topk_without_logp_and_an_unknown_rule_are_errors():
    with pytest.raises(ValueError, match="logp"):
        format_choice(LEGAL, 2, select="topk")
    with pytest.raises(ValueError, match=f"align.format_select: must be one of {', '.join(FORMAT_SELECTS)}"):
        format_choice(LEGAL, 2, select="best")


def test_config_rejects_an_unknown_format_select_naming_the_field():
    assert Config.from_preset("small").align.format_select == "random"
    assert Config.from_preset("small", ["align.format_select=topk"]).align.format_select == "topk"
    with pytest.raises(ConfigError) as e:
        Config.from_preset("small", ["align.format_select=greedy"])
    assert str(e.value).startswith("align.format_select")
    assert "random, topk" in str(e.value) and "'greedy'" in str(e.value)


def test_format_legality_logs_the_chosen_slots_and_the_modes_legality():
    chosen = format_choice(LEGAL, 2, select="topk", logp=LOGP)
    stats = format_legality(LEGAL, chosen, LOGP, 2)
    assert stats["legality_chosen"] == 1.0  # both rows have >= 2 legal samples
    # row 0's two most probable samples (3, 5) are illegal; row 1's (2: illegal, 5: illegal)
    assert stats["legality_top_k"] == 0.0
    stats = format_legality(LEGAL, chosen, -LOGP, 2)  # most probable now 4, 7 and 6, 3
    assert stats["legality_top_k"] == 1.0
    few = torch.zeros_like(LEGAL)
    few[0, 0] = True
    assert format_legality(few, few, LOGP, 2)["legality_chosen"] == 0.25  # 1 of 4 slots


def test_bench_tables_are_sparse_and_summaries_read_the_history():
    hist = [{"legality": i / 100, "grad_norm": 1.0 + i, "reward": 0.5, "kl": 0.01 * i,
             "early_clip_frac": 0.0, "ratio_max": 1.0} for i in range(1, 101)]
    header, rows = sparse_rows({"A": hist, "B": hist[:50]}, {"legality": "leg"})
    assert header == ["round", "A: leg", "B: leg"]
    assert [r[0] for r in rows] == ["1", *(str(i) for i in range(10, 101, 10))]
    assert rows[-1] == ["100", "1.000", "-"]  # B stopped at round 50
    s = summary(hist)
    assert s["grad_norm_max"] == 101.0 and s["legality_first"] == pytest.approx(0.105)
    assert parse_overrides(["align.lr=1e-3", "align.early_clip=false"]) == {
        "lr": 1e-3, "early_clip": False}
    with pytest.raises(SystemExit):
        parse_overrides(["train.lr=1"])


def test_replot_redraws_both_pngs_from_the_json(tmp_path):
    import json

    from bench.align_curves import main

    rec = {"legality": 0.5, "legality_top_k": 1.0, "distinct": 0.3, "kl": 0.1, "grad_norm": 1.0,
           "reward": 0.4, "early_clip_frac": 0.0, "ratio_max": 1.2}
    hist = [{"step": i, **rec} for i in range(1, 4)]
    path = tmp_path / "curves.json"
    path.write_text(json.dumps({
        "format": {"overrides": ["align.lr=1e-4"], "history": {"top-k": hist, "random-k": hist}},
        "stability": {"overrides": ["align.lr=1e-3"], "history": {"GRPO": hist, "ECPO": hist}}}))
    assert main(["--replot", str(path), "--img-dir", str(tmp_path / "img")]) == {}
    for name in ("align-format-select.png", "align-stability.png"):
        assert (tmp_path / "img" / name).read_bytes()[:4] == b"\x89PNG"

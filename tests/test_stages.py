"""The evaluation gate (`stages.gate`): its popularity floor and the users each comparison needs
(issue #13); `onerec.power` computes those counts (tests/test_power.py).

The end-to-end check (an untrained candidate on a real held-out window, with and without a
production model) is in tests/test_pipeline.py, which already runs those pipelines. The validate
stage's streamed log against the in-memory batch (issue #17) is at the end."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from onerec import stages
from onerec.config import Config
from onerec.data import kuairand
from onerec.power import paired_users_needed
from onerec.validation import compute_reference

GATED = ("ndcg@10", "recall@10")
CORE = "validate,codebook,pretrain,gate,publish"


def _sparse(rng: np.random.Generator, n: int, hit: float) -> np.ndarray:
    """Per-user values shaped like ndcg@10 on a held-out day: mostly 0, some hits in (0, 1]."""
    return (rng.random(n) < hit) * rng.random(n)


def _means(values: np.ndarray, **extra: float) -> dict[str, float]:
    return {m: float(values.mean()) for m in GATED} | extra


def _per_user(**models: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    return {name: {m: v for m in GATED} for name, v in models.items()}


def test_gate_blocks_a_candidate_significantly_below_popularity():
    rng = np.random.default_rng(1)
    pop = _sparse(rng, 2000, 0.3)
    cand = pop * 0.5  # the same users' hits at half the gain: far beyond noise
    per = _per_user(candidate=cand, popularity=pop)
    res = stages.gate(_means(cand, legality=1.0), None, popularity=_means(pop), per_user=per)
    assert res.decision == "blocked" and len(res.reasons) == 2
    for m, reason in zip(GATED, res.reasons, strict=True):
        row = res.compared[m]
        vs = row["vs_popularity"]
        assert row["popularity"] == pytest.approx(pop.mean()) and row["production"] is None
        assert vs["mean_diff"] == pytest.approx(cand.mean() - pop.mean())
        assert vs["upper"] == pytest.approx(vs["mean_diff"] + 1.645 * vs["se"]) and vs["upper"] < 0
        assert vs["n_users"] == 2000
        # the reason names the metric, both values and the test
        assert reason.startswith(f"{m} {cand.mean():.4f} significantly below popularity "
                                 f"{pop.mean():.4f}")
        assert "paired per-user difference" in reason and "one-sided 5%" in reason
    # level with production passes the production rule, but popularity still blocks it
    res = stages.gate(_means(cand), _means(cand), popularity=_means(pop),
                      per_user=per | _per_user(production=cand))
    assert res.decision == "blocked"
    assert all("below popularity" in r for r in res.reasons) and len(res.reasons) == 2
    # the floor off: promoted, the comparison still reported
    res = stages.gate(_means(cand), None, popularity=_means(pop), per_user=per,
                      popularity_floor=False)
    assert res.decision == "promote" and res.compared["ndcg@10"]["vs_popularity"]["upper"] < 0


def test_gate_passes_a_candidate_level_with_popularity_within_noise():
    rng = np.random.default_rng(2)
    pop = _sparse(rng, 300, 0.3)
    cand = _sparse(rng, 300, 0.3)
    cand *= 0.97 * pop.mean() / cand.mean()  # 3% below on the mean, per-user values unrelated
    res = stages.gate(_means(cand), None, popularity=_means(pop),
                      per_user=_per_user(candidate=cand, popularity=pop))
    vs = res.compared["ndcg@10"]["vs_popularity"]
    assert vs["mean_diff"] < 0 <= vs["upper"]  # below on the mean, not beyond noise
    assert res.decision == "promote"
    assert res.reasons == ["no production model: first deployment",
                           "not significantly below popularity on ndcg@10, recall@10"]
    # a 3% gap is far from detectable on 300 users: the record says how many it would take
    assert vs["users_needed"] == paired_users_needed(cand, pop) > 300


def test_gate_popularity_floor_needs_popularity_and_without_per_user_is_a_point_comparison():
    with pytest.raises(ValueError, match="popularity_floor needs"):
        stages.gate({"ndcg@10": 0.1, "recall@10": 0.1}, None)
    res = stages.gate({"ndcg@10": 0.01, "recall@10": 0.05}, None,
                      popularity={"ndcg@10": 0.02, "recall@10": 0.04})
    assert res.decision == "blocked"
    assert res.reasons == ["ndcg@10 0.0100 significantly below popularity 0.0200 "
                           "(point comparison, no per-user values)"]


def test_gate_records_users_needed_for_both_pairs():
    rng = np.random.default_rng(3)
    prod = _sparse(rng, 500, 0.3)
    pop = _sparse(rng, 500, 0.2)
    cand = np.clip(prod + rng.normal(0.0, 0.05, 500), 0.0, 1.0)
    per = _per_user(candidate=cand, production=prod, popularity=pop)
    res = stages.gate(_means(cand), _means(prod), popularity=_means(pop), per_user=per)
    row = res.compared["ndcg@10"]
    assert row["vs_production"]["users_needed"] == paired_users_needed(cand, prod)
    assert row["vs_popularity"]["users_needed"] == paired_users_needed(cand, pop)
    assert row["vs_production"]["mean_diff"] == pytest.approx(cand.mean() - prod.mean())
    assert row["vs_production"]["diff_to_floor"] == pytest.approx(
        cand.mean() - 0.95 * prod.mean())


def test_stage_list_is_checked():
    assert stages.parse_stages("gate,pretrain,codebook,validate") == list(stages.CORE_STAGES)
    with pytest.raises(stages.StageError, match="'gate' cannot be left out"):
        stages.parse_stages("validate,codebook,pretrain")
    with pytest.raises(stages.StageError, match="unknown stage 'serve'"):
        stages.parse_stages(CORE + ",serve")
    with pytest.raises(stages.StageError, match="align needs reward"):
        stages.parse_stages(CORE + ",align")


def test_gate_blocks_a_clearly_worse_candidate_but_not_noise():
    rng = np.random.default_rng(0)
    prod = rng.random(2000)
    base = {"ndcg@10": float(prod.mean()), "recall@10": float(prod.mean()), "legality": 1.0}
    worse = prod * 0.5
    cand = {"ndcg@10": float(worse.mean()), "recall@10": float(worse.mean()), "legality": 1.0}
    per = {"candidate": {"ndcg@10": worse, "recall@10": worse},
           "production": {"ndcg@10": prod, "recall@10": prod}}
    res = stages.gate(cand, base, tolerance=0.05, per_user=per, popularity_floor=False)
    assert res.decision == "blocked" and len(res.reasons) == 2
    assert "one-sided 5% upper bound" in res.reasons[0]
    # 6% worse on the mean, but per-user values that disagree: within noise of 30 users
    noisy = rng.random(30)
    noisy *= 0.94 * prod[:30].mean() / noisy.mean()
    per = {"candidate": {"ndcg@10": noisy, "recall@10": noisy},
           "production": {"ndcg@10": prod[:30], "recall@10": prod[:30]}}
    small = {k: float(prod[:30].mean()) for k in ("ndcg@10", "recall@10")}
    res = stages.gate({k: float(noisy.mean()) for k in small}, small, per_user=per,
                      popularity_floor=False)
    assert res.decision == "promote"
    assert stages.gate(cand, None, popularity_floor=False).decision == "promote"
    assert stages.gate({**cand, "legality": 0.5}, None,
                       popularity_floor=False).decision == "blocked"


def test_day_ms_is_the_utc_midnight_and_a_bad_date_names_the_format():
    assert stages.day_ms("1970-01-02") == stages.DAY_MS
    assert stages.day_ms("2022-04-27") - stages.day_ms("2022-04-26") == stages.DAY_MS
    assert stages.ms_to_iso(stages.day_ms("2022-04-26") + 61_000) == "2022-04-26 00:01:01"
    with pytest.raises(stages.StageError, match="expected a date YYYY-MM-DD, got '26/04/2022'"):
        stages.day_ms("26/04/2022")


# -- the validate stage streams the log (issue #17) ------------------------------------------------
def test_validate_streams_the_shipped_log_to_the_in_memory_snapshot(shipped_dir, tmp_path):
    """The stage reads the log as a stream (`onerec.logscan`); its snapshot, report and
    reference are those of the whole batch cut in memory, as the stage used to."""
    cfg = Config.from_preset("tiny")
    until = "2022-05-08"
    out = stages.validate(cfg, shipped_dir, tmp_path / "snap", until=until, holdout_days=2,
                          root=tmp_path / "root")
    ev = kuairand.read_events(shipped_dir)
    until_ms = stages.day_ms(until)
    batch = ev[ev["time_ms"] < until_ms].reset_index(drop=True)
    held = batch["time_ms"] >= until_ms - 2 * stages.DAY_MS
    keys = batch[["user_id", "video_id", "time_ms"]].to_numpy(np.int64)
    assert out["validation_success"] and out["failures"] == []
    assert out["n_batch_events"] == len(batch) < len(ev)
    assert (out["n_train_events"], out["n_holdout_events"]) == (int((~held).sum()),
                                                                  int(held.sum()))
    assert out["fingerprint"] == hashlib.sha256(keys.tobytes()).hexdigest()[:16]
    snap = tmp_path / "snap"
    ref = json.loads((snap / "reference.json").read_text())
    want = compute_reference(batch, kuairand.read_items(shipped_dir), cfg.validation)
    assert {k: v for k, v in ref.items() if k not in ("created_at", "source")} == {
        k: v for k, v in want.items() if k not in ("created_at", "source")}
    report = json.loads((snap / "validation" / "report.json").read_text())
    # more events than one chunk: the suite ran in pieces, the reference still exact
    assert report["stats"]["events_rows"] == len(batch) and report["stats"]["events_chunks"] == 2
    assert (snap / "validation" / "data_docs" / "index.html").is_file()

"""Run pages (`onerec.run_pages`) on small made-up stage summaries: every plot is a real PNG
with content, every HTML page embeds its plots, a missing series is named instead of failing,
the Markdown pages carry the table and the decision, and `write` lands in the artifact and the
run's ledger. The pipeline-level checks (compiled artifact types, kfp.local files) are in
tests/test_pipeline.py."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from onerec import ab, run_pages, stages
from onerec.app.cycle_report import pages_markdown
from onerec.reward import calibration_bins, calibration_curves
from onerec.tokenizer import Codebook


# -- helpers (also used by tests/test_pipeline.py) --------------------------------------------------
def assert_png(png: bytes) -> tuple[int, int]:
    """A decodable PNG, both sides > 0, more than one colour (a blank canvas is not a plot)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(png))
    img.load()
    w, h = img.size
    assert w > 0 and h > 0
    rgb = np.asarray(img.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > 10, "a single-colour image"
    return w, h


def embedded_pngs(page_html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in
            re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page_html)]


def _history(n: int = 30, *, mfu: bool = True) -> list[dict[str, float]]:
    rows = [{"step": s, "loss": 6.0 / s ** 0.3, "lr": 1e-3 * min(1.0, s / 5),
             "samples_per_s": 900.0 + 10 * (s % 3), **({"mfu": 0.01 + s * 1e-4} if mfu else {})}
            for s in range(1, n + 1)]
    rows.append({"step": n, "wall_s": 3.0, "recall@10": 0.1})  # an evaluation record mixed in
    return rows


# -- training curves --------------------------------------------------------------------------------
def test_pretrain_page_embeds_the_four_curves_as_a_real_png():
    summary = {"warm_start": False, "cold_reason": "no production model (first cycle)",
               "n_requests": 1200, "steps": 30, "planned_steps": 30, "train_s": 4.2,
               "final_loss": 2.2, "params": 12345}
    page = run_pages.pretrain_page(summary, _history())
    assert page.kind == "html" and set(page.pngs) == {"curves"}
    assert embedded_pngs(page.text) == [page.pngs["curves"]]
    w, h = assert_png(page.pngs["curves"])
    assert w > 400 and h > 300  # two rows of two panels
    assert "cold start (no production model (first cycle))" in page.text
    assert "Not recorded" not in page.text


def test_a_series_the_history_lacks_is_named_on_the_page():
    page = run_pages.pretrain_page({"steps": 30}, _history(mfu=False))
    assert "Not recorded in this run&#x27;s history: MFU." in page.text
    assert_png(page.pngs["curves"])  # the other three panels still drawn
    empty = run_pages.pretrain_page({"steps": 0}, [])
    assert empty.pngs == {} and "nothing to plot" in empty.text


def test_align_page_plots_reward_legality_kl_and_clip_fraction_per_round():
    hist = [{"step": r, "reward": 0.5 + 0.01 * r, "legality": 1.0, "kl": 0.001 * r,
             "clip_frac": 0.1 / r, "loss": 1.0} for r in range(1, 21)]
    page = run_pages.align_page({"align_steps": 20, "align_s": 3.0, "align_reward": 0.7}, hist)
    assert_png(page.pngs["curves"])
    assert "round" in page.text and "Not recorded" not in page.text
    grpo = [{k: v for k, v in r.items() if k != "clip_frac"} for r in hist]
    assert "clip fraction" in run_pages.align_page({}, grpo).text.split("Not recorded")[1]


# -- codebook ---------------------------------------------------------------------------------------
def test_codebook_page_shows_utilisation_and_the_collision_histogram(tmp_path):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 8, size=(300, 2))
    codes[:40] = codes[0]  # one L-code ID shared by 40 items
    cb = Codebook.from_codes(rng.normal(size=(2, 8, 4)).astype(np.float32),
                             np.arange(300, dtype=np.int64) + 1, codes)
    cb.save(tmp_path / "cb", plot=False)
    stats = run_pages.codebook_stats(tmp_path / "cb")
    assert sum(size * n for size, n in stats["items_per_id"].items()) == 300
    assert max(stats["items_per_id"]) >= 40 and len(stats["utilisation"]) == 2
    page = run_pages.codebook_page({"mode": "fit", "version": 1, "revision": 0,
                                    "n_new_items": 300}, stats)
    assert embedded_pngs(page.text) == [page.pngs["utilisation"]]
    assert_png(page.pngs["utilisation"])
    assert "collision rate" in page.text and "items per ID" in page.text


# -- reward -----------------------------------------------------------------------------------------
def test_calibration_bins_partition_the_predictions():
    p = np.array([0.05, 0.07, 0.55, 0.95, 1.0])
    y = np.array([0.0, 1.0, 1.0, 1.0, 0.0])
    c = calibration_bins(p, y, 10)
    assert c["count"] == [2, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    assert c["pred"][0] == pytest.approx(0.06) and c["obs"][0] == 0.5 and c["pred"][1] is None
    assert c["obs"][9] == 0.5


def test_reward_page_plots_auc_per_task_and_calibration():
    rng = np.random.default_rng(1)
    probs = rng.random((500, 6))
    labels = (rng.random((500, 6)) < probs).astype(float)
    cal = calibration_curves({"probs": probs, "pscore": probs[:, 1]}, labels, 10)
    assert set(cal) == {"click", "long_view", "like", "follow", "comment", "watch", "pscore"}
    metrics = {t: {"auc": 0.7, "ece": 0.02, "mean_pred": 0.5, "mean_obs": 0.5,
                   "positives": 250.0} for t in cal}
    metrics["comment"]["auc"] = float("nan")  # one class only in the held-out window
    page = run_pages.reward_page({"steps": 10, "metrics": metrics, "calibration": cal})
    assert_png(page.pngs["auc-calibration"])
    assert embedded_pngs(page.text) == [page.pngs["auc-calibration"]]
    old = run_pages.reward_page({"steps": 10, "metrics": metrics})  # no bins recorded
    assert "No calibration bins" in old.text and old.pngs
    assert "No held-out impressions" in run_pages.reward_page({"steps": 3}).text


# -- gate, publish, validate --------------------------------------------------------------------------
def test_gate_page_tables_candidate_production_popularity_and_says_why():
    rng = np.random.default_rng(0)
    prod_u, cand_u, pop_u = rng.random(200), rng.random(200) * 0.5, rng.random(200) * 0.4
    metrics = ("ndcg@10", "recall@10")
    cand = {m: float(cand_u.mean()) for m in metrics} | {"legality": 1.0, "coverage@10": 0.2}
    prod = {m: float(prod_u.mean()) for m in metrics} | {"legality": 1.0, "coverage@10": 0.3}
    pop = {m: float(pop_u.mean()) for m in metrics}
    res = stages.gate(cand, prod, popularity=pop, per_user={
        "candidate": dict.fromkeys(metrics, cand_u), "production": dict.fromkeys(metrics, prod_u),
        "popularity": dict.fromkeys(metrics, pop_u)})
    summary = {"decision": res.decision, "reasons": res.reasons, "compared": res.compared,
               "tolerance": 0.05, "popularity_floor": True,
               "candidate": {"metrics": cand, "n_users": 200},
               "production": {"metrics": prod}, "production_version": "2022-04-28-abc",
               "popularity": pop, "heldout": ["2022-04-28 00:00:00", "2022-04-29 00:00:00"]}
    page = run_pages.gate_page(summary)
    assert page.kind == "md" and res.decision == "blocked"
    assert "| metric | candidate | production 2022-04-28-abc | popularity |" in page.text
    assert f"| ndcg@10 (gated) | {cand['ndcg@10']:.4f} | {prod['ndcg@10']:.4f} | " in page.text
    assert "| legality | 1.0000 | 1.0000 | - | - |" in page.text
    assert "## Decision: blocked" in page.text
    assert all(f"- {r}" in page.text for r in res.reasons)
    assert "| ndcg@10 | production floor |" in page.text and "| ndcg@10 | popularity |" in page.text
    first = run_pages.gate_page({**summary, "production": None, "production_version": None,
                                 "decision": "promote", "reasons": ["first deployment"]})
    assert "production none" in first.text and "- first deployment" in first.text


def test_publish_page_names_the_version_and_the_gitops_commits():
    page = run_pages.publish_page({"version": "2022-04-29-ce7b28f2", "storage_uri": "s3://m/v",
                                   "commits": ["aaaabbbbccccdddd", "1111222233334444"],
                                   "gitops_repo": "/r/gitops", "canary": True,
                                   "state": "dev: stable a, canary b at 10%",
                                   "metrics": {"ndcg@10": 0.1, "recall@10": 0.2}})
    assert "# Published `2022-04-29-ce7b28f2`" in page.text
    assert "`aaaabbbbcc`, `1111222233`" in page.text and "held as the canary" in page.text
    assert "dev: stable a, canary b at 10%" in page.text


def test_validate_page_lists_suites_and_failing_expectations():
    report = {"success": False,
              "suites": {"events": {"success": False, "evaluated": 91, "failed": 1,
                                    "elapsed_s": 2.0},
                         "drift": {"skipped": True, "evaluated": 0, "failed": 0,
                                   "elapsed_s": 0.0}},
              "failures": [{"suite": "events", "column": "is_click",
                            "expectation": "expect_column_values_to_be_in_set",
                            "observed": "3 values outside {0, 1}", "unexpected_count": 3,
                            "sample": [2, 7, 9],
                            "message": "events.is_click: 3 values outside {0, 1}"}]}
    page = run_pages.validate_page(None, report, "/snap/validation")
    assert "# Data validation: FAILED" in page.text and "could not be cut" in page.text
    assert "| events | **FAIL** | 91 | 1 |" in page.text and "| drift | skipped |" in page.text
    assert ("| events | is_click | expect_column_values_to_be_in_set | events.is_click: 3 "
            "values outside {0, 1} | 3 | 2, 7, 9 |") in page.text
    assert "`/snap/validation/summary.md`" in page.text
    ok = run_pages.validate_page({"until": "2022-04-28", "n_batch_events": 1000,
                                  "drift_checked": True},
                                 {"success": True, "suites": {}, "failures": []}, "/v")
    assert "PASSED" in ok.text and "No expectation failed" in ok.text


def test_validate_page_is_written_from_the_snapshot_folder_pass_or_fail(tmp_path):
    import json

    snap = tmp_path / "snapshot"
    assert run_pages.write_validation(snap, "uri", tmp_path / "page", tmp_path, "c1") is None
    (snap / "validation").mkdir(parents=True)
    report = {"success": False, "suites": {"events": {"success": False, "evaluated": 2,
                                                      "failed": 1, "elapsed_s": 0.1}},
              "failures": []}
    (snap / "validation" / "report.json").write_text(json.dumps(report))
    broken = run_pages.write_validation(snap, "uri", tmp_path / "page", tmp_path, "c1")
    assert "could not be cut" in broken.read_text()  # a broken file: no snapshot.json
    (snap / "snapshot.json").write_text(json.dumps({"until": "2022-04-28",
                                                    "n_batch_events": 5}))
    failed = run_pages.write_validation(snap, "uri", tmp_path / "page", tmp_path, "c1")
    assert "Cycle until **2022-04-28**" in failed.read_text() and "FAILED" in failed.read_text()
    assert (tmp_path / "page").read_text() == failed.read_text()


# -- writing and reports ------------------------------------------------------------------------------
def test_write_puts_the_page_in_the_artifact_and_the_ledger(tmp_path):
    page = run_pages.pretrain_page({"steps": 30}, _history())
    ledger = run_pages.write(page, tmp_path / "kfp" / "pretrain" / "page", tmp_path / "root",
                             "c1")
    assert (tmp_path / "kfp" / "pretrain" / "page").read_text() == page.text == ledger.read_text()
    found = run_pages.ledger_pages(tmp_path / "root", "c1")
    assert set(found) == {"pretrain.html", "pretrain-curves.png"}
    with open(found["pretrain-curves.png"], "rb") as f:
        assert_png(f.read())
    lines = pages_markdown([{"run_id": "c1", "pages": found}], base=tmp_path)
    assert "[pretrain.html](root/runs/c1/pages/pretrain.html)" in "\n".join(lines)
    assert "![c1 pretrain-curves](root/runs/c1/pages/pretrain-curves.png)" in lines
    skipped = run_pages.skipped("align", "not in the stage list")
    assert skipped.kind == "html" and "did not run" in skipped.text


def test_ab_chart_shows_both_arms_and_the_difference_with_intervals():
    rng = np.random.default_rng(0)
    fb = pd.DataFrame({"user_id": np.arange(600), "variant": ["stable"] * 500 + ["canary"] * 100,
                       "reward": np.r_[rng.normal(1.0, 0.3, 500), rng.normal(0.95, 0.3, 100)]})
    arms = ab.arm_intervals(fb)
    assert arms["stable"]["users"] == 500
    for a in arms.values():
        assert a["low"] < a["mean"] < a["high"]
    result = ab.analyze(fb, mde=0.1).to_dict()
    assert_png(run_pages.ab_png(arms, result))
    assert_png(run_pages.ab_png(arms, None))  # arms only, no analysis

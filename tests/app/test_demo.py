"""`onerec demo` end to end (tiny config) and its parts: requests, report, server lifecycle."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from onerec import ab, gitops, registry
from onerec.app.cli import app
from onerec.app.demo import demo_requests
from onerec.app.demo_ab import ABOptions
from onerec.config import Config

runner = CliRunner()
# pretrain's reward and align stages have their own pipeline tests; left out here for time
STAGES = "validate,codebook,pretrain,gate,export,publish"
AB_REQUESTS = 20_000


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, shipped_dir) -> tuple[Path, dict, str]:
    out = tmp_path_factory.mktemp("demo")
    res = runner.invoke(app, ["demo", "--data-dir", str(shipped_dir), "--out", str(out),
                              "--preset", "tiny", "--minutes", "0.1", "--max-steps", "5",
                              "--eval-users", "50", "--stages", STAGES,
                              # 5 steps show the demo's mechanics, not a model above popularity
                              "--no-popularity-floor",
                              "--set", "serve.beam_width=4", "--ab-requests", str(AB_REQUESTS)])
    assert res.exit_code == 0, res.output
    return out, json.loads((out / "report.json").read_text()), res.output


def test_demo_validates_then_runs_two_cycles_with_export_and_a_canary(demo_run):
    out, report, _ = demo_run
    assert report["data"]["success"] is True
    assert set(report["data"]["suites"]) >= {"events", "items", "users", "drift"}
    cycles = report["pipeline"]["cycles"]
    assert [c["run_id"] for c in cycles] == ["cycle-1-2022-04-28", "cycle-2-2022-04-29"]
    assert all(c["failed"] == {} for c in cycles)
    assert [s for s, st in cycles[0]["stages"].items() if st == "ran"] == STAGES.split(",")
    assert cycles[1]["warm_start"] and cycles[1]["init_version"] == cycles[0]["published"]
    assert [c["gate"] for c in cycles] == ["promote", "promote"]
    # cycle 1 promoted at once; cycle 2 went out as a canary in the local GitOps repository
    repo = Path(report["pipeline"]["gitops"]["repo"])
    assert repo.is_relative_to(out) and (repo / ".git").is_dir()
    assert report["pipeline"]["gitops"]["state"] == (
        f"dev: stable {cycles[0]['published']}, canary {cycles[1]['published']} at 10%")
    assert (out / "pipeline" / "report.md").exists() and (out / "pipeline" / "kfp.log").exists()


def test_demo_log_off_a_terminal_shows_every_stage_in_plain_lines_without_escape_codes(
        demo_run):
    _, _, output = demo_run  # CliRunner's stdout is not a terminal, as in CI
    assert "\x1b[" not in output
    for cycle in (1, 2):
        for stage in ("validate-data", "refresh-codebook", "pretrain", "evaluation-gate",
                      "export-model", "publish"):
            assert f"progress cycle {cycle}/2 · {stage} " in output, (cycle, stage)
        assert f"progress cycle {cycle}/2 · pretrain step=5/5 loss=" in output
        assert f"progress cycle {cycle}/2 · evaluation-gate · evaluate-candidate user=" in output
    assert "progress cycle 2/2 · evaluation-gate · evaluate-production user=" in output
    assert "progress feast step=4/4" in output and "progress A/B canary · slates user=" in output


def test_demo_serves_the_published_version_over_http_and_grpc(demo_run):
    _, report, output = demo_run
    s = report["serving"]
    assert s["version"] == report["pipeline"]["cycles"][1]["published"]
    assert s["http_grpc_agree"] and s["server_exit_code"] == 0 and s["model_version"] == 1
    # reward is not in STAGES, so the version carries no reward model: beam order (with the
    # reward stage, the default, it carries one and serves RM selection: test_demo_ab)
    assert s["reranker"] == "beam order" and "re-ranks with beam order" in output
    rows = {(r["protocol"], r["request"]): r for r in s["rows"]}
    assert set(rows) == {(p, n) for p in ("http", "grpc")
                         for n in ("known user", "history only", "unknown user")}
    for (_, name), r in rows.items():
        assert len(r["video_ids"]) == 4 and len(set(r["video_ids"])) == 4  # beam 4: top 4
        assert r["cold_start"] is (name == "unknown user")
    assert "HTTP and gRPC answers agree" in output


def test_demo_answers_the_known_user_from_feast_online(demo_run):
    out, report, output = demo_run
    s = report["serving"]
    known = next(r for r in s["requests"] if r["name"] == "known user")
    assert "histories" not in known  # sent by id only
    f = s["feast"]
    assert Path(f["repo"]) == out / "serving" / "feature_repo"
    assert (Path(f["repo"]) / "data" / "online_store.db").is_file()
    online = f["online_lengths"][str(known["users"][0])]
    assert online["short"] > 0 and online["long"] > 0  # the sequences the server read
    for proto in ("http", "grpc"):
        row = next(r for r in s["rows"] if r["protocol"] == proto and r["request"] == "known user")
        assert row["source"] == "feast" and not row["cold_start"] and row["video_ids"]
    assert f["known_user_from_feast"] is True
    assert f["prepare_s"] + f["apply_s"] + f["materialize_s"] < 60
    assert "--feature_repo" in output and "answered from its Feast online sequences" in (
        " ".join(output.split()))
    md = (out / "report.md").read_text()
    assert "answered **from Feast**" in md and "| feast |" in md


def test_demo_decides_the_canary_and_commits_the_decision(demo_run):
    out, report, output = demo_run
    a = report["ab"]
    assert a["decision"] in ("promote", "rollback", "wait")
    # the decision is the A/B rule's on the feedback the demo logged, not any of the three
    fb = pd.read_parquet(out / "ab" / "feedback.parquet")
    again = ab.analyze(fb, mde=ABOptions.mde)  # the demo's ABOptions keep the default
    assert (again.decision, again.reason) == (a["decision"], a["result"]["reason"])
    assert again.n_stable == a["result"]["n_stable"] and again.n_canary == a["result"]["n_canary"]
    assert again.p_value == pytest.approx(a["result"]["p_value"])
    # both published versions were served; every simulated request saw its arm's slate
    cycles = report["pipeline"]["cycles"]
    arms = a["arms"]
    assert [arms[k]["version"] for k in ("stable", "canary")] == [c["published"] for c in cycles]
    assert sum(arms[k]["requests"] for k in arms) == AB_REQUESTS
    for arm in arms.values():
        assert arm["users"] > 0 and arm["model_version"] == 1 and arm["slate_size"] == 4
        assert 0 < arm["mean_p_click"] < 1
    assert a["result"]["n_stable"] == arms["stable"]["users"]
    assert "assumed_effect" not in a and (out / "ab" / "feedback.parquet").exists()
    repo = Path(report["pipeline"]["gitops"]["repo"])
    if a["decision"] == "wait":
        assert a["commit"] is None
    else:
        assert gitops.log(repo, "dev", 1)[0] == a["commit_subject"]
        assert gitops.read_state(repo, "dev").canary is None
    # the training state follows the decision: the next cycle starts from the stable model
    state = Path(report["pipeline"]["state"])
    prod, cand = registry.read_production(state), registry.read_canary(state)
    if a["decision"] == "promote":
        assert a["candidate"] == "promoted" and cand is None
        assert prod.version == cycles[1]["published"]
    elif a["decision"] == "rollback":
        assert a["candidate"] == "discarded" and cand is None
        assert prod.version == cycles[0]["published"]
    else:
        assert prod.version == cycles[0]["published"] and cand.version == cycles[1]["published"]
    md = (out / "report.md").read_text()
    for text in ("## Data validation", "cycle-2-2022-04-29", "### Gate decisions",
                 "## Serving", "unknown user", f"Decision: **{a['decision']}**",
                 "| stable | `", "| canary | `", "not from an assumed effect",
                 "| click | behaviour model |", "## Wall times"):
        assert text in md
    assert set(report["wall_s"]) >= {"data validation", "pipeline cycle-1-2022-04-28",
                                     "pipeline cycle-2-2022-04-29", "serving", "A/B", "total"}
    assert f"report: {out / 'report.md'}" in output.replace("\n", "")


def test_demo_report_shows_the_gate_table_and_the_run_pages_plots(demo_run):
    from tests.test_run_pages import assert_png

    out, report, _ = demo_run
    md = (out / "report.md").read_text()
    assert "## Gate: held-out window, same users for every model" in md
    assert "| candidate | recall@10 |" not in md and "| model | recall@10 | ndcg@10 |" in md
    assert "### Run pages (what each step shows in the Kubeflow UI)" in md
    for c in report["pipeline"]["cycles"]:
        for plot in ("codebook-utilisation", "pretrain-curves"):
            rel = md.split(f"![{c['run_id']} {plot}](")[1].split(")")[0]
            assert_png((out / rel).read_bytes())
        assert f"[gate.md](pipeline/state/runs/{c['run_id']}/pages/gate.md)" in md
    a = report["ab"]
    assert set(a["arms_ci"]) == {"stable", "canary"}
    assert "![A/B arms: per-user mean reward, 95% intervals](ab/arms.png)" in md
    assert_png((out / "ab" / "arms.png").read_bytes())


def test_demo_requests_cover_known_history_only_and_unknown_users(shipped_dir):
    reqs = demo_requests(shipped_dir, "2022-04-29")
    assert [r["name"] for r in reqs] == ["known user", "history only", "unknown user"]
    known, hist, unknown = reqs
    assert "histories" not in known and known["source"] == "feast"  # Feast online has them
    assert len(hist["histories"]["short_history"][0]) == 5
    assert "histories" not in unknown
    assert len({known["users"][0], hist["users"][0], unknown["users"][0]}) == 3


@pytest.mark.parametrize("args, message", [(["--epochs", "0"], "--epochs: must be > 0"),
                                           (["--cycles", "0"], "--cycles: must be >= 1")])
def test_demo_refuses_bad_step_options_before_doing_anything(tmp_path, args, message):
    out = tmp_path / "never"
    res = runner.invoke(app, ["demo", "--out", str(out), *args])
    assert res.exit_code == 2 and message in res.output
    assert not out.exists()


def test_demo_defaults_decide_steps_not_wall_time():
    import inspect

    from onerec.app import cli
    from onerec.app.demo import DemoOptions

    opts = DemoOptions()
    assert opts.epochs > 0 and opts.max_steps == 0  # passes over the new requests decide
    assert inspect.signature(cli.demo).parameters["epochs"].default == opts.epochs  # one default
    assert opts.eval_users == 0  # every held-out user: 300 cannot separate the models
    cfg = Config.from_preset("small")
    assert (cfg.reward.steps, cfg.align.steps) == (100, 20)  # steps, under a wall-time cap

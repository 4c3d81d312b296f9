"""The demo's run report: `report.json` (everything `onerec.app.demo.run_demo` collected) and
`report.md` (the same for people): data validation, both continuous-training cycles (the tables
of `onerec.app.cycle_report`), gate decisions, GitOps state, the served version, where its users'
sequences came from (Feast online, the request, cold start) and its sample recommendations,
the A/B (per arm: users, requests, mean reward, mean predicted P(click) of the served slates;
the behaviour model's held-out check), its decision and commit, wall times per step and per
stage."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from onerec.app.cycle_report import to_markdown
from onerec.io import atomic_write_text


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, Path):
        return str(v)
    return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)


def write(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write report.json and report.md into `out` (atomically); works on a partial report."""
    js = atomic_write_text(out / "report.json",
                           json.dumps(report, indent=2, default=_plain) + "\n")
    md = atomic_write_text(out / "report.md", to_markdown_report(report, out))
    return js, md


def _status(report: dict[str, Any]) -> str:
    if report.get("error"):
        return f"**failed**: {report['error']}"
    return "completed" if "ab" in report else "incomplete (stopped early)"


def to_markdown_report(r: dict[str, Any], base: Path | None = None) -> str:
    """The report for people; links and images relative to `base` (the report's folder)."""
    cfg = r.get("config", {})
    lines = ["# OneRec demo: run report", "",
             f"Status: {_status(r)}. Config: preset `{cfg.get('preset')}`, fingerprint "
             f"`{cfg.get('fingerprint')}`. Total wall time: {r['wall_s'].get('total', '-')} s.",
             ""]
    lines += _data(r.get("data"))
    p = r.get("pipeline")
    if p:
        lines += ["## Continuous training (kfp.local, `onerec.app.pipeline_local`)", "",
                  f"Pipeline report: `{p['report_md']}`; step logs: `{p['kfp_log']}`.", ""]
        # the cycle report's own tables, one heading level down
        lines += [ln.replace("# ", "## ", 1) if ln.startswith("#") else ln
                  for ln in to_markdown(p["cycles"], base).splitlines()[2:]]
        lines += ["", "### Gate decisions", ""]
        for c in p["cycles"]:
            lines.append(f"- {c['run_id']}: **{c['gate'] or 'not reached'}**"
                         + (f" ({'; '.join(c['gate_reasons'])})" if c["gate_reasons"] else "")
                         + (f"; published `{c['published']}`" if c["published"] else ""))
        if p.get("gitops"):
            g = p["gitops"]
            lines += ["", f"GitOps repository `{g['repo']}` after the pipeline: {g['state']}.",
                      ""]
    lines += _serving(r.get("serving"))
    lines += _ab(r.get("ab"), base)
    lines += ["## Wall times", "", "| step | seconds |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in r["wall_s"].items()]
    return "\n".join(lines) + "\n"


def _data(d: dict[str, Any] | None) -> list[str]:
    if not d:
        return []
    s = d["summary"]
    lines = ["## Data validation", "",
             f"{s['events']:,} impressions, {s['users']:,} users, {s['videos_shown']:,} videos "
             f"shown ({s['videos_in_catalogue']:,} in the catalogue); click rate "
             f"{s['click_rate']}, long-view rate {s['long_view_rate']}. Validation: "
             f"**{'pass' if d['success'] else 'FAIL'}** (`{d['report']}`).", "",
             "| suite | result | expectations | failed |", "| --- | --- | --- | --- |"]
    for name, suite in d["suites"].items():
        lines.append(f"| {name} | {'pass' if suite['success'] else 'FAIL'} | "
                     f"{suite['evaluated']} | {suite['failed']} |")
    lines += [f"- {f}" for f in d["failures"]]
    return [*lines, ""]


def _serving(s: dict[str, Any] | None) -> list[str]:
    if not s:
        return []
    if "skipped" in s:
        return ["## Serving", "", f"Skipped: {s['skipped']}.", ""]
    lines = ["## Serving", "",
             f"Version `{s['version']}` (`{s['repository']}`) on a KServe ModelServer: REST "
             f":{s['http_port']}, gRPC :{s['grpc_port']}; model ready after {s['ready_s']} s; "
             f"re-ranking: {s.get('reranker') or '-'}; "
             f"server stopped with exit code {s['server_exit_code']}. HTTP and gRPC answers "
             f"{'agree' if s['http_grpc_agree'] else 'differ'}.", ""]
    f = s.get("feast")
    if f:
        lengths = "; ".join(f"user {u}: " + ", ".join(f"{k} {n}" for k, n in c.items())
                            for u, c in f["online_lengths"].items())
        lines += [f"User sequences from Feast (`--feature_repo {f['repo']}`, SQLite online "
                  f"store): {f['events']:,} events before the version's cut on the pre-log "
                  f"history, {f['users']:,} users online; prepare {f['prepare_s']} s, apply "
                  f"{f['apply_s']} s, materialize {f['materialize_s']} s ({f['wall_s']} s in "
                  f"all). The known user was sent by id only and answered "
                  f"**{'from Feast' if f['known_user_from_feast'] else 'without Feast'}** "
                  f"({lengths} video ids online).", ""]
    lines += ["| protocol | request | user | sequences | cold start | unknown ids "
              "| video ids (best first) | best score | ms |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in s["rows"]:
        best = f"{row['scores'][0]:.3f}" if row["scores"] else "-"
        lines.append(f"| {row['protocol']} | {row['request']} | {row['user_id']} | "
                     f"{row.get('source', '-')} | {row['cold_start']} | {row['unknown_ids']} | "
                     f"{' '.join(map(str, row['video_ids'])) or '-'} | {best} | "
                     f"{row['latency_ms']} |")
    return [*lines, ""]


def _ab(a: dict[str, Any] | None, base: Path | None = None) -> list[str]:
    if not a:
        return []
    lines = ["## A/B: canary analysis (both versions served, simulated KuaiRand users)", ""]
    if a.get("decision") is None:
        return [*lines, f"No decision: {a.get('reason')}.", ""]
    lines += [f"Before: {a['before']}. {a['requests']:,} simulated requests from users drawn "
              f"by activity, split {100 - a['canary_percent']:g}/{a['canary_percent']:g} by "
              f"user; each user's slate is what their arm's server answered for their history "
              f"before {a['until']}; clicks and long views are drawn from a behaviour model of "
              f"KuaiRand users (`onerec.app.simusers`), not from an assumed effect.", "",
              "| arm | version | re-ranking | users | requests | mean reward "
              "| mean P(click) of the slates | cold-start users | serving s |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for arm, s in a["arms"].items():
        lines.append(f"| {arm} | `{s['version']}` | {s.get('reranker') or '-'} | "
                     f"{s['users']:,} | {s['requests']:,} | "
                     f"{_fmt(s['mean_reward'])} | {_fmt(s['mean_p_click'])} | "
                     f"{s.get('cold_start', '-')} | {_fmt(s.get('serve_s'), 1)} |")
    lines += ["", f"Decision: **{a['decision']}**: {a['summary']}", ""]
    if a.get("plot"):
        plot = os.path.relpath(a["plot"], base) if base is not None else a["plot"]
        lines += [f"![A/B arms: per-user mean reward, 95% intervals]({plot})", ""]
    b = a.get("behaviour")
    if b:
        lines += [f"Behaviour model, held out: the last {b['test_days']} days "
                  f"({b['test_rows']:,} impressions; fitted on the {b['train_rows']:,} before):",
                  "", "| target | model | log-loss | AUC |", "| --- | --- | --- | --- |"]
        for target, models in b["metrics"].items():
            for name, m in models.items():
                label = {"global": "global rate", "user": "per-user rate",
                         "model": "behaviour model"}.get(name, name)
                lines.append(f"| {target} | {label} | {m['log_loss']} | {m['auc']} |")
        lines.append("")
    if a.get("commit"):
        lines += [f"GitOps commit (local repository, not pushed): `{a['commit'][:10]}` "
                  f"{a['commit_subject']}. After: {a['after']}.", ""]
    else:
        lines += ["No commit (wait).", ""]
    lines += ["Rollout history (`git log` of the environment's overlay):", "", "```",
              *a.get("log", []), "```", ""]
    return lines


def _fmt(v: float | None, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def summary_lines(r: dict[str, Any]) -> str:
    """A few lines for the terminal at the end."""
    out = []
    d = r.get("data")
    if d:
        out.append(f"data validation: {'pass' if d['success'] else 'FAIL'}")
    for c in (r.get("pipeline") or {}).get("cycles", []):
        out.append(f"{c['run_id']}: gate {c['gate'] or '-'}, published {c['published'] or '-'}")
    s = r.get("serving") or {}
    if "rows" in s:
        n = sum(1 for row in s["rows"] if row["video_ids"])
        out.append(f"served {s['version']}: {n}/{len(s['rows'])} answers with videos "
                   f"(HTTP + gRPC)")
        if s.get("feast"):
            f = s["feast"]
            how = "from" if f["known_user_from_feast"] else "WITHOUT"
            out.append(f"Feast: known user answered {how} its online sequences; apply + "
                       f"materialize {f['apply_s'] + f['materialize_s']:.1f} s")
    elif "skipped" in s:
        out.append(f"serving skipped: {s['skipped']}")
    a = r.get("ab") or {}
    if a:
        out.append(f"A/B: {a.get('decision') or 'none'}"
                   + (f" -> commit {a['commit'][:10]}" if a.get("commit") else ""))
    out.append(f"wall time: {r['wall_s'].get('total', '-')} s")
    return "\n".join(out)

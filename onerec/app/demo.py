"""`onerec demo` (`make demo`): the main job end to end on the shipped KuaiRand sample.

    1. data summary and validation (Great Expectations), stopping on a failed suite;
    2. continuous training: `cycles` pipeline runs under kfp.local on successive days, the same
       code as `onerec pipeline run --local` (`onerec.app.pipeline_local`): validate, codebook,
       pretrain, reward, align, gate, export, publish; the last cycle publishes a canary in the
       local GitOps repository (`<out>/pipeline/state/gitops`) instead of promoting it;
    3. serving: a Feast feature store for the run (`<out>/serving/feature_repo`: events before
       the served version's cut, SQLite online store), the KServe ModelServer on the newest
       published version reading it (a subprocess on free ports; it re-ranks each beam with the
       reward model the version carries, RM selection, whenever the cycle trained one: the
       served default, `serve.rm_selection`), recommendations over HTTP
       and gRPC (tritonclient, in a client subprocess) for a known user sent by id only (the
       transformer reads the sequences from Feast online), a user given only by a history and
       an unknown user (cold start); the server is stopped on every path;
    4. A/B: both published versions served at once, simulated KuaiRand users split between
       them at the canary percentage, their clicks and long views on the slates each version
       served drawn from a behaviour model of real users (`onerec.app.demo_ab`,
       `onerec.app.simusers`), the analysis (`onerec.ab.analyze`), and the promote or
       rollback commit the decision makes in the local GitOps repository (nothing is pushed);
    5. the run report: `<out>/report.md` and `<out>/report.json` (`onerec.app.demo_report`).

The CLI command (`onerec/app/cli.py`) parses options and calls `run_demo`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from onerec.config import Config


class DemoError(RuntimeError):
    """A step of the demo failed; the report written so far says which (exit code inside)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class DemoOptions:
    data_dir: Path = Path("data/kuairand-pure")
    out: Path = Path("runs/demo")
    # safety cap on each training stage's wall time per cycle (alignment gets half of it);
    # steps come from `epochs` and the Config, so a busy machine gives the same models: the
    # cap is 3-4x an idle 2-core run (cycle 1's pretraining: 3-4 minutes), since a cap that
    # binds makes the learning rate follow the clock (5 minutes did on a busy machine)
    minutes: float = 15.0
    # pretraining passes over each cycle's new requests: 6 beat 3, 4, 8 and 10 on the 04-26
    # held-out day (docs/results.md)
    epochs: float = 6.0
    cycles: int = 2
    start: str = "2022-04-28"  # `until` of the first cycle
    stages_csv: str = ""  # "" = every stage installed here
    max_steps: int = 0  # pretraining steps per cycle (0: from `epochs`)
    eval_users: int = 0  # users the gate measures (0: all, ~3,400 a day; 300 cannot tell)
    popularity_floor: bool = True  # the gate blocks a candidate significantly below popularity
    skip_serve: bool = False
    ab_requests: int = 300_000  # simulated A/B requests (~12 a user: reaches the planned sample)
    env: str = "dev"


class _Clock:
    """Wall time per demo step, in order."""

    def __init__(self) -> None:
        self.walls: dict[str, float] = {}
        self.t0 = time.perf_counter()

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            self.walls[name] = round(time.perf_counter() - t0, 1)

    def total(self) -> float:
        return round(time.perf_counter() - self.t0, 1)


def run_demo(cfg: Config, opts: DemoOptions, console: Console) -> Path:
    """Every step in order; returns the report's Markdown path. Raises DemoError (after
    writing the report so far) when a step fails."""
    from onerec.app import demo_report

    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    clock = _Clock()
    report: dict[str, Any] = {"config": {"preset": cfg.preset, "fingerprint": cfg.fingerprint()},
                              "options": {k: str(v) for k, v in vars(opts).items()},
                              "wall_s": clock.walls}
    console.rule("[bold]OneRec demo")
    console.print(f"config: preset={cfg.preset} fingerprint={cfg.fingerprint()}  run folder: "
                  f"{out}", highlight=False)
    try:
        console.rule("1. data: summary and validation")
        report["data"] = clock.run("data validation", lambda: _validate(cfg, opts, console))
        console.rule(f"2. continuous training: {opts.cycles} cycles under kfp.local")
        report["pipeline"] = _pipeline(cfg, opts, console, clock)
        version = report["pipeline"]["served_version"]
        if opts.skip_serve:
            report["serving"] = {"skipped": "--skip-serve"}
        elif version is None:
            report["serving"] = {"skipped": "no exported version was published"}
        else:
            console.rule(f"3. serving {version}: KServe ModelServer, tritonclient HTTP + gRPC")
            report["serving"] = clock.run("serving", lambda: _serve(cfg, opts, version,
                                                                    report, console))
        console.rule("4. A/B: canary analysis on simulated KuaiRand users")
        report["ab"] = clock.run("A/B", lambda: _ab(cfg, opts, report, console))
    except DemoError as e:
        report["error"] = str(e)
        raise
    except Exception as e:  # a refusal or a serving failure: say which, keep the report
        from onerec.app.demo_serving import ServingError
        from onerec.gitops import GitOpsError

        if not isinstance(e, (ServingError, GitOpsError)):
            report["error"] = f"{type(e).__name__}: {e}"
            raise
        report["error"] = str(e)
        raise DemoError(str(e)) from e
    finally:
        report["wall_s"]["total"] = clock.total()
        js, md = demo_report.write(report, out)
    console.rule("[green]done")
    console.print(demo_report.summary_lines(report), highlight=False)
    console.print(f"report: [bold]{md}[/]  ({js})")
    return md


# -- 1. data -------------------------------------------------------------------------------------
def _validate(cfg: Config, opts: DemoOptions, console: Console) -> dict[str, Any]:
    import json

    from onerec.app.validate_cli import run_validation
    from onerec.data import kuairand

    summary = kuairand.load(opts.data_dir).summary()
    table = Table(title=str(opts.data_dir))
    table.add_column("statistic")
    table.add_column("value", justify="right")
    for k, v in summary.items():
        table.add_row(k, f"{v:,}" if isinstance(v, int) else str(v))
    console.print(table)
    ok = run_validation(opts.data_dir, cfg, None, opts.out / "validation")
    rep = json.loads((opts.out / "validation" / "report.json").read_text())
    result = {"summary": summary, "success": ok,
              "suites": {n: {k: s[k] for k in ("success", "evaluated", "failed")}
                         for n, s in rep["suites"].items()},
              "failures": [f.get("message", str(f)) for f in rep.get("failures", [])],
              "report": str(opts.out / "validation" / "report.json")}
    if not ok:
        raise DemoError("data validation failed: the run stops here (nothing trains on bad data)")
    return result


# -- 2. continuous training ------------------------------------------------------------------------
def _pipeline(cfg: Config, opts: DemoOptions, console: Console, clock: _Clock) -> dict[str, Any]:
    from onerec import gitops, progress, registry
    from onerec.app.pipeline_local import CycleOptions, cycle_line, run_cycles

    folder = opts.out / "pipeline"
    kfp_log = folder / "kfp.log"
    # kfp.local's steps run as subprocesses logging into kfp.log: follow it, so the terminal
    # shows which stage of which cycle runs and its progress (`onerec.progress`)
    follow = progress.Follow(kfp_log, progress.make_view(console))
    copts = CycleOptions(cycles=opts.cycles, start=opts.start, stages_csv=opts.stages_csv,
                         train_minutes=opts.minutes, max_steps=opts.max_steps, epochs=opts.epochs,
                         eval_users=opts.eval_users, popularity_floor=opts.popularity_floor,
                         canary_last=True)
    def on_start(i: int, until: str) -> None:
        follow.label = f"cycle {i}/{opts.cycles} · "
        console.print(f"cycle {i}: until {until} (kfp.local; step logs: {kfp_log}) ...",
                      highlight=False)

    def on_cycle(i: int, c: dict[str, Any], wall: float) -> None:
        follow.read()  # the cycle's last stage ends before its summary
        clock.walls[f"pipeline {c['run_id']}"] = wall
        ran = [s for s, st in c["stages"].items() if st == "ran"]
        console.print(f"  stages run: {', '.join(ran)}", highlight=False)
        console.print("  " + cycle_line(c, wall), highlight=False)

    with follow:
        run = run_cycles(cfg, opts.data_dir, folder, copts, on_start=on_start,
                         on_cycle=on_cycle, kfp_log=kfp_log)
    result: dict[str, Any] = {"cycles": run.summaries, "report_md": str(run.report_md),
                              "report_json": str(run.report_json), "kfp_log": str(kfp_log),
                              "state": str(run.state), "failed": run.failed,
                              "served_version": None, "gitops": None}
    if run.failed:
        raise DemoError(f"{run.run_ids[-1]} failed: {run.failed}; pipeline report "
                        f"{run.report_md}, step logs {kfp_log}")
    published = [c for c in run.summaries if c["published"]]
    exported = [c for c in published if c["stages"].get("export") == "ran"]
    if exported:
        result["served_version"] = exported[-1]["published"]
    repo = run.state / registry.GITOPS
    if (repo / ".git").exists():
        state = gitops.read_state(repo, opts.env)
        result["gitops"] = {"repo": str(repo), "state": state.describe(),
                            "log": gitops.log(repo, opts.env, 10)}
        console.print(f"GitOps {repo}: {state.describe()}", highlight=False)
    console.print(f"pipeline report: {run.report_md}", highlight=False)
    return result


# -- 3. serving ----------------------------------------------------------------------------------
def demo_requests(data_dir: Path, until: str) -> list[dict[str, Any]]:
    """Three requests: a known KuaiRand user by id only (the most active clicker before
    `until`; the transformer reads their sequences from Feast online), a new user given only a
    short history (the last day's most clicked videos), and a new user with nothing (the
    cold-start table answers). `source` says where each user's sequences come from."""
    from onerec.data import kuairand
    from onerec.stages import day_ms

    ds = kuairand.load(data_dir)
    ev = ds.events[ds.events["time_ms"] < day_ms(until)]
    clicks = ev[ev["is_click"] == 1]
    known = int(clicks["user_id"].value_counts().idxmax())
    last_day = clicks[clicks["time_ms"] >= day_ms(until) - 86_400_000]
    popular = [int(v) for v in last_day["video_id"].value_counts().index[:5]]
    new_id = int(max(ds.events["user_id"].max(), ds.users["user_id"].max())) + 1
    return [
        {"name": "known user", "users": [known], "source": "feast"},
        {"name": "history only", "users": [new_id], "source": "request",
         "histories": {"short_history": [popular]}},
        {"name": "unknown user", "users": [new_id + 1], "source": "none"},
    ]


def _serve(cfg: Config, opts: DemoOptions, version: str, report: dict[str, Any],
           console: Console) -> dict[str, Any]:
    from onerec import registry
    from onerec.app.demo_serving import Server, feature_store, query
    from onerec.stages import day_ms

    folder = opts.out / "serving"
    repo = Path(report["pipeline"]["state"]) / registry.MODELS / version
    until = next(c["until"] for c in report["pipeline"]["cycles"] if c["published"] == version)
    requests = demo_requests(opts.data_dir, until)
    known = [u for r in requests if r["source"] == "feast" for u in r["users"]]
    t0 = time.perf_counter()
    feast = feature_store(cfg, opts.data_dir, day_ms(until), folder / "feature_repo", known,
                          console=console)
    feast["wall_s"] = round(time.perf_counter() - t0, 1)
    console.print(f"Feast {feast['repo']}: {feast['events']:,} events before {until} on the "
                  f"pre-log history, {feast['users']:,} users online (SQLite); prepare "
                  f"{feast['prepare_s']} s, apply {feast['apply_s']} s, materialize "
                  f"{feast['materialize_s']} s", highlight=False)
    cfg_path = cfg.save(folder / "config.yaml")
    server = Server(repo=repo, config=cfg_path, log_path=folder / "server.log",
                    cold_start_data=opts.data_dir.resolve(),
                    feature_repo=folder / "feature_repo")
    console.print(f"python -m serving.server --repo {repo} --feature_repo {server.feature_repo} "
                  f"(REST :{server.http_port}, gRPC :{server.grpc_port}; log "
                  f"{server.log_path})", highlight=False)
    with server:
        ready_s = server.wait_ready()
        reranker = server.reranker()
        console.print(f"model ready after {ready_s:.1f} s; re-ranks with {reranker}",
                      highlight=False)
        answers = query(server, requests, folder)
    console.print(f"server stopped (exit code {server.proc.returncode if server.proc else '-'})",
                  highlight=False)
    rows = _answer_rows(answers, requests)
    table = Table(title=f"recommendations from {version} (top {len(rows[0]['video_ids'])})"
                  if rows and rows[0]["video_ids"] else f"recommendations from {version}")
    for col in ("proto", "request", "user", "sequences", "cold", "video ids (best first)",
                "score", "ms"):
        table.add_column(col, no_wrap=col != "video ids (best first)")
    for r in rows:
        table.add_row(r["protocol"], r["request"], str(r["user_id"]), r["source"],
                      "yes" if r["cold_start"] else "no",
                      " ".join(map(str, r["video_ids"])) or "-",
                      f"{r['scores'][0]:.2f}" if r["scores"] else "-", f"{r['latency_ms']:.0f}")
    console.print(table)
    agree = all(a["rows"] == b["rows"] for a, b in zip(answers["http"], answers["grpc"],
                                                       strict=True))
    console.print(f"HTTP and gRPC answers {'agree' if agree else 'DIFFER'}")
    from_feast = [r for r in rows if r["source"] == "feast"]
    feast["known_user_from_feast"] = bool(from_feast) and all(
        not r["cold_start"] and r["video_ids"] for r in from_feast)
    how = ("from its Feast online sequences" if feast["known_user_from_feast"]
           else "WITHOUT its Feast sequences (cold start)")
    lengths = "; ".join(f"user {u}: " + ", ".join(f"{k} {n}" for k, n in c.items())
                        for u, c in feast["online_lengths"].items())
    console.print(f"known user: no history sent, answered {how} ({lengths} video ids online)",
                  highlight=False)
    return {"version": version, "repository": str(repo), "http_port": server.http_port,
            "grpc_port": server.grpc_port, "ready_s": round(ready_s, 1), "reranker": reranker,
            "model_version": answers["http"][0]["model_version"] if answers["http"] else None,
            "feast": feast, "requests": requests, "rows": rows, "http_grpc_agree": agree,
            "server_exit_code": server.proc.returncode if server.proc else None,
            "server_log": str(server.log_path)}


def _answer_rows(answers: dict[str, list[dict[str, Any]]],
                 requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per protocol, request and user; `source`: where the user's sequences came from
    (request, feast; "cold start" when the answer is the cold-start table)."""
    sent = {r["name"]: r.get("source", "request") for r in requests}
    rows = []
    for protocol, results in answers.items():
        for res in results:
            for row in res["rows"]:
                source = "cold start" if row["cold_start"] else sent.get(res["name"], "?")
                rows.append({"protocol": protocol, "request": res["name"],
                             "latency_ms": res["latency_ms"], "source": source, **row})
    return rows


# -- 4. A/B --------------------------------------------------------------------------------------
def _ab(cfg: Config, opts: DemoOptions, report: dict[str, Any],
        console: Console) -> dict[str, Any]:
    from onerec import gitops, registry
    from onerec.app.demo_ab import ABOptions, run

    g = report["pipeline"].get("gitops")
    if g is None:
        console.print("no GitOps repository (nothing was published): nothing to analyse")
        return {"decision": None, "reason": "nothing was published"}
    repo = Path(g["repo"])
    state = gitops.read_state(repo, opts.env)
    if state.canary is None:
        console.print(f"{state.describe()}: no canary to analyse (the last cycle's gate "
                      "blocked its candidate, or it was promoted)", highlight=False)
        return {"decision": None, "reason": "no canary", "state": state.describe()}
    if opts.skip_serve:
        console.print("--skip-serve: no A/B (it serves both versions)")
        return {"decision": None, "reason": "--skip-serve (the A/B serves both versions)",
                "state": state.describe()}
    models = Path(report["pipeline"]["state"]) / registry.MODELS
    missing = [v for v in (state.stable.version, state.canary.version)
               if not (models / v).is_dir()]
    if missing:
        console.print(f"no exported model repository for {', '.join(missing)}: no A/B",
                      highlight=False)
        return {"decision": None, "reason": f"not exported: {', '.join(missing)}",
                "state": state.describe()}
    until = next((c["until"] for c in report["pipeline"]["cycles"]
                  if c["published"] == state.canary.version), opts.start)
    aopts = ABOptions(data_dir=opts.data_dir, work_dir=opts.out / "ab", state=models.parent,
                      stable=state.stable.version, canary=state.canary.version,
                      canary_percent=state.canary_percent, until=until,
                      n_requests=opts.ab_requests)
    console.print(f"{state.describe()}; {opts.ab_requests:,} simulated requests; histories "
                  f"before {until}; servers' logs in {aopts.work_dir}", highlight=False)
    outcome = run(cfg, aopts, log=lambda line: console.print(line, highlight=False),
                  console=console)
    outcome.feedback.to_parquet(aopts.work_dir / "feedback.parquet")
    table = Table(title="A/B arms", caption="reward: mean per request; P(click): the behaviour "
                  "model's, mean over the served slates")
    for col in ("arm", "version", "users", "requests", "reward", "P(click)"):
        table.add_column(col, justify="left" if col in ("arm", "version") else "right",
                         no_wrap=True)
    for arm, a in outcome.arms.items():
        table.add_row(arm, a["version"], f"{a['users']:,}", f"{a['requests']:,}",
                      _num(a["mean_reward"]), _num(a["mean_p_click"]))
    console.print(table)
    result = outcome.result
    console.print(f"decision: [bold]{result.summary()}[/]", highlight=False)
    arms_ci, plot = _ab_plot(outcome.feedback, result.to_dict(), aopts.work_dir / "arms.png")
    out: dict[str, Any] = {"decision": result.decision, "result": result.to_dict(),
                           "summary": result.summary(), "before": state.describe(),
                           "canary_percent": state.canary_percent, "until": until,
                           "requests": opts.ab_requests, "arms": outcome.arms,
                           "arms_ci": arms_ci, "plot": str(plot),
                           "behaviour": outcome.behaviour, "walls": outcome.walls,
                           "feedback": str(aopts.work_dir / "feedback.parquet"), "commit": None}
    if result.decision != "wait":
        step = gitops.promote if result.decision == "promote" else gitops.rollback
        sha = step(repo, opts.env, f"A/B: {result.summary()}")
        subject = gitops.log(repo, opts.env, 1)[0]
        after = gitops.read_state(repo, opts.env)
        # the training state follows: the candidate becomes production or is discarded
        moved = registry.follow_rollout(models.parent, after.stable.version,
                                        after.canary.version if after.canary else None)
        out.update({"commit": sha, "commit_subject": subject, "after": after.describe(),
                    "candidate": moved})
        console.print(f"GitOps commit in {repo}: {subject} (local; push to let Argo CD sync); "
                      f"candidate {state.canary.version} {moved} in {models.parent}",
                      highlight=False)
    else:
        console.print("wait: no commit (collect more traffic, then run the analysis again)")
    out["log"] = gitops.log(repo, opts.env, 10)
    return out


def _ab_plot(feedback: Any, result: dict[str, Any], path: Path
             ) -> tuple[dict[str, dict[str, float]], Path]:
    """The arms' per-user mean reward with 95% intervals, and the difference's, as a PNG."""
    from onerec.ab import arm_intervals
    from onerec.io import atomic_write_bytes
    from onerec.run_pages import ab_png

    arms = arm_intervals(feedback)
    return arms, atomic_write_bytes(path, ab_png(arms, result))


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"

"""The demo's A/B on the two served versions: the stable and the canary model each on its own
KServe ModelServer, simulated KuaiRand users split between them, feedback on what each served.

    1. the world: `onerec.app.simusers.BehaviourModel` fitted on the logged impressions (and its
       time-held-out check against the global and per-user rates);
    2. traffic: `n_requests` requests from users drawn by activity; `onerec.ab.TrafficSplitter`
       (the canary percentage of the GitOps state, salted by the canary version) puts each user
       in one arm for the whole experiment;
    3. serving: both versions start at once (`onerec.app.demo_serving.Server`, free ports); each
       arm's users are sent to its server, 256 a request and two requests in flight, over gRPC
       from a client subprocess (tritonclient, never in a process with kserve), with histories
       as of the canary's `until` built the way the feature store builds them
       (`onerec.features.sequences.SequenceBook`: recent clicks, long views and likes,
       everything shown; seeded by KuaiRand's pre-log history).
       A user is served once: the model is deterministic given the history, so the slate is
       cached for all of the user's requests;
    4. feedback: each request shows the user's slate; clicks and long views are drawn from the
       behaviour model (`simusers.served_feedback`); `onerec.ab.analyze` decides.

No effect is assumed: the arms differ only by the videos their servers recommended.

    python -m onerec.app.demo_ab slates --grpc HOST:PORT --model NAME
        --requests IN.npz --out OUT.npz
        (the client subprocess: IN holds user_id and the padded histories; OUT the slates)
"""

from __future__ import annotations

import argparse
import subprocess  # nosec B404 # argv lists only, no shell
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from onerec.app.demo_serving import Server, ServingError, subprocess_env
from onerec.config import Config

if TYPE_CHECKING:
    from rich.console import Console

BATCH = 256  # users per request: serving.schema.Limits.max_batch
HISTORY_KEYS = ("short_history", "pos_history", "long_history")


@dataclass
class ABOptions:
    """One experiment: which versions, at what split, on how much simulated traffic."""

    data_dir: Path
    work_dir: Path  # servers' logs, request and slate files
    state: Path  # pipeline state: <state>/models/<version> are the exported repositories
    stable: str  # versions
    canary: str
    canary_percent: float
    until: str  # the canary's training cutoff: histories are taken before it
    n_requests: int = 300_000  # ~12 a user: enough for the planned sample at 10% canary
    mde: float = 0.02  # minimum relative effect of interest (ab.analyze)
    seed: int = 0


@dataclass
class ABOutcome:
    """What `run` found; the caller decides what to commit."""

    result: Any  # onerec.ab.ABResult
    feedback: pd.DataFrame
    arms: dict[str, dict[str, Any]]  # per arm: version, users, requests, reward, P(click), ...
    behaviour: dict[str, Any]  # the behaviour model's held-out check (simusers.holdout)
    walls: dict[str, float] = field(default_factory=dict)  # seconds per part


@dataclass
class ArmServer(Server):
    """A `Server` whose ONNX Runtime runs each request on `ort_threads` threads. The slate
    client keeps two requests in flight instead: on 2 cores that served 21,240 users in 49 s,
    against 81 s for one request at a time on two threads."""

    ort_threads: int = 1

    def command(self) -> list[str]:
        return [*super().command(), "--ort_threads", str(self.ort_threads)]


# -- histories ----------------------------------------------------------------------------------
def user_histories(data_dir: Path, until: str, cfg: Config,
                   users: np.ndarray) -> dict[str, np.ndarray]:
    """The users' (short, pos, long) histories as of `until` (events strictly before it),
    right-aligned INT64 arrays padded with -1: {'user_id': (N,), '<history>': (N, L)}."""
    from onerec.data import kuairand
    from onerec.features.sequences import SequenceBook
    from onerec.stages import day_ms

    book = SequenceBook(cfg.data)
    wanted = set(int(u) for u in users)
    if cfg.features.seed_history:
        hist = kuairand.read_history(data_dir)
        if hist is not None:
            book.seed_history(hist[hist["user_id"].isin(wanted)])
    ev = kuairand.load(data_dir).events
    ev = ev[(ev["time_ms"] < day_ms(until)) & ev["user_id"].isin(wanted)]
    book.apply(ev)
    widths = (cfg.data.max_seq_len, cfg.data.max_pos_seq_len, cfg.data.max_long_seq_len)
    out = {"user_id": np.asarray(users, np.int64)}
    for key, width in zip(HISTORY_KEYS, widths, strict=True):
        out[key] = np.full((len(users), width), -1, np.int64)
    for i, u in enumerate(out["user_id"].tolist()):
        s = book.users.get(u)
        if s is None:
            continue
        for key, seq in zip(HISTORY_KEYS, ([r[0] for r in s.recent],
                                           [r[0] for r in s.positive], list(s.long)),
                            strict=True):
            if seq:
                out[key][i, -len(seq):] = seq
    return out


# -- slates from a server -----------------------------------------------------------------------
def start_slates(server: Server, histories: dict[str, np.ndarray],
                 work_dir: Path, name: str) -> tuple[subprocess.Popen[bytes], Path]:
    """Launch the client subprocess for one arm; `read_slates` collects its answer."""
    work_dir.mkdir(parents=True, exist_ok=True)
    spec, out = work_dir / f"{name}-requests.npz", work_dir / f"{name}-slates.npz"
    np.savez(spec, **histories)
    cmd = [sys.executable, "-m", "onerec.app.demo_ab", "slates", "--grpc", server.grpc_url,
           "--model", server.model, "--requests", str(spec.resolve()), "--out",
           str(out.resolve())]
    log = (work_dir / f"{name}-client.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,  # nosec B603
                            env=subprocess_env())
    log.close()
    return proc, out


def read_slates(proc: subprocess.Popen[bytes], out: Path, timeout_s: float,
                ) -> tuple[dict[int, list[int]], dict[str, Any]]:
    """Wait for the client; -> ({user: video ids best first}, {cold_start users, model
    version, seconds})."""
    try:
        code = proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise ServingError(f"slate client timed out after {timeout_s:.0f} s") from None
    log = out.with_name(out.name.replace("-slates.npz", "-client.log"))
    if code != 0:
        raise ServingError(f"slate client failed (exit {code}): "
                           f"{log.read_text(errors='replace')[-2000:]}")
    z = np.load(out)
    slates = {int(u): [int(v) for v in row if v >= 0]
              for u, row in zip(z["user_id"], z["video_ids"], strict=True)}
    return slates, {"cold_start": int(z["cold_start"].sum()),
                    "model_version": int(z["model_version"]), "serve_s": float(z["seconds"])}


# -- the experiment -----------------------------------------------------------------------------
def run(cfg: Config, opts: ABOptions, log: Any = print, console: Console | None = None,
        ) -> ABOutcome:
    """Fit the world, split, serve both versions, simulate feedback, analyse (no commit).
    Each arm's slate client reports its progress on `console` (`onerec.progress.Follow`)."""
    from onerec import ab, progress, registry
    from onerec.app import simusers
    from onerec.data import kuairand

    walls: dict[str, float] = {}
    t0 = time.perf_counter()
    events, items = kuairand.read_events(opts.data_dir), kuairand.read_items(opts.data_dir)
    check = simusers.holdout(events, items)
    world = simusers.BehaviourModel.fit(events, items)
    walls["behaviour model"] = round(time.perf_counter() - t0, 1)
    m = check["metrics"]
    log(f"behaviour model (held-out last {check['test_days']} days, {check['test_rows']:,} "
        f"impressions): click AUC {m['click']['model']['auc']:.3f} (per-user rate "
        f"{m['click']['user']['auc']:.3f}), log-loss {m['click']['model']['log_loss']:.4f} "
        f"(global {m['click']['global']['log_loss']:.4f}, per-user "
        f"{m['click']['user']['log_loss']:.4f}); fitted in {walls['behaviour model']} s")

    rng = np.random.default_rng(opts.seed)
    request_users = world.draw_users(opts.n_requests, rng)
    splitter = ab.TrafficSplitter(opts.canary_percent, salt=opts.canary)
    arms = splitter.arms(request_users)
    versions = {"stable": opts.stable, "canary": opts.canary}
    arm_users = {a: np.unique(request_users[arms == a]) for a in versions}

    t0 = time.perf_counter()
    cfg_path = cfg.save(opts.work_dir / "config.yaml")
    servers = {a: ArmServer(repo=opts.state / registry.MODELS / v, config=cfg_path,
                            log_path=opts.work_dir / f"{a}-server.log",
                            cold_start_data=opts.data_dir.resolve())
               for a, v in versions.items()}
    slates: dict[int, list[int]] = {}
    info: dict[str, dict[str, Any]] = {}
    with servers["stable"], servers["canary"]:
        everyone = np.unique(request_users)  # histories while the servers load
        hist = user_histories(opts.data_dir, opts.until, cfg, everyone)
        walls["histories"] = round(time.perf_counter() - t0, 1)
        for s in servers.values():
            s.wait_ready()
        walls["servers ready"] = round(time.perf_counter() - t0, 1)
        rerankers = {a: s.reranker() for a, s in servers.items()}
        log("; ".join(f"{a} {versions[a]} re-ranks with {r}" for a, r in rerankers.items()))
        t1 = time.perf_counter()
        for a, users in arm_users.items():
            if len(users):
                rows = np.searchsorted(everyone, users)
                proc, out = start_slates(servers[a], {k: v[rows] for k, v in hist.items()},
                                         opts.work_dir, a)
                with progress.Follow(opts.work_dir / f"{a}-client.log",
                                     progress.make_view(console), label=f"A/B {a} · "):
                    got, info[a] = read_slates(proc, out, timeout_s=600)
                slates.update(got)
        walls["slates"] = round(time.perf_counter() - t1, 1)
    counts = ", ".join(f"{a}: {len(u):,}" for a, u in arm_users.items())
    log(f"served {len(slates):,} users' slates ({counts}) in {walls['slates']} s (servers "
        f"ready after {walls['servers ready']} s)")

    feedback = simusers.served_feedback(world, request_users, arms, slates, seed=opts.seed)
    result = ab.analyze(feedback, mde=opts.mde)
    summary: dict[str, dict[str, Any]] = {}
    for a, v in versions.items():
        f = feedback[feedback["variant"] == a]
        per_user = f.drop_duplicates("user_id")
        summary[a] = {"version": v, "reranker": rerankers[a],
                      "users": int(f["user_id"].nunique()), "requests": len(f),
                      "mean_reward": float(f["reward"].mean()) if len(f) else None,
                      "mean_p_click": float(per_user["p_click"].mean()) if len(f) else None,
                      "slate_size": float(per_user["impressions"].mean()) if len(f) else None,
                      **info.get(a, {})}
    return ABOutcome(result, feedback, summary, check, walls)


# -- the client process -------------------------------------------------------------------------
def _slates(url: str, model: str, requests: Path, out: Path, parallel: int) -> None:
    """Every user's slate, BATCH users a request, `parallel` requests in flight (the server
    runs each on its own ONNX Runtime thread); one tritonclient client per thread."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from onerec.progress import Reporter
    from serving.client import RecommendClient

    z = np.load(requests)
    users = z["user_id"]
    local = threading.local()
    clients: list[RecommendClient] = []

    def ask(lo: int) -> tuple[list[list[int]], list[bool], int]:
        if not hasattr(local, "client"):
            local.client = RecommendClient(url, "grpc", model)
            clients.append(local.client)
        hist = {k: [[int(v) for v in r[r >= 0]] for r in z[k][lo:lo + BATCH]]
                for k in HISTORY_KEYS}
        res = local.client.recommend(users[lo:lo + BATCH].tolist(), hist)
        version = res.model_version if res.model_version is not None else -1
        return [r.video_ids for r in res.rows], [r.cold_start for r in res.rows], version

    t0 = time.perf_counter()
    answers: list[tuple[list[list[int]], list[bool], int]] = []
    try:
        with Reporter("slates", total=len(users), unit="user", batch_size=1) as report, \
                ThreadPoolExecutor(max(1, parallel)) as pool:
            for answer in pool.map(ask, range(0, len(users), BATCH)):
                answers.append(answer)
                report({"step": min(len(users), len(answers) * BATCH)})
    finally:
        for c in clients:
            c.close()
    rows = [r for a in answers for r in a[0]]
    cold = [c for a in answers for c in a[1]]
    width = max((len(r) for r in rows), default=0)
    vids = np.full((len(rows), max(width, 1)), -1, np.int64)
    for i, r in enumerate(rows):
        vids[i, :len(r)] = r
    np.savez(out, user_id=users, video_ids=vids, cold_start=np.asarray(cold, bool),
             model_version=np.int64(answers[-1][2] if answers else -1),
             seconds=np.float64(time.perf_counter() - t0))


def _main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m onerec.app.demo_ab")
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("slates", help="ask a running server for each user's slate (gRPC)")
    q.add_argument("--grpc", required=True)
    q.add_argument("--model", default="onerec")
    q.add_argument("--requests", type=Path, required=True)
    q.add_argument("--out", type=Path, required=True)
    q.add_argument("--parallel", type=int, default=2, help="requests in flight")
    args = p.parse_args(argv)
    _slates(args.grpc, args.model, args.requests, args.out, args.parallel)


if __name__ == "__main__":
    _main()

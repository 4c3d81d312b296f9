"""Serving benchmark: latency per request and throughput of the local KServe server, over HTTP
and gRPC with tritonclient, at several beam widths; then a load test with concurrent clients.

    PYTHONPATH=. python -m bench.serving --repo runs/model_repository           # the demo model
    PYTHONPATH=. python -m bench.serving --repo runs/model_repository --quick   # ~1 minute
    PYTHONPATH=. python -m bench.serving --standin --quick    # the harness on a stand-in graph
    PYTHONPATH=. python -m bench.serving --repo R --checkpoint CKPT --codebook CB  # + generation
    PYTHONPATH=. python -m bench.serving --repo R --requests 0 --duration 60 --concurrency 32 \
        --beams 32,512 --protocols http,grpc      # load only: every (protocol, beam), issue #15
    PYTHONPATH=. python -m bench.serving --repo R --beams 32 --rm-selection-ablation
        # + what RM selection (the served default) costs against beam order, same version

The server runs in a subprocess (`python -m serving.server`, new versions not polled), on free
ports, with the Config of the newest version folder (its config.yaml) when there is one. Each
request is one user with full-length histories of random known videos (the model reads
data.max_seq_len / max_pos_seq_len / max_long_seq_len of them), so the transformer's id mapping
and the graph both do a realistic amount of work. Latency: sequential requests after a warm-up,
p50 / p99 per request and the throughput they imply (`--requests 0` skips it). Load test, for
every (protocol, beam) of `--protocols` x `--beams` (or `--load-beam`): `--concurrency`
requests in flight (that many client threads, spread over `--client-procs` processes so the
clients' own Python work is not one GIL), each sending back to back for `--duration` seconds
over loopback after one warm-up request per thread, all starting together. It reports
requests, throughput, p50 / p99 of the requests that succeeded, errors (any exception, and of
those the timeouts: a request slower than `--timeout` seconds counts as an error) and the
1-minute load average at the end of each cell (the clients share the server's cores: on a small
machine the load test measures them together). Clients never import kserve
(tritonclient.grpc and kserve cannot share a process).

With `--checkpoint/--codebook` (the served version's), `bench.generation` then runs on the same
model and beams, with no server: reference beam search vs fast path vs ONNX Runtime, ratios
within each run (the issue's "fast path vs reference as a ratio in the same run").

The stand-in (`--standin`) is the test graph of tests/serving_util.py: it does no generation,
so its numbers are the serving overhead alone (protocol, transformer, id mapping).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import signal
import socket
import subprocess  # nosec B404 # argv lists only, no shell
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from bench.report import print_table
from bench.runtime import reexec_with_tuned_env

ROOT = Path(__file__).resolve().parents[1]
console = Console()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def newest_version(model_dir: Path) -> Path | None:
    from serving.repository import list_versions

    versions = list_versions(model_dir)
    return model_dir / str(versions[-1]) if versions else None


def standin_repo(root: Path, lengths: tuple[int, int, int], n_items: int) -> Path:
    sys.path.insert(0, str(ROOT))
    from tests.serving_util import write_version

    write_version(root / "onerec", 1, n_items=n_items, lengths=lengths, beam_width=None)
    return root


def start_server(repo: Path, config: Path | None, max_beam: int, ort_threads: int | None = None,
                 overrides: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str, str, Path]:
    http, grpc = free_port(), free_port()
    log = Path(tempfile.mkdtemp(prefix="onerec-bench-")) / "server.log"
    cmd = [sys.executable, "-m", "serving.server", "--repo", str(repo), "--http_port", str(http),
           "--grpc_port", str(grpc), "--poll_interval", "0", "--enable_latency_logging", "false",
           "--set", f"serve.max_beam_width={max_beam}"]
    for o in overrides:
        cmd += ["--set", o]
    if ort_threads is not None:
        cmd += ["--ort_threads", str(ort_threads)]
    if config is not None:
        cmd += ["--config", str(config)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f,  # nosec B603 # our server
                                stderr=subprocess.STDOUT)
    from serving.client import RecommendClient

    client = RecommendClient(f"127.0.0.1:{http}", "http")
    end = time.time() + 300
    while time.time() < end:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}); log: {log}")
        try:
            if client.ready():
                return proc, f"127.0.0.1:{http}", f"127.0.0.1:{grpc}", log
        except Exception:  # nosec B110 # not up yet: poll again
            pass
        time.sleep(0.3)
    proc.terminate()
    raise SystemExit(f"server not ready after 300 s; log: {log}")


def make_requests(items: np.ndarray, lengths: tuple[int, int, int], n: int,
                  seed: int = 0) -> list[tuple[list[int], dict[str, list[list[int]]]]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        hist = {name: [rng.choice(items, size=k).tolist()]
                for name, k in zip(("short_history", "pos_history", "long_history"), lengths,
                                   strict=True)}
        out.append(([int(i)], hist))
    return out


def latency(url: str, protocol: str, reqs: list, beam: int, top_n: int,
            warmup: int) -> dict[str, float]:
    from serving.client import RecommendClient

    c = RecommendClient(url, protocol, binary=protocol == "http")
    for users, hist in reqs[:warmup]:
        c.recommend(users, hist, beam_width=beam, top_n=top_n)
    times = []
    t_all = time.perf_counter()
    for users, hist in reqs[warmup:]:
        t0 = time.perf_counter()
        r = c.recommend(users, hist, beam_width=beam, top_n=top_n)
        times.append(time.perf_counter() - t0)
        assert r.beam_width == beam  # nosec B101 # bench self-check
    wall = time.perf_counter() - t_all
    ms = np.asarray(times) * 1000
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "rps": len(times) / wall, "n": len(times)}


def is_timeout(e: BaseException) -> bool:
    """A client timeout (tritonclient: gRPC DEADLINE_EXCEEDED, HTTP socket/gevent timeout)."""
    text = f"{type(e).__name__} {e}".lower()
    return isinstance(e, TimeoutError) or any(k in text for k in ("timeout", "timed out",
                                                                  "deadline"))


def _load_proc(url: str, protocol: str, reqs: list, beam: int, top_n: int, threads: int,
               duration: float, timeout_s: float, ready: Any, start: Any, out: Any) -> None:
    """One client process: `threads` threads, each with its own client (tritonclient's HTTP
    client is gevent-based: it must stay on the thread that made it) and one warm-up request,
    then (once `start` is set) back to back for `duration` s.
    Puts {lat, errors, timeouts, wall, messages}."""
    import threading

    from serving.client import RecommendClient

    warmed = threading.Barrier(threads + 1)
    go = threading.Event()
    lat: list[float] = []
    errors, timeouts = [0], [0]
    t0, last = [0.0], [0.0]
    messages: list[str] = []

    def client() -> RecommendClient:
        return RecommendClient(url, protocol, binary=protocol == "http", timeout_s=timeout_s)

    def run(k: int) -> None:
        c = client()
        users, hist = reqs[k % len(reqs)]
        with contextlib.suppress(Exception):  # outside the window: the timed ones count
            c.recommend(users, hist, beam_width=beam, top_n=top_n)
        warmed.wait()
        go.wait()
        end = t0[0] + duration
        i = k
        while time.monotonic() < end:
            users, hist = reqs[i % len(reqs)]
            i += threads
            s = time.monotonic()
            try:
                c.recommend(users, hist, beam_width=beam, top_n=top_n)
                lat.append(time.monotonic() - s)  # list.append: atomic
            except Exception as e:  # counted, the run goes on
                errors[0] += 1
                timeouts[0] += is_timeout(e)
                if len(messages) < 3:
                    messages.append(f"{type(e).__name__}: {str(e)[:200]}")
                c = client()
            last[0] = max(last[0], time.monotonic())

    workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    warmed.wait()
    ready.put(threads)
    start.wait()
    t0[0] = last[0] = time.monotonic()
    go.set()
    for w in workers:
        w.join()
    out.put({"lat": lat, "errors": errors[0], "timeouts": timeouts[0],
             "wall": last[0] - t0[0], "messages": messages})


def load_test(url: str, protocol: str, reqs: list, beam: int, top_n: int, concurrency: int,
              duration: float, procs: int = 4, timeout_s: float = 30.0) -> dict[str, Any]:
    """`concurrency` requests in flight for `duration` s (see the module docstring)."""
    # spawn, not fork: grpc's core does not survive a fork of a process that has used it
    ctx = multiprocessing.get_context("spawn")
    procs = max(1, min(procs, concurrency))
    split = [concurrency // procs + (k < concurrency % procs) for k in range(procs)]
    ready, out, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    workers = [ctx.Process(target=_load_proc, args=(url, protocol, reqs, beam, top_n, n,
                                                    duration, timeout_s, ready, start, out))
               for n in split]
    for w in workers:
        w.start()
    try:
        for _ in workers:
            ready.get(timeout=300)  # every client connected and warmed up
        start.set()
        parts = [out.get(timeout=duration + timeout_s + 120) for _ in workers]
    finally:
        for w in workers:
            w.join(timeout=30)
            if w.is_alive():
                w.terminate()
    load1 = os.getloadavg()[0]
    lat = np.concatenate([np.asarray(p["lat"]) for p in parts]) * 1000
    n = len(lat)
    wall = max(p["wall"] for p in parts) or duration
    return {"requests": n, "rps": n / wall,
            "p50": float(np.percentile(lat, 50)) if n else float("nan"),
            "p99": float(np.percentile(lat, 99)) if n else float("nan"),
            "errors": sum(p["errors"] for p in parts),
            "timeouts": sum(p["timeouts"] for p in parts),
            "messages": [m for p in parts for m in p["messages"]][:3],
            "load1": load1, "client_procs": procs}


def number_list(values: list[str]) -> list[int]:
    """["32,512"] or ["32", "512"] -> [32, 512]."""
    return [int(v) for item in values for v in item.split(",") if v.strip()]


def name_list(values: list[str]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def reranker_of(http_url: str) -> str:
    """What re-ranks the served version's beams (the server's GET /onerec/versions)."""
    import urllib.request

    with urllib.request.urlopen(f"http://{http_url}/onerec/versions",  # nosec B310 # loopback
                                timeout=10) as r:
        return str(json.load(r).get("reranker", "?"))


def rm_selection_ablation(args: argparse.Namespace, repo: Path, config: Path | None,
                          reqs: list, console: Console) -> list[dict]:
    """Latency of the served default (RM selection with each version's reward model) against
    the same version in beam order (`serve.rm_selection=false`): both servers up at once, the
    cells alternated for `--ablation-rounds` rounds so drift in the machine's load hits both,
    the ratio of the medians of p50."""
    servers = {}
    try:
        for name, over in (("served default", ()), ("beam order", ("serve.rm_selection=false",))):
            proc, http, grpc, _ = start_server(repo, config, max(max(args.beams), 512),
                                               args.ort_threads, over)
            servers[name] = (proc, {"http": http, "grpc": grpc}, reranker_of(http))
        rows = []
        for beam in args.beams:
            for proto in args.protocols:
                p50 = {name: [] for name in servers}
                for _ in range(args.ablation_rounds):
                    for name, (_, urls, _) in servers.items():
                        r = latency(urls[proto], proto, reqs[: args.requests + 5], beam,
                                    min(args.top_n, beam), warmup=5)
                        p50[name].append(r["p50"])
                med = {name: float(np.median(v)) for name, v in p50.items()}
                rows.append({"beam": beam, "protocol": proto, "p50": med,
                             "rerankers": {n: s[2] for n, s in servers.items()},
                             "ratio": med["served default"] / med["beam order"]})
                console.print(f"beam {beam:>4} {proto:<4} p50 served default "
                              f"{med['served default']:.2f} ms, beam order "
                              f"{med['beam order']:.2f} ms", highlight=False)
        return rows
    finally:
        for proc, _, _ in servers.values():
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True,  # nosec B603 B607
                              timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
    reexec_with_tuned_env("bench.serving", argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run `finally`: stop the server
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", type=Path, default=Path("runs/model_repository"))
    p.add_argument("--model-name", default="onerec")
    p.add_argument("--standin", action="store_true", help="bench a stand-in graph (overhead)")
    p.add_argument("--beams", nargs="+", default=["32", "128", "512"],
                   help="beam widths, e.g. 32,512 or 32 512")
    p.add_argument("--top-n", type=int, default=10)
    p.add_argument("--requests", type=int, default=200,
                   help="sequential requests per cell (0: no latency part, load test only)")
    p.add_argument("--concurrency", "--clients", dest="concurrency", type=int, default=8,
                   help="load test: requests in flight (client threads)")
    p.add_argument("--client-procs", type=int, default=4,
                   help="load test: processes the client threads are spread over")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="client timeout per request, seconds (a timeout counts as an error)")
    p.add_argument("--duration", type=float, default=60.0, help="load test: seconds per cell")
    p.add_argument("--load-beam", type=int, default=None,
                   help="one beam for the load test [default: every one of --beams]")
    p.add_argument("--protocols", nargs="+", default=["http", "grpc"],
                   help="http, grpc or both (http,grpc)")
    p.add_argument("--quick", action="store_true",
                   help="30 requests per cell, 4 clients for 5 s")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    p.add_argument("--ort-threads", type=int, default=None,
                   help="the server's ONNX Runtime intra-op threads (0: ORT's default) "
                        "[default: the Config's serve.ort_threads]")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="the exported model's checkpoint: also run bench.generation on it "
                        "(reference vs fast path vs ONNX Runtime at the same beams)")
    p.add_argument("--codebook", type=Path, default=None, help="its codebook (with --checkpoint)")
    p.add_argument("--runs", type=int, default=3, help="bench.generation runs (with --checkpoint)")
    p.add_argument("--rm-selection-ablation", action="store_true",
                   help="also time the served default (RM selection with the version's reward "
                        "model) against beam order (serve.rm_selection=false), two servers, "
                        "cells alternated; latency only")
    p.add_argument("--ablation-rounds", type=int, default=3,
                   help="alternated rounds per cell of --rm-selection-ablation (medians)")
    args = p.parse_args(argv)
    args.beams, args.protocols = number_list(args.beams), name_list(args.protocols)
    bad = [x for x in args.protocols if x not in ("http", "grpc")]
    if bad or not args.beams:
        raise SystemExit(f"--protocols: http and/or grpc, got {bad}" if bad else "--beams: none")
    if args.quick:
        args.requests, args.concurrency, args.duration = 30, 4, min(args.duration, 5.0)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    up_before = uptime()

    from onerec.config import Config

    repo = args.repo
    if args.standin:
        cfg = Config.from_preset("small")
        d = cfg.data
        lengths = (d.max_seq_len, d.max_pos_seq_len, d.max_long_seq_len)
        repo = standin_repo(Path(tempfile.mkdtemp(prefix="onerec-standin-")), lengths, 7583)
        config = None
    else:
        version = newest_version(repo / args.model_name)
        if version is None:
            raise SystemExit(f"{repo / args.model_name}: no model version. Export the demo model "
                             f"first: onerec export --checkpoint runs/demo/pretrain/train/"
                             f"checkpoint --codebook runs/demo/codebook --out {repo} "
                             f"--beam-width 32 --beam-width 128 --beam-width 512")
        config = version / "config.yaml" if (version / "config.yaml").is_file() else None
        cfg = Config.from_file(config) if config else Config.from_preset("small")
        d = cfg.data
        lengths = (d.max_seq_len, d.max_pos_seq_len, d.max_long_seq_len)
    model_dir = repo / args.model_name
    items = np.load(newest_version(model_dir) / "items.npy")
    reqs = make_requests(items, lengths, max(args.requests + 5, 64))
    console.print(f"repo {repo} ({'stand-in graph' if args.standin else 'exported model'}), "
                  f"{len(items)} items, histories {lengths}, beams {args.beams}")
    proc, http, grpc, log = start_server(repo, config, max(max(args.beams), 512),
                                         args.ort_threads)
    urls = {"http": http, "grpc": grpc}
    results: dict = {"latency": [], "load": [], "started": started,
                     "command": " ".join(["python -m bench.serving", *(argv or sys.argv[1:])]),
                     "uptime_before": up_before}
    try:
        for beam in args.beams if args.requests > 0 else []:
            for proto in args.protocols:
                r = latency(urls[proto], proto, reqs[: args.requests + 5], beam,
                            min(args.top_n, beam), warmup=5)
                results["latency"].append({"beam": beam, "protocol": proto, **r})
                console.print(f"beam {beam:>4} {proto:<4} p50 {r['p50']:.2f} ms  "
                              f"p99 {r['p99']:.2f} ms  {r['rps']:.1f} req/s", highlight=False)
        for load_beam in [args.load_beam] if args.load_beam else args.beams:
            for proto in args.protocols:
                r = load_test(urls[proto], proto, reqs, load_beam, min(args.top_n, load_beam),
                              args.concurrency, args.duration, args.client_procs, args.timeout)
                results["load"].append({"beam": load_beam, "protocol": proto,
                                        "concurrency": args.concurrency,
                                        "duration_s": args.duration, **r})
                console.print(f"load {proto:<4} beam {load_beam:>4} x{args.concurrency}: "
                              f"{r['rps']:.1f} req/s p50 {r['p50']:.1f} ms p99 {r['p99']:.1f} "
                              f"ms errors {r['errors']} (timeouts {r['timeouts']}) load "
                              f"{r['load1']:.2f}", highlight=False)
                for m in r["messages"]:
                    console.print(f"  error: {m}", highlight=False, markup=False)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    if args.rm_selection_ablation and args.requests > 0:
        results["rm_selection"] = rm_selection_ablation(args, repo, config, reqs, console)
    results["uptime_after"] = uptime()
    what = "stand-in graph (serving overhead only)" if args.standin else "exported model"
    if results["latency"]:
        print_table(console, f"serving latency, one user per request, {what}",
                    ["beam", "protocol", "requests", "p50 (ms)", "p99 (ms)",
                     "throughput (req/s)"],
                    [[str(r["beam"]), r["protocol"], str(r["n"]), f"{r['p50']:.2f}",
                      f"{r['p99']:.2f}", f"{r['rps']:.1f}"] for r in results["latency"]],
                    left=["protocol"])
    print_table(console, f"load test: {args.concurrency} in flight x {args.duration:g} s per "
                         f"cell, loopback, client timeout {args.timeout:g} s, {what}",
                ["protocol", "beam", "concurrency", "requests", "throughput (req/s)",
                 "p50 (ms)", "p99 (ms)", "errors", "of which timeouts", "load avg (1 min)"],
                [[r["protocol"], str(r["beam"]), str(r["concurrency"]), str(r["requests"]),
                  f"{r['rps']:.1f}", f"{r['p50']:.1f}", f"{r['p99']:.1f}", str(r["errors"]),
                  str(r["timeouts"]), f"{r['load1']:.2f}"] for r in results["load"]],
                left=["protocol"])
    if results.get("rm_selection"):
        rm = results["rm_selection"]
        print_table(console, f"re-ranking cost: p50 latency, median of {args.ablation_rounds} "
                             f"alternated rounds, one user per request; served default: "
                             f"{rm[0]['rerankers']['served default']}",
                    ["beam", "protocol", "served default p50 (ms)", "beam order p50 (ms)",
                     "ratio"],
                    [[str(r["beam"]), r["protocol"], f"{r['p50']['served default']:.2f}",
                      f"{r['p50']['beam order']:.2f}", f"{r['ratio']:.2f}"] for r in rm],
                    left=["protocol"])
    console.print(f"started {started}; uptime before: {up_before}; after: "
                  f"{results['uptime_after']}", highlight=False)
    console.print(f"server log: {log}")
    if args.checkpoint is not None:
        results["generation"] = generation(args, console)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


def generation(args: argparse.Namespace, console: Console) -> dict:
    """bench.generation on the served model's checkpoint, in a subprocess (it imports torch
    and reruns itself with tuned allocator settings): the reference beam search, the PyTorch
    fast path and the ONNX graph in ONNX Runtime at the same beams, ratios within each run."""
    if args.codebook is None:
        raise SystemExit("--checkpoint needs --codebook")
    out = Path(tempfile.mkdtemp(prefix="onerec-bench-gen-")) / "generation.json"
    cmd = [sys.executable, "-m", "bench.generation", "--checkpoint", str(args.checkpoint),
           "--codebook", str(args.codebook), "--runs", str(args.runs), "--json", str(out),
           "--beams", *map(str, args.beams)]
    console.print("generation in-process (no server): " + " ".join(cmd[1:]), highlight=False)
    subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                   check=True)  # nosec B603
    return json.loads(out.read_text())


if __name__ == "__main__":
    main()

"""The demo's serving step: build the run's Feast feature store, start the KServe ModelServer
on a published version reading user sequences from it, ask it for recommendations over HTTP and
gRPC with tritonclient, stop it.

Two processes besides the demo's: the server (`python -m serving.server`, which imports kserve)
and the client (`python -m onerec.app.demo_serving query ...`, tritonclient only). tritonclient's
gRPC client and kserve register the same protobuf symbols, so they never share a process; the
demo process itself imports neither (it polls readiness with plain urllib).

    python -m onerec.app.demo_serving query --http HOST:PORT --grpc HOST:PORT --requests FILE
        prints one JSON object: {"http": [...], "grpc": [...]} (one entry per request)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess  # nosec B404 # argv lists only, no shell
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

REPO = Path(__file__).resolve().parents[2]


class ServingError(RuntimeError):
    """The server did not come up, or a request failed."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def subprocess_env() -> dict[str, str]:
    """This checkout first on PYTHONPATH (as kfp.local's steps get it)."""
    env = dict(os.environ)
    paths = [str(REPO), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


@dataclass
class Server:
    """`python -m serving.server` in a subprocess; a context manager that always stops it."""

    repo: Path
    config: Path  # the Config YAML (limits: serve.*)
    log_path: Path
    cold_start_data: Path | None = None
    host: str = "127.0.0.1"
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    model: str = "onerec"
    feature_repo: Path | None = None  # a Feast repo: users without histories are read from it
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        while self.grpc_port == self.http_port:  # two draws can coincide
            self.grpc_port = free_port()

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "serving.server", "--repo", str(self.repo.resolve()),
               "--config", str(self.config.resolve()), "--http_port", str(self.http_port),
               "--grpc_port", str(self.grpc_port), "--poll_interval", "0",
               "--model_name", self.model]
        if self.cold_start_data is not None:
            cmd += ["--cold_start_data", str(self.cold_start_data)]
        if self.feature_repo is not None:
            cmd += ["--feature_repo", str(self.feature_repo.resolve())]
        return cmd

    def __enter__(self) -> Server:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        cmd, env = self.command(), subprocess_env()
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,  # nosec B603
                                     env=env)
        log.close()  # the child holds its own descriptor
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout_s: float = 180.0) -> float:
        """Poll /v2/models/<model>/ready until true; seconds waited. Raises if the server
        exits or the timeout passes (its log says why)."""
        url = f"http://{self.http_url}/v2/models/{self.model}/ready"
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout_s:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise ServingError(f"the server exited (code {code}) before the model was "
                                   f"ready; see {self.log_path}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:  # nosec B310 # our http:// URL
                    if r.status == 200:
                        return time.perf_counter() - t0
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.5)
        raise ServingError(f"model {self.model} not ready after {timeout_s:.0f} s; see "
                           f"{self.log_path}")

    def reranker(self) -> str | None:
        """Which reranker serves the active version, from GET /onerec/versions: "RM selection
        (...)" when the version carries its reward model (the served default), "beam order"
        when it carries none; None when the server cannot say."""
        url = f"http://{self.http_url}/onerec/versions"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:  # nosec B310 # our http:// URL
                return json.loads(r.read()).get("reranker")
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
            return None

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM (KServe shuts down gracefully), then SIGKILL after `timeout_s`."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


def feature_store(cfg: Any, data_dir: Path, until_ms: int, dest: Path,
                  users: list[int], console: Console | None = None) -> dict[str, Any]:
    """The Feast repo the demo's server reads (`onerec.features.serving_repo`): the offline
    store backfilled with the events before `until_ms` (the served version's cut) on top of
    KuaiRand's pre-log history, applied, the online store (SQLite) loaded. -> timings, and the
    online sequence lengths of `users` (what the transformer will read for them).

    Progress shows its phases on `console` (`onerec.progress`); what Feast prints itself (its
    colours and tqdm bars) goes to `<dest>.log`, so a CI log gets no escape codes from it."""
    import dataclasses

    from onerec.app.pipeline_local import redirected
    from onerec.data import kuairand
    from onerec.features import online_user_context, serving_repo
    from onerec.features.store import SERVING_PHASES
    from onerec.progress import Reporter

    ds = kuairand.load(data_dir)
    ds = dataclasses.replace(ds, events=ds.events[ds.events["time_ms"] < until_ms]
                             .reset_index(drop=True))
    with Reporter("feast", total=len(SERVING_PHASES), console=console) as report, \
            redirected(dest.with_name(dest.name + ".log")):
        store, took = serving_repo(dest, cfg, ds, history=kuairand.read_history(data_dir),
                                   log=report)
    online = online_user_context(store, users)
    return {"repo": str(dest), **took, "events": len(ds.events),
            "online_lengths": {str(u): {"short": len(c[0]), "pos": len(c[1]), "long": len(c[2])}
                               for u, c in online.items()}}


def query(server: Server, requests: list[dict[str, Any]], work_dir: Path,
          timeout_s: float = 120.0) -> dict[str, list[dict[str, Any]]]:
    """Send each request over HTTP and gRPC from a client subprocess; -> per protocol, per
    request: the rows (user, video ids, scores, cold start, unknown ids) and the version."""
    spec = work_dir / "requests.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps(requests, indent=2))
    cmd = [sys.executable, "-m", "onerec.app.demo_serving", "query", "--http", server.http_url,
           "--grpc", server.grpc_url, "--model", server.model, "--requests", str(spec.resolve())]
    res = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(),
                         timeout=timeout_s)  # nosec B603
    if res.returncode != 0:
        raise ServingError(f"client failed: {res.stderr.strip()[-2000:]}")
    out: dict[str, list[dict[str, Any]]] = json.loads(res.stdout)
    (work_dir / "responses.json").write_text(json.dumps(out, indent=2))
    return out


# -- the client process ------------------------------------------------------------------------
def _ask(url: str, protocol: str, model: str,
         requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from serving.client import RecommendClient

    client = RecommendClient(url, protocol, model)
    out = []
    try:
        for req in requests:
            t0 = time.perf_counter()
            res = client.recommend(req["users"], req.get("histories"),
                                   beam_width=req.get("beam_width"), top_n=req.get("top_n"))
            out.append({"name": req["name"], "model_version": res.model_version,
                        "beam_width": res.beam_width, "top_n": res.top_n,
                        "latency_ms": round((time.perf_counter() - t0) * 1000, 1),
                        "rows": [vars(r) for r in res.rows]})
    finally:
        client.close()
    return out


def _main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m onerec.app.demo_serving")
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("query", help="ask a running server; print JSON")
    q.add_argument("--http", required=True)
    q.add_argument("--grpc", required=True)
    q.add_argument("--model", default="onerec")
    q.add_argument("--requests", type=Path, required=True)
    args = p.parse_args(argv)
    reqs = json.loads(args.requests.read_text())
    print(json.dumps({"http": _ask(args.http, "http", args.model, reqs),
                      "grpc": _ask(args.grpc, "grpc", args.model, reqs)}))


if __name__ == "__main__":
    _main()

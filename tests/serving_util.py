"""Test helpers for serving: a stand-in exported graph and version folders.

The stand-in graph has the exported interface (inputs user/short/pos/long INT64, outputs
items INT64 [B, W] and scores FP32 [B, W]) and an output anyone can predict: with i the most
recent short-history item index (0 if none), items[b, j] = (i + j) % N + 1 and
scores[b, j] = -j / 2. Built with onnx.helper in milliseconds, so serving tests do not wait
for a trained model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

CONFIG_FP, CODEBOOK_FP = "cfg0123456789abc", "cb0123456789abcd"  # pragma: allowlist secret
ROOT = Path(__file__).resolve().parents[1]
COLD = [1049, 1007, 1000]  # the cold-start table of `standin_server`'s version


def standin_graph(n_items: int, lengths: tuple[int, int, int], beam_width: int | None) -> bytes:
    """The stand-in ONNX model; beam_width None = the width is a graph input."""
    import onnx
    from onnx import TensorProto, helper

    s, p, g = lengths
    inputs = [helper.make_tensor_value_info("user", TensorProto.INT64, ["B"]),
              helper.make_tensor_value_info("short", TensorProto.INT64, ["B", s]),
              helper.make_tensor_value_info("pos", TensorProto.INT64, ["B", p]),
              helper.make_tensor_value_info("long", TensorProto.INT64, ["B", g])]
    w_dim: str | int = beam_width if beam_width is not None else "W"
    outputs = [helper.make_tensor_value_info("items", TensorProto.INT64, ["B", w_dim]),
               helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["B", w_dim])]

    def const(name: str, values: list, dtype: int = TensorProto.INT64) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(
            name + "_v", dtype, [len(values)] if len(values) != 1 or name.startswith("v")
            else [], values))

    nodes = [const("one", [1]), const("n", [n_items]),
             const("vstart", [-1]), const("vend", [2**62]), const("vaxis", [1]),
             const("half", [-0.5], TensorProto.FLOAT)]
    if beam_width is None:
        inputs.append(helper.make_tensor_value_info("beam_width", TensorProto.INT64, []))
        nodes.append(const("zero", [0]))
        nodes.append(helper.make_node("Range", ["zero", "beam_width", "one"], ["j"]))
    else:
        nodes.append(const("vj", list(range(beam_width))))
        nodes.append(helper.make_node("Identity", ["vj"], ["j"]))
    nodes += [
        helper.make_node("Slice", ["short", "vstart", "vend", "vaxis"], ["last"]),  # (B, 1)
        helper.make_node("Add", ["last", "j"], ["sum"]),  # (B, W)
        helper.make_node("Mod", ["sum", "n"], ["mod"]),
        helper.make_node("Add", ["mod", "one"], ["items"]),
        helper.make_node("Cast", ["j"], ["jf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["jf", "half"], ["sw"]),  # (W,)
        helper.make_node("Cast", ["last"], ["lastf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["lastf", "zero_f"], ["zb"]),  # (B, 1) zeros
        helper.make_node("Add", ["zb", "sw"], ["scores"]),
    ]
    nodes.insert(0, const("zero_f", [0.0], TensorProto.FLOAT))
    graph = helper.make_graph(nodes, "onerec_standin", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def video_table(n_items: int, seed: int = 0) -> np.ndarray:
    """Distinct video ids in a shuffled order (so the id <-> index mapping is exercised)."""
    return np.random.default_rng(seed).permutation(np.arange(n_items) * 7 + 1000).astype(np.int64)


def write_version(model_dir: Path, version: int, *, n_items: int = 50,
                  lengths: tuple[int, int, int] = (8, 8, 16), beam_width: int | None = 64,
                  config_fp: str = CONFIG_FP, codebook_fp: str = CODEBOOK_FP,
                  cold_start: list[int] | None = None, seed: int = 0) -> Path:
    """Write <model_dir>/<version>/ under a temporary name, then rename it (as an exporter)."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=model_dir))
    (tmp / "model.onnx").write_bytes(standin_graph(n_items, lengths, beam_width))
    np.save(tmp / "items.npy", video_table(n_items, seed))
    graphs = {} if beam_width is None else {str(beam_width): {
        "file": "model.onnx", "width": beam_width,
        "sha256": hashlib.sha256((tmp / "model.onnx").read_bytes()).hexdigest()}}
    manifest = {"version": version, "config_fingerprint": config_fp,
                "codebook_fingerprint": codebook_fp,
                "beam_widths": [] if beam_width is None else [beam_width], "graphs": graphs,
                "inputs": {"short": [-1, lengths[0]], "pos": [-1, lengths[1]],
                           "long": [-1, lengths[2]]}}
    (tmp / "manifest.json").write_text(json.dumps(manifest))
    if cold_start is not None:
        (tmp / "cold_start.json").write_text(json.dumps({"video_ids": cold_start,
                                                         "source": "test"}))
    dest = model_dir / str(version)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest


def carry_reward_model(folder: Path, *, codebook_fp: str = CODEBOOK_FP, seed: int = 0) -> Path:
    """Give a version folder an (untrained) reward model over its item table, as `onerec export
    --reward-model` writes it: reward_model/ and the manifest's entry; `codebook_fp` is the
    codebook it claims (another one than the version's: a foreign reward model). -> folder."""
    import torch

    from onerec.config import Config
    from onerec.reward import build_reward_model, copy_reward_model, save_reward_model

    folder = Path(folder)
    items = np.load(folder / "items.npy")
    vocab = [4, 3, 2]
    g = torch.Generator().manual_seed(seed)
    codes = torch.stack([torch.randint(0, k, (len(items),), generator=g) for k in vocab], 1)
    rm = build_reward_model(Config.from_preset("tiny"), torch.cat(
        [torch.zeros(1, len(vocab), dtype=torch.long), codes]), vocab)
    rm.item_ids, rm.codebook_fingerprint = items, codebook_fp
    src = save_reward_model(folder.parent / f".rm-{folder.name}", rm, Config.from_preset("tiny"))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["reward_model"] = copy_reward_model(src, folder / "reward_model", codebook_fp)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(src)
    return folder


def expected_items(video_ids: np.ndarray, last_video: int, width: int) -> list[int]:
    """The stand-in's answer, as video ids, for a user whose newest short item is last_video."""
    order = {int(v): i + 1 for i, v in enumerate(video_ids.tolist())}
    i, n = order[last_video], len(video_ids)
    return [int(video_ids[(i + j) % n]) for j in range(width)]


def feast_world(repo: Path, n_backfill: int = 400):
    """A real Feast repo (tiny preset, synthetic events with video ids remapped to the
    stand-in's ids 1000 + 7k), applied and materialized. -> (store, cfg, dataset)."""
    from onerec.data.schema import Dataset
    from onerec.features import apply_repo, materialize_all, prepare_repo

    cfg, ds = standin_dataset()
    events, items = ds.events, ds.items
    prepare_repo(repo, cfg, Dataset(ds.name, events.iloc[:n_backfill], items, ds.users))
    store = apply_repo(repo)
    materialize_all(store)
    return store, cfg, ds


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(repo: Path, http: int, grpc: int, log_path: Path, *extra: str,
                preset: str = "tiny", append: bool = False) -> subprocess.Popen:
    """`onerec serve` on loopback ports over `repo` in a subprocess (stdout and stderr to
    `log_path`, appended to with append=True: a restart keeps the first run's lines); no
    polling unless `extra` says so (e.g. "--poll-interval", "0.2": the last one wins)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "onerec", "serve", "--repo", str(repo), "--preset",
           preset, "--http-port", str(http), "--grpc-port", str(grpc), "--poll-interval", "0",
           *extra]
    with open(log_path, "a" if append else "w") as log:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(proc: subprocess.Popen, base: str, log_path: Path,
               timeout_s: float = 120.0) -> None:
    """Until GET <base>/v2/models/onerec/ready answers 200 (RuntimeError with the log's tail
    when the server exits or is not ready in time)."""
    import urllib.request

    end = time.time() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"onerec serve exited ({proc.returncode}): "
                               f"{log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{base}/v2/models/onerec/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.time() > end:
            raise RuntimeError(f"onerec serve not ready after {timeout_s:.0f} s: "
                               f"{log_path.read_text()[-2000:]}")
        time.sleep(0.1)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def standin_server(root: Path, *extra: str, preset: str = "tiny",
                   timeout_s: float = 120.0) -> Iterator[dict]:
    """`onerec serve` on free loopback ports over a one-version repo of the stand-in graph
    (60 videos, ids 1000 + 7k, cold-start table COLD), no Feast, no polling; `extra` are more
    serve options (e.g. "--set", "serve.max_request_bytes=4096"). Yields {"http", "grpc"
    (host:port), "base" (URL), "proc", "log"} once the model is ready."""
    root = Path(root)
    write_version(root / "repo" / "onerec", 1, n_items=60, cold_start=COLD)
    http, grpc = free_port(), free_port()
    log_path = root / "server.log"
    proc = start_serve(root / "repo", http, grpc, log_path, *extra, preset=preset)
    base = f"http://127.0.0.1:{http}"
    try:
        wait_ready(proc, base, log_path, timeout_s)
        yield {"http": f"127.0.0.1:{http}", "grpc": f"127.0.0.1:{grpc}", "base": base,
               "proc": proc, "log": log_path}
    finally:
        stop(proc)


# -- load while something breaks ----------------------------------------------------------------
@dataclass
class Outcome:
    """One request of a `Hammer`: when it started and ended, and what came back."""

    t0: float
    t1: float
    version: int | None  # None: the request failed
    rows: list | None  # [(video_ids, cold_start)] per user
    error: str = ""


class Hammer:
    """Threads sending the same valid request back to back over HTTP (tritonclient), each
    outcome recorded: what the fault tests count failures in. A thread whose request failed
    opens a fresh client and pauses 20 ms (a dead server refuses at once: no busy loop)."""

    USERS: ClassVar[list[int]] = [1, 9003]  # a history in the request, and none (cold)
    HIST: ClassVar[dict] = {"short_history": [[1000], []]}

    def __init__(self, url: str, threads: int = 3, timeout_s: float = 10.0) -> None:
        self.url, self.n_threads, self.timeout_s = url, threads, timeout_s
        self.outcomes: list[Outcome] = []  # list.append is atomic: no lock needed
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _run(self) -> None:
        from serving.client import RecommendClient

        client = None
        while not self._stop.is_set():
            t0 = time.time()
            try:
                if client is None:
                    client = RecommendClient(self.url, "http", timeout_s=self.timeout_s)
                r = client.recommend(self.USERS, self.HIST, beam_width=16, top_n=6)
                rows = [(row.video_ids, row.cold_start) for row in r.rows]
                self.outcomes.append(Outcome(t0, time.time(), r.model_version, rows))
            except Exception as e:  # what the tests look for
                self.outcomes.append(Outcome(t0, time.time(), None, None, repr(e)[:300]))
                client = None
                time.sleep(0.02)

    def __enter__(self) -> Hammer:
        self._threads = [threading.Thread(target=self._run, daemon=True)
                         for _ in range(self.n_threads)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def ok(self, after: float = 0.0) -> list[Outcome]:
        return [o for o in list(self.outcomes) if o.version is not None and o.t0 >= after]

    def failed(self) -> list[Outcome]:
        return [o for o in list(self.outcomes) if o.version is None]

    def wait_ok(self, n: int, after: float = 0.0, timeout_s: float = 30.0) -> None:
        """Until n successful requests started at or after `after`."""
        end = time.time() + timeout_s
        while len(self.ok(after)) < n:
            if time.time() > end:
                raise AssertionError(f"{len(self.ok(after))} of {n} requests succeeded in "
                                     f"{timeout_s:.0f} s; last failures: {self.failed()[-3:]}")
            time.sleep(0.05)


def wait_for(cond: Callable[[], Any], timeout_s: float = 30.0, what: str = "condition") -> Any:
    """Poll cond() (exceptions count as not yet) until it is truthy; -> its value."""
    end = time.time() + timeout_s
    last: Exception | None = None
    while time.time() < end:
        try:
            value = cond()
            if value:
                return value
        except Exception as e:
            last = e
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}"
                         + (f" (last error: {last!r})" if last else ""))


def feast_online(repo: Path, n_events: int = 400):
    """A real Feast repo like `feast_world`'s, lighter: only the three sequence views are
    loaded online, written directly (`write_sequences`) instead of by Feast's materialize.
    -> (store, cfg, dataset)."""
    from onerec.data.schema import Dataset
    from onerec.features import SequenceBook, apply_repo, prepare_repo, write_sequences

    cfg, ds = standin_dataset()
    events, items = ds.events, ds.items
    prepare_repo(repo, cfg, Dataset(ds.name, events.iloc[:n_events], items, ds.users))
    store = apply_repo(repo)
    book = SequenceBook(cfg.data)
    book.apply(events.iloc[:n_events])
    write_sequences(store, book)
    return store, cfg, ds


def standin_dataset():
    """-> (tiny Config with the shipped feature repo, synthetic dataset on the stand-in's
    video ids 1000 + 7k)."""
    from onerec.config import Config
    from onerec.data.schema import Dataset
    from onerec.data.synthetic import make_dataset

    cfg = Config.from_preset("tiny", [f"features.repo_template={ROOT / 'feature_repo'}"])
    ds = make_dataset(cfg.data)
    events, items = ds.events.copy(), ds.items.copy()
    events["video_id"] = events["video_id"] * 7 + 1000
    items["video_id"] = items["video_id"] * 7 + 1000
    return cfg, Dataset(ds.name, events, items, ds.users)

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
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


def expected_items(video_ids: np.ndarray, last_video: int, width: int) -> list[int]:
    """The stand-in's answer, as video ids, for a user whose newest short item is last_video."""
    order = {int(v): i + 1 for i, v in enumerate(video_ids.tolist())}
    i, n = order[last_video], len(video_ids)
    return [int(video_ids[(i + j) % n]) for j in range(width)]


def feast_world(repo: Path, n_backfill: int = 400):
    """A real Feast repo (tiny preset, synthetic events with video ids remapped to the
    stand-in's ids 1000 + 7k), applied and materialized. -> (store, cfg, dataset)."""
    from onerec.config import Config
    from onerec.data.schema import Dataset
    from onerec.data.synthetic import make_dataset
    from onerec.features import apply_repo, materialize_all, prepare_repo

    cfg = Config.from_preset("tiny", [f"features.repo_template={ROOT / 'feature_repo'}"])
    ds = make_dataset(cfg.data)
    events, items = ds.events.copy(), ds.items.copy()
    events["video_id"] = events["video_id"] * 7 + 1000
    items["video_id"] = items["video_id"] * 7 + 1000
    ds = Dataset(ds.name, events, items, ds.users)
    prepare_repo(repo, cfg, Dataset(ds.name, events.iloc[:n_backfill], items, ds.users))
    store = apply_repo(repo)
    materialize_all(store)
    return store, cfg, ds


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def standin_server(root: Path, *extra: str, preset: str = "tiny",
                   timeout_s: float = 120.0) -> Iterator[dict]:
    """`onerec serve` on free loopback ports over a one-version repo of the stand-in graph
    (60 videos, ids 1000 + 7k, cold-start table COLD), no Feast, no polling; `extra` are more
    serve options (e.g. "--set", "serve.max_request_bytes=4096"). Yields {"http", "grpc"
    (host:port), "base" (URL), "proc", "log"} once the model is ready."""
    import subprocess
    import sys
    import time
    import urllib.request

    root = Path(root)
    write_version(root / "repo" / "onerec", 1, n_items=60, cold_start=COLD)
    http, grpc = free_port(), free_port()
    log_path = root / "server.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "onerec", "serve", "--repo", str(root / "repo"), "--preset",
           preset, "--http-port", str(http), "--grpc-port", str(grpc), "--poll-interval", "0",
           *extra]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http}"
    try:
        end = time.time() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"onerec serve exited ({proc.returncode}): "
                                   f"{log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base}/v2/models/onerec/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > end:
                raise RuntimeError(f"onerec serve not ready after {timeout_s:.0f} s: "
                                   f"{log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        yield {"http": f"127.0.0.1:{http}", "grpc": f"127.0.0.1:{grpc}", "base": base,
               "proc": proc, "log": log_path}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

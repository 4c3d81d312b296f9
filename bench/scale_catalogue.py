"""Catalogue scale: what 10k to 10M items cost the tokenizer, the valid-prefix tables, the
exported graph, generation and the gate (issue #17).

    python -m bench.scale_catalogue [--sizes 10000 100000 1000000 10000000]
                                    [--codebook-sizes 256 1024] [--users 30] [--plot FILE.png]
                                    [--json FILE]

Each (items, K) cell runs in its own process, so its peak RSS is its own:
- embeddings: `--dim`-dimensional standard Gaussian by default, or clustered (`--clusters` C:
  C Gaussian centres with unit noise), seeded; items get ids 1..N. Clustered catalogues are
  the hard case for 3 levels: where RQ-Kmeans cannot split a cluster, items share all three
  codes and the disambiguation level grows (1M items at K = 1024 and 1,000 clusters: up to
  533 items on one ID), and with it every beam's last-level mask (B x W x that many codes);
  at 10M items and K = 256 that ran out of memory (24 GB), so the default is the Gaussian;
- the RQ-Kmeans fit of the real tokenizer (`onerec.tokenizer.build.fit_codebook`: 3 levels of
  K codes, balanced, faiss), its wall time and the process's peak RSS when it ends;
- a refresh with 1% new items from the same distribution (`onerec.tokenizer.build.refresh`);
- the valid-prefix tables (`onerec.trie.ItemTrie`, CSR per level): bytes and bytes per item,
  beside what the dense (node, code) tables they replaced would take;
- the `small` model with random weights and `model.item_id_embedding=false` (so no parameter
  grows with the catalogue: the id table alone would be 5 GB at 10M items), exported as one
  ONNX graph at beam 512 (`onerec.export.onnx`, TorchScript exporter): its file size;
- beam-512 latency per user at B=1 (p50/p99 over `--users` users) and users/s at B=64, in ONNX
  Runtime and in the PyTorch reference beam search (`onerec.beam_search`, B=1 only);
- the gate's evaluation (`onerec.recommend.recommend` at the Config's serving beam, top 10,
  then recall/NDCG against a target each) per 1,000 users.

Speed does not depend on the weights, only on the shapes, so random weights are enough. The
table is followed by each column's growth with the catalogue: the exponent b of a fitted
cost ~ N^b per K (0 is flat, 1 is linear), and the 10M-vs-10k ratio of the graph's p50.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess  # nosec B404 # runs this module's own cells
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import print_table

COLUMNS = ["K", "items", "fit s", "fit peak MB", "refresh 1% s", "tables MB", "B/item",
           "dense tables MB", "graph MB", "onnx p50 ms", "onnx p99 ms", "onnx users/s B=64",
           "reference p50 ms", "gate s / 1k users"]
GROWTH = {"fit s": "fit_s", "fit peak MB": "fit_peak_mb", "tables MB": "tables_mb",
          "graph MB": "graph_mb", "onnx p50 ms": "onnx_p50", "reference p50 ms": "ref_p50",
          "gate s / 1k users": "gate_s_per_1k"}


def peak_mb() -> float:
    """This process's peak resident set so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def clustered(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """(n, dim) float32: Gaussian clusters around `clusters` centres (0: one, at the origin:
    isotropic noise), made in blocks."""
    rng = np.random.default_rng(seed)
    centres = (rng.normal(size=(max(clusters, 1), dim)).astype(np.float32) * 4 if clusters > 0
               else np.zeros((1, dim), dtype=np.float32))
    clusters = max(clusters, 1)
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 1 << 20):
        e = min(n, s + (1 << 20))
        out[s:e] = centres[rng.integers(0, clusters, e - s)]
        out[s:e] += rng.normal(size=(e - s, dim)).astype(np.float32)
    return out


def dense_bytes(trie: Any) -> int:
    """What the dense tables took: a (nodes + 1, K) int32 table per level, and the leaves."""
    nodes = [len(o) - 2 for o in trie.offsets]
    return sum((n + 1) * k * 4 for n, k in zip(nodes, trie.vocab_sizes, strict=True)) \
        + trie.leaf_item.numel() * 8


def cell(n: int, k: int, args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement for one catalogue: see the module docstring."""
    import torch

    from bench.generation import make_users, measure
    from onerec.beam_search import beam_search
    from onerec.checkpoint import build_model
    from onerec.config import Config
    from onerec.evaluate import rank_metrics
    from onerec.export.onnx import export_onnx, ort_session, run_onnx
    from onerec.items import ItemSpace
    from onerec.recommend import recommend
    from onerec.tokenizer.build import fit_codebook, refresh
    from onerec.trie import ItemTrie

    torch.set_num_threads(args.threads)
    cfg = Config.from_preset("small", [f"tokenizer.codebook_size={k}", "tokenizer.levels=3",
                                       f"tokenizer.kmeans_iters={args.iters}",
                                       "model.item_id_embedding=false"])
    extra = max(1, n // 100)  # the refresh's new items, from the same clusters
    x_all = clustered(n + extra, args.dim, args.clusters, seed=0)
    x, new = x_all[:n], x_all[n:]
    ids = np.arange(1, n + 1, dtype=np.int64)
    out: dict[str, Any] = {"K": k, "items": n, "embeddings_mb": x.nbytes / 2**20}
    t0 = time.perf_counter()
    cb = fit_codebook(x, ids, cfg.tokenizer)
    out["fit_s"] = time.perf_counter() - t0
    out["fit_peak_mb"] = peak_mb()
    out["collision_rate"] = cb.metrics.get("collision_rate")
    print(f"{n:,} items, K = {k}: fit {out['fit_s']:.0f} s, vocabulary {cb.vocab_sizes}",
          flush=True)
    t0 = time.perf_counter()
    res = refresh(cb, np.arange(n + 1, n + 1 + len(new)), new, cfg.tokenizer,
                  refit_data=lambda ids=ids, x=x: (ids, x))
    out["refresh_s"] = time.perf_counter() - t0
    out["refresh_refit"] = res.refit
    del x, new, x_all, res
    gc.collect()
    space = ItemSpace.from_codebook(cb)
    t0 = time.perf_counter()
    trie = ItemTrie.from_codes(space.codes, space.vocab_sizes)
    out["trie_build_s"] = time.perf_counter() - t0
    out["vocab"] = space.vocab_sizes
    out["fanout"] = trie.fanout
    out["tables_mb"] = trie.nbytes / 2**20
    out["bytes_per_item"] = trie.nbytes / n
    out["dense_mb"] = dense_bytes(trie) / 2**20
    model = build_model(cfg, space.codes, space.vocab_sizes).eval()
    out["params"] = model.num_params()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        t0 = time.perf_counter()
        path = export_onnx(model, trie, cfg, Path(tmp) / "w.onnx", beam_width=args.beam,
                           exporter="torchscript")
        out["export_s"] = time.perf_counter() - t0
        out["graph_mb"] = path.stat().st_size / 2**20
        session = ort_session(path, threads=args.threads)
        batches = {1: [make_users(cfg, n, 1, i) for i in range(args.users)],
                   64: [make_users(cfg, n, 64, 1000 + i) for i in range(2)]}
        m = measure(lambda u, s=session: run_onnx(s, u), batches)
        out.update(onnx_p50=m["p50"], onnx_p99=m["p99"], onnx_b64=m["b64"])
        del session
    ref_users = {1: [make_users(cfg, n, 1, 500 + i) for i in range(args.reference_users)]}
    m = measure(lambda u: beam_search(model, u, beam_width=args.beam, top_n=args.beam,
                                      trie=trie), ref_users)
    out["ref_p50"] = m["p50"]
    ctx = make_users(cfg, n, args.gate_users, 7)
    targets = torch.randint(1, n + 1, (args.gate_users,)).tolist()
    t0 = time.perf_counter()
    recs = recommend(model, space, ctx, beam_width=cfg.serve.beam_width, top_n=10, trie=trie)
    rank_metrics(recs.items, [int(space.item_ids[t - 1]) for t in targets], ks=(5, 10))
    out["gate_s_per_1k"] = (time.perf_counter() - t0) * 1000 / args.gate_users
    out["gate_legality"] = recs.legality
    out["peak_mb"] = peak_mb()
    return out


def random_codes(n: int, k: int, seed: int = 0):
    """(n + 1, 4) distinct semantic IDs (3 random levels of K codes, a disambiguation token),
    row 0 padding, as `ItemSpace.codes`; and the vocabulary sizes."""
    import torch

    from onerec.tokenizer.codebook import assign_disambiguation

    rng = np.random.default_rng(seed)
    base = rng.integers(0, k, (n, 3))
    dis = assign_disambiguation(base)
    codes = np.concatenate([np.zeros((1, 4), np.int64), np.column_stack([base, dis])])
    return torch.from_numpy(codes), [k, k, k, int(dis.max()) + 1]


def interleaved(sizes: list[int], k: int, args: argparse.Namespace) -> list[list[str]]:
    """Beam-`args.beam` latency of the smallest and the largest catalogue in one process, the
    graphs taking turns (`args.runs` rounds of `args.users` B=1 users each): the same weights
    (seeded; no parameter depends on the item count), random IDs. A ratio that the machine's
    load cannot skew the way sequential cells can."""
    import statistics

    import torch

    from bench.generation import make_users, measure
    from onerec.checkpoint import build_model
    from onerec.config import Config
    from onerec.export.onnx import export_onnx, ort_session, run_onnx
    from onerec.trie import ItemTrie

    torch.set_num_threads(args.threads)
    cfg = Config.from_preset("small", [f"tokenizer.codebook_size={k}", "tokenizer.levels=3",
                                       "model.item_id_embedding=false"])
    ends = [min(sizes), max(sizes)]
    sessions, tmp = {}, tempfile.TemporaryDirectory(prefix="bench-scale-")
    for n in ends:
        codes, vocab = random_codes(n, k)
        model = build_model(cfg, codes, vocab).eval()
        path = export_onnx(model, ItemTrie.from_codes(codes, vocab), cfg,
                           Path(tmp.name) / f"{n}.onnx", beam_width=args.beam,
                           exporter="torchscript")
        sessions[n] = ort_session(path, threads=args.threads)
        del model
    p50: dict[int, list[float]] = {n: [] for n in ends}
    for r in range(args.runs):
        for n in ends if r % 2 == 0 else ends[::-1]:
            users = {1: [make_users(cfg, n, 1, 100 * r + i) for i in range(args.users)]}
            p50[n].append(measure(lambda u, s=sessions[n]: run_onnx(s, u), users)["p50"])
    tmp.cleanup()
    ratio = statistics.median(b / a for a, b in zip(p50[ends[0]], p50[ends[1]], strict=True))
    return [[str(k), f"{ends[0]:,}", f"{ends[1]:,}",
             f"{statistics.median(p50[ends[0]]):.1f}", f"{statistics.median(p50[ends[1]]):.1f}",
             f"{ratio:.2f}x", " ".join(f"{b / a:.2f}" for a, b in
                                       zip(p50[ends[0]], p50[ends[1]], strict=True))]]


def growth(rows: list[dict[str, Any]], key: str) -> float:
    """The exponent b of key ~ items^b, least squares in log-log (nan under two sizes)."""
    pts = [(r["items"], r[key]) for r in rows if r.get(key, 0) > 0]
    if len(pts) < 2:
        return float("nan")
    lx, ly = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(lx, ly, 1)[0])


def run_cell(n: int, k: int, argv: list[str]) -> dict[str, Any]:
    """One cell in a fresh process (its own peak RSS). OpenMP's passive wait as everywhere, but
    glibc's own malloc thresholds, not `onerec.runtime`'s: those keep freed memory for the next
    training step, and here the fit's gigabytes would stay resident through the export (a 10M
    cell was OOM-killed at 12 GB that way)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    cmd = [sys.executable, "-m", "bench.scale_catalogue", *argv, "--cell", str(n), str(k),
           "--cell-json", str(out)]
    env = {key: v for key, v in os.environ.items() if not key.startswith("MALLOC_")}
    env.update(OMP_WAIT_POLICY="PASSIVE", ONEREC_NO_TUNING="1")
    subprocess.run(cmd, check=True, env=env)  # nosec B603 # this module, own arguments
    try:
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


def table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    return [[str(r["K"]), f"{r['items']:,}", f"{r['fit_s']:.1f}", f"{r['fit_peak_mb']:.0f}",
             f"{r['refresh_s']:.2f}" + (" (refit)" if r["refresh_refit"] else ""),
             f"{r['tables_mb']:.1f}", f"{r['bytes_per_item']:.1f}", f"{r['dense_mb']:.0f}",
             f"{r['graph_mb']:.1f}", f"{r['onnx_p50']:.1f}", f"{r['onnx_p99']:.1f}",
             f"{r['onnx_b64']:.0f}", f"{r['ref_p50']:.1f}", f"{r['gate_s_per_1k']:.2f}"]
            for r in rows]


def plot(rows: list[dict[str, Any]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from onerec.io import atomic_path

    keys = [("fit_s", "RQ-Kmeans fit (s)"), ("fit_peak_mb", "fit peak RSS (MB)"),
            ("bytes_per_item", "prefix tables (bytes / item)"),
            ("onnx_p50", "beam-512 p50, ONNX (ms / user)"),
            ("gate_s_per_1k", "gate evaluation (s / 1k users)"), ("graph_mb", "graph (MB)")]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    for ax, (key, label) in zip(axes.flat, keys, strict=True):
        for k in sorted({r["K"] for r in rows}):
            pts = sorted((r["items"], r[key]) for r in rows if r["K"] == k)
            ax.plot(*zip(*pts, strict=True), marker="o", label=f"K = {k}")
        ax.set(xscale="log", yscale="log", title=label, xlabel="items")
        ax.grid(alpha=0.3)
    axes.flat[0].legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+",
                    default=[10_000, 100_000, 1_000_000, 10_000_000])
    ap.add_argument("--codebook-sizes", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--dim", type=int, default=32, help="embedding dimension")
    ap.add_argument("--clusters", type=int, default=0,
                    help="Gaussian centres (0: one isotropic Gaussian)")
    ap.add_argument("--iters", type=int, default=20, help="k-means iterations per level")
    ap.add_argument("--beam", type=int, default=512)
    ap.add_argument("--users", type=int, default=30, help="B=1 users for the graph's latency")
    ap.add_argument("--reference-users", type=int, default=5)
    ap.add_argument("--gate-users", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--interleaved", action="store_true",
                    help="only the latency of the smallest and largest catalogue, taking turns "
                         "in one process (random IDs, no fit)")
    ap.add_argument("--runs", type=int, default=5, help="--interleaved: rounds")
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--plot", default=None, help="also draw the growth curves (PNG)")
    ap.add_argument("--cell", type=int, nargs=2, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cell-json", default=None, help=argparse.SUPPRESS)
    raw = list(sys.argv[1:] if argv is None else argv)
    args = ap.parse_args(raw)
    if args.cell:
        Path(args.cell_json).write_text(json.dumps(cell(*args.cell, args), default=float))
        return []
    from rich.console import Console

    console = Console(width=240)
    load_start = tuple(round(v, 2) for v in os.getloadavg())
    if args.interleaved:
        load_start = tuple(round(v, 2) for v in os.getloadavg())
        rows_i = [r for k in args.codebook_sizes for r in interleaved(args.sizes, k, args)]
        load_end = tuple(round(v, 2) for v in os.getloadavg())
        print_table(console, f"beam-{args.beam} p50 ms at B=1, the graphs taking turns, median "
                    f"of {args.runs} rounds (load average {load_start} -> {load_end})",
                    ["K", "small", "large", "small p50", "large p50", "large / small",
                     "per round"], rows_i)
        return []
    passed = _without_outputs([a for a in raw if not a.startswith(("--json=", "--plot="))])
    rows = []
    for k in args.codebook_sizes:
        for n in args.sizes:
            if n < k:
                console.print(f"skip {n:,} items at K = {k}: fewer items than codes")
                continue
            t0 = time.perf_counter()
            rows.append(run_cell(n, k, passed))
            console.print(f"K = {k}, {n:,} items: {time.perf_counter() - t0:.0f} s", highlight=False)
    load_end = tuple(round(v, 2) for v in os.getloadavg())
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = (f"bench.scale_catalogue ({stamp}; load average {load_start} -> {load_end}; "
             f"{args.threads} threads; beam {args.beam})")
    print_table(console, title, COLUMNS, table_rows(rows))
    grow = [[str(k), *(f"{growth([r for r in rows if r['K'] == k], key):.2f}"
                       for key in GROWTH.values())] for k in args.codebook_sizes]
    print_table(console, "growth exponent b (cost ~ items^b; 0 flat, 1 linear)",
                ["K", *GROWTH], grow)
    for k in args.codebook_sizes:
        mine = sorted((r["items"], r["onnx_p50"]) for r in rows if r["K"] == k)
        if len(mine) > 1:
            console.print(f"K = {k}: beam-{args.beam} p50 at {mine[-1][0]:,} items is "
                          f"{mine[-1][1] / mine[0][1]:.2f}x that at {mine[0][0]:,}",
                          highlight=False)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"title": title, "rows": rows}, indent=1,
                                              default=float))
    if args.plot and rows:
        plot(rows, args.plot, title)
    return rows


def _without_outputs(argv: list[str]) -> list[str]:
    """The arguments a cell gets: the parent's, less --json/--plot and their values."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--json", "--plot"):
            skip = True
            continue
        out.append(a)
    return out


if __name__ == "__main__":
    main()

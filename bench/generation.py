"""Generation speed: the fast generator and its ONNX graph against the reference beam search.

    python -m bench.generation [--checkpoint DIR --codebook DIR] [--beams 32 128 512]
                               [--runs 3] [--threads 2] [--exporter dynamo] [--json FILE]
                               [--plot FILE.png]

Model: a trained checkpoint with its codebook when given (e.g. runs/bench-quality/kuairand/
train/checkpoint and .../codebook); otherwise the `small` preset with random weights over a
random codebook of the shipped KuaiRand sample's shape (7,583 videos, 3 levels of 256 codes +
the disambiguation token). Speed does not depend on the weights, only on the shapes.

Users: random histories of the Config's fixed shapes (short/pos/long), each left-padded to a
random fill of 25-100 %, so attention masks differ between users as in serving.

For each beam width, these paths over the same users, with the valid-prefix constraint on:
- textbook: the reference with `share_memory=False` (every beam its own copy of the encoder
  output, so cross-attention K/V are projected per beam; no cache): what a generic seq2seq beam
  search does; batch-1 latency only (at B=64 x beam 512 its copies take gigabytes);
- reference: `onerec.beam_search.beam_search` (full-prefix decode every step, the ItemTrie mask; the
  beams of a user already share its cross-attention K/V);
- fast: `onerec.generate.Generator` in PyTorch (KV cache, shared cross K/V, trie), with
  `--threads` intra-op threads and, as "fast-1t", with one (per-op OpenMP wake-ups cost more
  than a second thread gains on small ops, above all on a shared machine);
- onnx: the exported graph (`onerec.export.onnx`) in ONNX Runtime on CPU, and as "onnx-1t"
  with one intra-op thread (on 2 cores the graph's ~1.2k small nodes may gain less from a
  second thread than the hand-offs cost).
Latency: per user at batch 1, p50 and p99 over `--users` users; throughput: users/s at batch
16 and 64 over a few batches. The whole measurement runs `--runs` times and the table reports
the medians; ratios (fast / reference, onnx / fast) are taken within each run. The process
re-executes itself with the tuned allocator and OpenMP settings of `bench.runtime`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bench.report import print_table
from bench.runtime import reexec_with_tuned_env

COLUMNS = ["beam", "path", "p50 ms (B=1)", "p99 ms (B=1)", "users/s B=16", "users/s B=64",
           "p50 vs reference", "B=64 vs reference"]
PATHS = ("textbook", "reference", "fast", "fast-1t", "onnx", "onnx-1t")


def build(args: argparse.Namespace):
    """-> model, space, cfg: a trained checkpoint, or random weights at the small preset."""
    import torch

    from onerec.checkpoint import build_model
    from onerec.config import Config
    from onerec.export.artifact import load_trained
    from onerec.items import ItemSpace
    from onerec.tokenizer.codebook import Codebook

    if args.checkpoint:
        return load_trained(args.checkpoint, args.codebook)
    cfg = Config.from_preset("small")
    rng = np.random.default_rng(0)
    levels, k = cfg.tokenizer.levels, cfg.tokenizer.codebook_size
    codes = rng.integers(0, k, (args.items, levels))
    cb = Codebook.from_codes(rng.normal(size=(levels, k, 4)), np.arange(args.items) + 1, codes)
    space = ItemSpace.from_codebook(cb)
    torch.manual_seed(0)
    return build_model(cfg, space.codes, space.vocab_sizes).eval(), space, cfg


def make_users(cfg, n_items: int, b: int, seed: int):
    import torch

    from onerec.model import Batch

    g = torch.Generator().manual_seed(seed)
    d = cfg.data

    def seq(width: int) -> torch.Tensor:
        x = torch.randint(1, n_items + 1, (b, width), generator=g)
        fill = torch.randint(width // 4, width + 1, (b, 1), generator=g)
        return x * (torch.arange(width) >= width - fill)  # left padding

    return Batch(user=torch.zeros(b, dtype=torch.long), short=seq(d.max_seq_len),
                 pos=seq(d.max_pos_seq_len), long=seq(d.max_long_seq_len))


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(run: Callable[[object], object], batches: dict[int, list]) -> dict[str, float]:
    """p50/p99 ms over the batch-1 users; users/s at each larger batch size."""
    run(batches[1][0])  # warm-up
    lat = sorted(timed(lambda u=u: run(u)) * 1000 for u in batches[1])
    out = {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99))}
    for b, group in batches.items():
        if b > 1:
            run(group[0])
            out[f"b{b}"] = b * len(group) / sum(timed(lambda x=x: run(x)) for x in group)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="trained checkpoint folder")
    ap.add_argument("--codebook", default=None, help="its codebook folder")
    ap.add_argument("--beams", type=int, nargs="+", default=[32, 128, 512])
    ap.add_argument("--runs", type=int, default=3, help="repeat the whole measurement")
    ap.add_argument("--users", type=int, default=40, help="batch-1 users per latency sample")
    ap.add_argument("--batches", type=int, default=2, help="batches per throughput sample")
    ap.add_argument("--reference-users", type=int, default=15,
                    help="batch-1 users for the (slow) reference path")
    ap.add_argument("--items", type=int, default=7583, help="videos of the random codebook")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--exporter", default="dynamo", choices=("dynamo", "torchscript"))
    ap.add_argument("--json", default=None, help="also write the summary (medians) here")
    ap.add_argument("--plot", default=None,
                    help="also draw latency and throughput against the beam width (PNG)")
    args = ap.parse_args(argv)
    if bool(args.checkpoint) != bool(args.codebook):
        ap.error("--checkpoint and --codebook go together")
    reexec_with_tuned_env("bench.generation", argv)

    import torch
    from rich.console import Console

    from onerec.beam_search import beam_search
    from onerec.export.onnx import export_onnx, ort_session, run_onnx
    from onerec.generate import Generator
    from onerec.trie import ItemTrie

    torch.set_num_threads(args.threads)
    console = Console()
    model, space, cfg = build(args)
    trie = ItemTrie.from_codes(space.codes, space.vocab_sizes)
    console.print(f"model {model.num_params():,} params, {len(space):,} items, vocab "
                  f"{space.vocab_sizes}, {args.threads} threads, exporter {args.exporter}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-generation-"))
    runners: dict[int, dict[str, Callable]] = {}
    for w in args.beams:
        t0 = time.perf_counter()
        path = export_onnx(model, trie, cfg, tmp / f"w{w}.onnx", beam_width=w,
                           exporter=args.exporter)
        console.print(f"exported beam {w} in {time.perf_counter() - t0:.1f} s")
        gen = Generator(model, trie, beam_width=w)
        session = ort_session(path, threads=args.threads)
        session_1t = ort_session(path, threads=1)

        def fast(x, gen=gen):
            with torch.inference_mode():
                return gen(x.user, x.short, x.pos, x.long)

        def ref(x, w=w):
            return beam_search(model, x, beam_width=w, top_n=w, trie=trie)

        def fast_1t(x, fast=fast):
            torch.set_num_threads(1)
            try:
                return fast(x)
            finally:
                torch.set_num_threads(args.threads)

        def textbook(x, w=w):
            return beam_search(model, x, beam_width=w, top_n=w, trie=trie, share_memory=False)

        runners[w] = {"textbook": textbook, "reference": ref, "fast": fast, "fast-1t": fast_1t,
                      "onnx": lambda x, s=session: run_onnx(s, x),
                      "onnx-1t": lambda x, s=session_1t: run_onnx(s, x)}
    n = len(space)
    results: dict[tuple[int, str], list[dict[str, float]]] = {}
    for r in range(args.runs):
        for w in args.beams:
            for name in PATHS:
                k1 = args.reference_users if name in ("reference", "textbook") else args.users
                batches = {1: [make_users(cfg, n, 1, 1000 * r + i) for i in range(k1)]}
                if name != "textbook":
                    batches[16] = [make_users(cfg, n, 16, 2000 + r * 10 + i)
                                   for i in range(args.batches)]
                    batches[64] = [make_users(cfg, n, 64, 3000 + r * 10 + i)
                                   for i in range(args.batches)]
                m = measure(runners[w][name], batches)
                results.setdefault((w, name), []).append(m)
                console.print(f"run {r + 1}/{args.runs} beam {w:>4} {name:>9}: "
                              f"p50 {m['p50']:.1f} ms, {m.get('b64', float('nan')):.0f} "
                              "users/s at B=64", highlight=False)
    rows = []
    summary: dict = {}
    for w in args.beams:
        ref = results[(w, "reference")]
        for name in PATHS:
            ms = results[(w, name)]

            def med(key: str, ms=ms) -> float:
                return statistics.median(m.get(key, float("nan")) for m in ms)

            def fmt(v: float, spec: str) -> str:
                return "-" if v != v else format(v, spec)

            speed = statistics.median(a["p50"] / b["p50"] for a, b in zip(ref, ms, strict=True))
            thr = statistics.median(b.get("b64", float("nan")) / a["b64"]
                                    for a, b in zip(ref, ms, strict=True))
            rows.append([str(w), name, f"{med('p50'):.1f}", f"{med('p99'):.1f}",
                         fmt(med("b16"), ".0f"), fmt(med("b64"), ".0f"), f"{speed:.2f}x",
                         fmt(thr, ".1f") + ("x" if thr == thr else "")])
            summary[f"{w}/{name}"] = {k: med(k) for k in ("p50", "p99", "b16", "b64")}
        summary[f"{w}/fast_vs_textbook_p50"] = statistics.median(
            a["p50"] / b["p50"] for a, b in zip(results[(w, "textbook")],
                                                results[(w, "onnx")], strict=True))
        onnx_vs_fast = statistics.median(
            a["p50"] / b["p50"] for a, b in zip(results[(w, "fast")], results[(w, "onnx")],
                                                strict=True))
        summary[f"{w}/onnx_vs_fast_p50"] = onnx_vs_fast
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print_table(console, f"bench.generation: {len(space):,} items, vocab {space.vocab_sizes}, "
                f"{args.threads} threads, median of {args.runs} runs, constrained ({stamp})",
                COLUMNS, rows, left=("path",))
    for w in args.beams:
        console.print(f"beam {w}: ONNX Runtime vs PyTorch fast path, p50 at B=1: "
                      f"{summary[f'{w}/onnx_vs_fast_p50']:.2f}x; ONNX Runtime vs textbook: "
                      f"{summary[f'{w}/fast_vs_textbook_p50']:.1f}x", highlight=False)
    if args.json:
        import json

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2, default=float))
    if args.plot:
        from bench.plots import generation_png
        from onerec.io import atomic_write_bytes

        png = generation_png(summary, f"bench.generation: {len(space):,} items, {args.threads} "
                                      f"threads, median of {args.runs} runs ({stamp})")
        if png is not None:
            atomic_write_bytes(args.plot, png)
    return summary


if __name__ == "__main__":
    main()

"""Scaling study at small scale: held-out next-token loss against model size.

    python -m bench.scaling [--dataset beauty|kuairand] [--steps 800] [--sizes xs,s,m,l]

OneRec (section 5) reports loss falling steadily with parameters (0.015B -> 2.6B). This is
the same plot on one CPU box: every size trains on the same requests, in the same order, for
the same number of steps (the same tokens), then the mean next-token loss per semantic-ID
token is measured on held-out targets (Beauty: every user's validation item, TIGER protocol;
KuaiRand: the requests of the last `data.test_days` days). Parameters are reported in total
and without the item-id table (which grows with the catalogue, not with the model), and the
plot (PNG) puts held-out loss against non-embedding parameters on a log axis with the fitted
power law L = a * N^-b.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.runtime import reexec_with_tuned_env

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
SIZES = {  # name: (d_model, n_heads, encoder layers, decoder layers, expert hidden)
    "xs": (32, 2, 1, 1, 64),
    "s": (64, 2, 2, 2, 128),
    "m": (128, 4, 2, 2, 256),
    "l": (192, 6, 3, 3, 384),
    "xl": (256, 8, 4, 4, 512),
}


def size_overrides(name: str) -> list[str]:
    d, h, enc, dec, ff = SIZES[name]
    return [f"model.d_model={d}", f"model.n_heads={h}", f"model.n_encoder_layers={enc}",
            f"model.n_decoder_layers={dec}", f"model.expert_hidden={ff}"]


def run(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from onerec.config import Config
    from onerec.train import heldout_loss, train

    torch.set_num_threads(args.threads)
    seq = ["data.max_seq_len=20", "model.causal_encoder=true"] if args.dataset == "beauty" else []
    base = [*seq, f"train.max_steps={args.steps}", f"train.batch_size={args.batch_size}",
            f"train.warmup_steps={max(1, args.steps // 20)}", f"train.log_every={args.steps}",
            f"train.checkpoint_every={args.steps}", "train.lr=2e-3", *args.overrides]
    cfg0 = Config.from_preset("small", base)
    space, reqs, held = load(args, cfg0)
    rows = []
    for name in args.sizes.split(","):
        cfg = Config.from_preset("small", base + size_overrides(name))
        t0 = time.perf_counter()
        model, res = train(cfg, reqs, space.codes, space.vocab_sizes,
                           Path(args.out) / name, codebook_fingerprint=space.fingerprint,
                           resume=False)
        wall = time.perf_counter() - t0
        loss = heldout_loss(model, held, space.codes)
        emb = 0 if model.item_emb is None else model.item_emb.weight.numel()
        row = {"size": name, "d_model": cfg.model.d_model,
               "layers": f"{cfg.model.n_encoder_layers}+{cfg.model.n_decoder_layers}",
               "params": model.num_params(), "non_embedding_params": model.num_params() - emb,
               "active_params": model.num_params(active=True), "train_loss": res.final_loss,
               "heldout_loss": loss, "train_min": wall / 60, "steps": res.steps}
        rows.append(row)
        print(json.dumps(row), flush=True)
    n = np.log([r["non_embedding_params"] for r in rows])
    ls = np.log([r["heldout_loss"] for r in rows])
    slope, intercept = np.polyfit(n, ls, 1) if len(rows) > 1 else (math.nan, math.nan)
    return {"rows": rows, "power_law": {"a": float(np.exp(intercept)), "b": float(-slope)},
            "n_train_requests": len(reqs), "n_train_targets": reqs.n_targets,
            "n_heldout_targets": held.n_targets}


def load(args: argparse.Namespace, cfg):
    """-> (ItemSpace, training requests, held-out requests) for the chosen dataset."""
    import dataclasses

    import numpy as np

    from onerec.items import ItemSpace
    from onerec.pretrain import build_codebook
    from onerec.stream import Requests, requests_from_sequences

    if args.dataset == "beauty":
        from onerec.data.sequences import load_beauty
        from onerec.tokenizer.embeddings import catalogue_from_sequences

        data = load_beauty(args.data_dir or SHARED / "amazon-beauty")
        split = data.split(max_history=cfg.data.max_seq_len)
        cat = catalogue_from_sequences(data)
        cat = dataclasses.replace(cat, sequences=[np.asarray(s, dtype=np.int64)
                                                  for _, s in sorted(split.train.items())])
        space = ItemSpace.from_codebook(build_codebook(cfg, cat))
        index = space.index
        reqs = requests_from_sequences(
            {u: [index[i] for i in s] for u, s in split.train.items()}, cfg.data,
            causal=cfg.model.causal_encoder)
        # one held-out request per user: its history and its validation item
        held = requests_from_sequences(
            {u: [index[i] for i in h] + [index[t]] for u, h, t in split.valid}, cfg.data,
            causal=True)
        last = held.target_offsets[1:] - 1  # each window's final target is the valid item
        held = Requests(held.user, held.time_ms, held.short, held.pos, held.long,
                        np.arange(len(held) + 1), held.targets[last], held.target_len[last])
        return space, reqs, held
    from onerec.data import kuairand
    from onerec.evaluate import split_cut_ms
    from onerec.tokenizer.embeddings import catalogue_from_kuairand

    data_dir = args.data_dir or ROOT / "data" / "kuairand-pure"
    ds = kuairand.load(data_dir)
    history = kuairand.read_history(data_dir)
    from onerec.evaluate import temporal_split
    from onerec.stream import requests_from_events

    train_ev, _ = temporal_split(ds.events, cfg.data.test_days)
    space = ItemSpace.from_codebook(build_codebook(
        cfg, catalogue_from_kuairand(dataclasses.replace(ds, events=train_ev))))
    everything = requests_from_events(ds.events, space.index, cfg.data, history=history)
    cut = split_cut_ms(ds.events, cfg.data.test_days)
    train_idx = np.flatnonzero(everything.time_ms < cut)
    test_idx = np.flatnonzero(everything.time_ms >= cut)
    return space, everything.select(train_idx), everything.select(test_idx)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = result["rows"]
    x = np.array([r["non_embedding_params"] for r in rows], dtype=float)
    y = np.array([r["heldout_loss"] for r in rows])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(x, y, "o-", label="held-out loss")
    for r, xi, yi in zip(rows, x, y, strict=True):
        ax.annotate(r["size"], (xi, yi), textcoords="offset points", xytext=(4, 4))
    pl = result["power_law"]
    if math.isfinite(pl["b"]):
        xs = np.geomspace(x.min(), x.max(), 50)
        ax.plot(xs, pl["a"] * xs ** -pl["b"], "--", label=f"{pl['a']:.2f} N^-{pl['b']:.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("non-embedding parameters")
    ax.set_ylabel("next-token loss (nats / token)")
    ax.set_title(result["title"].replace(": ", ":\n", 1), fontsize=8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=("beauty", "kuairand"), default="beauty")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--sizes", default="xs,s,m,l", help=f"comma list of {sorted(SIZES)}")
    ap.add_argument("--steps", type=int, default=800, help="training steps per size")
    ap.add_argument("--batch-size", type=int, default=128, help="requests per step")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", default="runs/bench-scaling")
    ap.add_argument("--plot", default="docs/scaling.png")
    ap.add_argument("--json", default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    for s in args.sizes.split(","):
        if s not in SIZES:
            ap.error(f"--sizes: unknown size {s!r}; choose from {sorted(SIZES)}")
    reexec_with_tuned_env("bench.scaling", argv)
    from rich.console import Console

    from bench.report import print_table

    t0 = time.perf_counter()
    result = run(args)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    result["title"] = (f"bench.scaling --dataset {args.dataset}: {args.steps} steps x "
                       f"{args.batch_size} requests ({stamp})")
    cols = ("size", "d_model", "layers", "params", "non-emb params", "train loss",
            "held-out loss", "train min")
    rows = [(r["size"], str(r["d_model"]), r["layers"], f"{r['params'] / 1e6:.2f} M",
             f"{r['non_embedding_params'] / 1e6:.2f} M", f"{r['train_loss']:.3f}",
             f"{r['heldout_loss']:.4f}", f"{r['train_min']:.1f}") for r in result["rows"]]
    print_table(Console(), result["title"], cols, rows, left=("size", "layers"))
    pl = result["power_law"]
    print(f"fit: held-out loss = {pl['a']:.3f} * N^-{pl['b']:.4f} (N = non-embedding params); "
          f"{result['n_train_targets']} training targets, {result['n_heldout_targets']} held out; "
          f"total {(time.perf_counter() - t0) / 60:.1f} min")
    if args.plot:
        plot(result, Path(args.plot))
        print(f"plot: {args.plot}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

"""Semantic-ID tokenizer benchmark: codebook quality and fit time on the real datasets.

    python -m bench.tokenizer [--runs 3] [--preset small] [--datasets kuairand beauty microlens]

For KuaiRand-Pure (shipped sample, 7,583 videos, side features), Amazon Beauty (12,101 items,
item text) and MicroLens (5,312 videos, titles; the last two read ../shared/datasets and are
skipped with a message when absent): builds item embeddings once (timed separately: the text
encoder dominates), then fits RQ-Kmeans `--runs` times on content+collab and reports the median
fit time, utilisation per level, collision rate, relative reconstruction error, max items per
semantic ID; and the collision rates of a fit on the content part alone (what the
collaborative part buys) and of an unbalanced fit (what balancing buys). Prints a rich table and the same table in Markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from onerec.config import Config
from onerec.tokenizer.build import fit_codebook
from onerec.tokenizer.embeddings import ItemEmbedder, load_catalogue

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {
    "kuairand": ("KuaiRand-Pure", ROOT / "data" / "kuairand-pure"),
    "beauty": ("Amazon Beauty", ROOT / ".." / "shared" / "datasets" / "amazon-beauty"),
    "microlens": ("MicroLens", ROOT / ".." / "shared" / "datasets" / "microlens"),
}
COLUMNS = ["dataset", "items", "embed s", "fit s (median)", "utilisation L1/L2/L3",
           "collisions content+collab", "collisions content only", "collisions unbalanced",
           "rel. recon error", "items/ID max"]


def bench_one(key: str, cfg: Config, runs: int, console: Console) -> list[str] | None:
    label, path = DATASETS[key]
    if not path.exists():
        console.print(f"[yellow]skip {label}[/]: {path} is absent")
        return None
    cat = load_catalogue(key, path)
    t0 = time.perf_counter()
    emb = ItemEmbedder(cfg.tokenizer).fit_transform(cat, progress=True)
    embed_s = time.perf_counter() - t0
    times, cb = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        cb = fit_codebook(emb.vectors(), emb.item_ids, cfg.tokenizer)
        times.append(time.perf_counter() - t0)
    content_only = fit_codebook(emb.vectors(collab=False), emb.item_ids, cfg.tokenizer)
    unbalanced = fit_codebook(emb.vectors(), emb.item_ids,
                              dataclasses.replace(cfg.tokenizer, balanced=False))
    m = cb.metrics
    console.print(f"{label}: fit times {[round(t, 2) for t in times]}")
    return [label, str(len(cat)), f"{embed_s:.1f}", f"{statistics.median(times):.2f}",
            "/".join(f"{u:.2f}" for u in m["utilisation"]), f"{m['collision_rate']:.4f}",
            f"{content_only.metrics['collision_rate']:.4f}",
            f"{unbalanced.metrics['collision_rate']:.4f}", f"{m['reconstruction_error']:.3f}",
            str(m["items_per_id_max"])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="fits per dataset (median time)")
    ap.add_argument("--preset", default="small", help="Config preset (tiny|small|base)")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="dotted Config override, e.g. tokenizer.codebook_size=128")
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    args = ap.parse_args()
    cfg = Config.from_preset(args.preset, args.overrides)
    t = cfg.tokenizer
    console = Console(width=200)
    console.print(f"preset {args.preset}: L={t.levels} K={t.codebook_size} balanced={t.balanced}"
                  f" iters={t.kmeans_iters} dims {t.content_dim}+{t.collab_dim}")
    rows = [r for k in args.datasets if (r := bench_one(k, cfg, args.runs, console))]
    table = Table(title="tokenizer (RQ-Kmeans semantic IDs)")
    for c in COLUMNS:
        table.add_column(c, justify="left" if c == "dataset" else "right")
    for r in rows:
        table.add_row(*r)
    console.print(table)
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()

"""Semantic-ID tokenizer benchmark: codebook quality and fit time on the real datasets.

    python -m bench.tokenizer [--runs 3] [--preset small] [--datasets kuairand beauty microlens]

For KuaiRand-Pure (shipped sample, 7,583 videos, side features), Amazon Beauty (12,101 items,
item text) and MicroLens (5,312 videos, titles; the last two read ../shared/datasets and are
skipped with a message when absent): builds item embeddings once (timed separately: the text
encoder dominates), then fits RQ-Kmeans `--runs` times on content+collab and reports the median
fit time, utilisation per level, collision rate, relative reconstruction error, max items per
semantic ID; and the collision rates of a fit on the content part alone (what the
collaborative part buys) and of an unbalanced fit (what balancing buys). Then a refresh run on
KuaiRand by upload date: fit on the videos uploaded before the last day, encode the last day's
videos with the current centroids, report drift and the decision, and compare with a refit; and
drift probes (real new videos, the same with absurd statistics, random content). Prints a rich table and the same table in Markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

from rich.console import Console

from bench.report import print_table
from onerec.config import Config
from onerec.tokenizer.build import fit_codebook, measure_drift
from onerec.tokenizer.embeddings import ItemEmbedder, load_catalogue
from onerec.tokenizer.metrics import code_metrics

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


def bench_refresh(cfg: Config, console: Console) -> list[str]:
    """KuaiRand, by upload date: fit on videos uploaded before the last day, refresh with it."""
    cat = load_catalogue("kuairand", DATASETS["kuairand"][1])
    date = cat.features["upload_date"].to_numpy()
    old_ids, new_ids = cat.item_ids[date < date.max()], cat.item_ids[date == date.max()]
    embedder = ItemEmbedder(cfg.tokenizer)
    emb = embedder.fit_transform(cat.subset(old_ids), progress=False)
    cb = fit_codebook(emb.vectors(), emb.item_ids, cfg.tokenizer)
    t0 = time.perf_counter()
    x_new = embedder.transform(cat, new_ids, progress=False).vectors()
    drift = measure_drift(cb, x_new, cfg.tokenizer.refit_drift_threshold,
                          cfg.tokenizer.refit_utilisation_ratio)
    ext = cb.extended(new_ids, cb.encode(x_new))
    refresh_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    full = ItemEmbedder(cfg.tokenizer).fit_transform(cat, progress=False)
    refit = fit_codebook(full.vectors(), full.item_ids, cfg.tokenizer)
    refit_s = time.perf_counter() - t0
    coll = code_metrics(ext.codes, ext.codebook_size)["collision_rate"]
    console.print(f"refresh: {len(new_ids)} new videos (upload date {date.max()})")
    return [str(len(old_ids)), str(len(new_ids)), f"{drift.reconstruction_error_fit:.3f}",
            f"{drift.reconstruction_error_new:.3f}", f"{drift.drift:+.3f}",
            f"{drift.utilisation_ratio:.2f}",
            "refit" if drift.refit else "keep", f"{coll:.4f}",
            f"{refit.metrics['collision_rate']:.4f}", f"{refresh_s:.2f}", f"{refit_s:.2f}"]


def bench_drift_probes(cfg: Config) -> list[list[str]]:
    """Which shifts the refresh triggers catch: fit on KuaiRand's first 7,000 videos, then probe
    with the other 583 as they are, with every *_cnt statistic x 1e6, and with random content."""
    import numpy as np

    from onerec.tokenizer.embeddings import Catalogue

    t = cfg.tokenizer
    cat = load_catalogue("kuairand", DATASETS["kuairand"][1])
    ids = cat.item_ids
    embedder = ItemEmbedder(t)
    emb = embedder.fit_transform(cat.subset(ids[:7000]), progress=False)
    cb = fit_codebook(emb.vectors(), emb.item_ids, t)
    real = embedder.transform(cat, ids[7000:], progress=False).vectors()
    odd = cat.features.copy()
    stats = [c for c in odd.columns if c.endswith("_cnt")]
    odd.loc[7000:, stats] = odd.loc[7000:, stats].astype("float64") * 1e6
    odd_cat = Catalogue("odd", cat.item_ids, cat.sequences, features=odd)
    scaled = embedder.transform(odd_cat, ids[7000:], progress=False).vectors()
    rand = real.copy()
    noise = np.random.default_rng(0).normal(size=(len(rand), t.content_dim))
    rand[:, : t.content_dim] = noise / np.linalg.norm(noise, axis=1, keepdims=True)
    rows = []
    for name, x in (("as uploaded", real), ("statistics x 1e6", scaled),
                    ("random content", rand)):
        d = measure_drift(cb, x, t.refit_drift_threshold, t.refit_utilisation_ratio)
        rows.append([name, f"{d.drift:+.3f}", f"{d.utilisation_new[0]:.2f}",
                     f"{d.expected_codes / cb.codebook_size:.2f}", f"{d.utilisation_ratio:.2f}",
                     "refit" if d.refit else "keep"])
    return rows


PROBE_COLUMNS = ["583 new videos", "reconstruction drift", "L1 utilisation",
                 "expected", "ratio", "decision"]


REFRESH_COLUMNS = ["fitted items", "new items", "error fit", "error new", "drift",
                   "L1 utilisation ratio", "decision",
                   "collisions after refresh", "collisions after refit", "refresh s",
                   "refit s (embed+fit)"]


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
    print_table(console, "tokenizer (RQ-Kmeans semantic IDs)", COLUMNS, rows, left=("dataset",))
    if "kuairand" in args.datasets:
        r = bench_refresh(cfg, console)
        print("\nRefresh (KuaiRand-Pure, fit on videos uploaded before the last upload day):")
        print("| " + " | ".join(REFRESH_COLUMNS) + " |")
        print("|" + "---|" * len(REFRESH_COLUMNS))
        print("| " + " | ".join(r) + " |")
        print("\nDrift probes (KuaiRand-Pure, fit on the first 7,000 videos):")
        print("| " + " | ".join(PROBE_COLUMNS) + " |")
        print("|" + "---|" * len(PROBE_COLUMNS))
        for r in bench_drift_probes(cfg):
            print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()

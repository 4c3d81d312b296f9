"""The training scale plan of docs/scaling-plan.md, computed: model size, samples, tokens and
FLOPs a day, GPUs and TrainJob replicas for 1M, 10M and 100M users.

    python -m bench.scale_plan [--requests-per-user 100] [--mfu 0.237] [--peak-tflops 989]
                               [--max-hours 12] [--gpus-per-node 8] [--dp-efficiency 0.9]
                               [--cpu-samples-per-s 530 --cpu-mfu 0.254 --cpu-peak-gflops 197.2]

Nothing here is measured on a GPU: it is arithmetic on stated assumptions (the flags), the
models' parameter counts (built from `onerec.config` presets, as `onerec.checkpoint.build_model`
builds them) and the trainer's own FLOP count (`onerec.train.model_flops`), so a reader can
redo it with their own numbers:

    samples/day   = users x requests/user/day x targets/request
    tokens/day    = samples/day x (context tokens + semantic-ID levels)
    FLOPs/sample  = 6 x (encoder params x context tokens + active decoder params x levels)
    FLOPs/day     = samples/day x FLOPs/sample
    GPU-hours/day = FLOPs/day / (MFU x peak) / 3600
    GPUs          = the smallest of 1, 2, 4, 8, then whole nodes of --gpus-per-node, with
                    hours/day = GPU-hours/day / (GPUs x efficiency) <= --max-hours
                    (efficiency: --dp-efficiency when GPUs > 1, else 1)

The CPU anchor: `bench.training` measured the `small` preset on KuaiRand at `--cpu-samples-per-s`
with MFU `--cpu-mfu` against a `--cpu-peak-gflops` float32 matmul peak (docs/results.md); the
FLOPs per sample that implies is printed beside `model_flops`'s count for the same model.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import torch

from onerec.config import Config

# (users, preset, overrides): `small` is the demo's, `base` the GPU nodes'; the larger two scale
# `base` up toward OneRec's published sizes (0.015B-2.6B parameters, arXiv 2506.13695). The
# item-id table is off (`model.item_id_embedding=false`): items are their semantic-ID codes, so
# no parameter grows with the catalogue (on, it adds items x d_model).
CATALOGUE_FREE = ["model.item_id_embedding=false"]
SCALES: tuple[tuple[int, str, list[str]], ...] = (
    (1_000_000, "base", CATALOGUE_FREE),
    (10_000_000, "base", [*CATALOGUE_FREE, "model.d_model=1024", "model.n_heads=16",
                          "model.n_encoder_layers=6", "model.n_decoder_layers=6",
                          "model.n_experts=16", "model.expert_hidden=4096"]),
    (100_000_000, "base", [*CATALOGUE_FREE, "model.d_model=1536", "model.n_heads=16",
                           "model.n_encoder_layers=8", "model.n_decoder_layers=8",
                           "model.n_experts=16", "model.expert_hidden=6144"]),
)
TRAIN_STATE_BYTES = 16  # per parameter under DDP with AdamW: fp32 weights, grads, m and v


def model_size(preset: str, overrides: list[str]) -> dict[str, Any]:
    """Parameter counts, context length and training FLOPs per sample (one request with one
    target) of the model a preset + overrides describes."""
    from onerec.checkpoint import build_model
    from onerec.train import model_flops

    cfg = Config.from_preset(preset, overrides)
    levels, k = cfg.tokenizer.levels, cfg.tokenizer.codebook_size
    model = build_model(cfg, torch.zeros(2, levels, dtype=torch.long), [k] * levels)
    context = 1 + cfg.data.max_seq_len + cfg.data.max_pos_seq_len + cfg.model.n_long_tokens
    m = cfg.model
    return {"preset": preset, "overrides": overrides, "params": model.num_params(),
            "active_params": model.num_params(active=True),
            "encoder_params": sum(p.numel() for p in model.encoder.parameters()),
            "context_tokens": context, "levels": levels,
            "flops_per_sample": model_flops(model, 1, 1, context),
            "shape": f"d {m.d_model}, {m.n_encoder_layers}+{m.n_decoder_layers} layers, "
                     f"{m.n_experts} experts top-{m.top_k_experts} x {m.expert_hidden}"}


def gpus_needed(gpu_hours: float, max_hours: float, gpus_per_node: int,
                dp_efficiency: float) -> tuple[int, float]:
    """-> (GPUs, hours a day they train): the smallest of 1, 2, 4, ... gpus_per_node, then
    whole nodes, whose hours a day (GPU-hours / (GPUs x efficiency)) fit in max_hours."""
    if gpu_hours <= 0 or max_hours <= 0 or gpus_per_node < 1 or not 0 < dp_efficiency <= 1:
        raise ValueError("gpu_hours, max_hours, gpus_per_node and dp_efficiency must be positive "
                         "(dp_efficiency at most 1)")

    def hours(n: int) -> float:
        return gpu_hours / (n * (dp_efficiency if n > 1 else 1.0))

    n = 1
    while n < gpus_per_node and hours(n) > max_hours:
        n *= 2
    n = min(n, gpus_per_node)
    if hours(n) > max_hours:
        n = gpus_per_node * math.ceil(gpu_hours / (max_hours * dp_efficiency * gpus_per_node))
    return n, hours(n)


def plan_row(users: int, size: dict[str, Any], *, requests_per_user: float,
             targets_per_request: float, mfu: float, peak_flops: float, max_hours: float,
             gpus_per_node: int, dp_efficiency: float) -> dict[str, Any]:
    """One scale's row (see the module docstring for the formulas)."""
    samples = users * requests_per_user * targets_per_request
    flops = samples * size["flops_per_sample"]
    gpu_hours = flops / (mfu * peak_flops) / 3600
    gpus, hours = gpus_needed(gpu_hours, max_hours, gpus_per_node, dp_efficiency)
    nodes = max(1, math.ceil(gpus / gpus_per_node))
    return {"users": users, "samples_per_day": samples,
            "tokens_per_day": samples * (size["context_tokens"] + size["levels"]),
            "flops_per_day": flops, "gpu_hours_per_day": gpu_hours, "gpus": gpus,
            "hours_per_day": hours, "nodes": nodes, "gpus_per_node": gpus // nodes,
            "train_state_gb": size["params"] * TRAIN_STATE_BYTES / 1e9,
            "samples_per_s_per_gpu": mfu * peak_flops / size["flops_per_sample"]}


def _si(x: float) -> str:
    for unit, scale in (("Z", 1e21), ("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6),
                        ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests-per-user", type=float, default=100.0,
                    help="requests a user makes a day (an assumption)")
    ap.add_argument("--targets-per-request", type=float, default=1.0,
                    help="training targets per request (1.005 in the KuaiRand sample)")
    ap.add_argument("--mfu", type=float, default=0.237,
                    help="training MFU (OneRec technical report: 23.7%% on flagship GPUs)")
    ap.add_argument("--peak-tflops", type=float, default=989.0,
                    help="peak dense bf16 TFLOP/s of one GPU (H100 SXM: 989)")
    ap.add_argument("--max-hours", type=float, default=12.0,
                    help="hours a day the day's training may take")
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--dp-efficiency", type=float, default=0.9,
                    help="data-parallel scaling efficiency above one GPU (an assumption)")
    ap.add_argument("--cpu-samples-per-s", type=float, default=530.0)
    ap.add_argument("--cpu-mfu", type=float, default=0.254)
    ap.add_argument("--cpu-peak-gflops", type=float, default=197.2)
    args = ap.parse_args(argv)
    from rich.console import Console

    from bench.report import print_table

    console = Console(width=200)
    small = model_size("small", CATALOGUE_FREE)
    implied = args.cpu_mfu * args.cpu_peak_gflops * 1e9 / args.cpu_samples_per_s
    print(f"CPU anchor: small preset, {small['params'] / 1e6:.2f} M params "
          f"({small['active_params'] / 1e6:.2f} M active), {small['context_tokens']} context "
          f"tokens: model_flops {small['flops_per_sample'] / 1e6:.1f} MFLOP/sample; measured "
          f"{args.cpu_samples_per_s:.0f} samples/s at MFU {args.cpu_mfu:.1%} of "
          f"{args.cpu_peak_gflops:.1f} GFLOP/s implies {implied / 1e6:.1f} MFLOP/sample")
    sizes = {users: model_size(p, o) for users, p, o in SCALES}
    rows = [plan_row(users, sizes[users], requests_per_user=args.requests_per_user,
                     targets_per_request=args.targets_per_request, mfu=args.mfu,
                     peak_flops=args.peak_tflops * 1e12, max_hours=args.max_hours,
                     gpus_per_node=args.gpus_per_node, dp_efficiency=args.dp_efficiency)
            for users, _, _ in SCALES]
    cpu_rate = args.cpu_mfu * args.cpu_peak_gflops * 1e9
    cols = ["users", "model", "params (active)", "FLOPs/sample", "samples/day", "tokens/day",
            "FLOPs/day", "samples/s per GPU", "GPU-h/day", "GPUs", "h/day", "TrainJob",
            "train state", "CPU (2 cores) days/day"]
    table = [[f"{r['users']:,}", s["shape"],
              f"{s['params'] / 1e9:.3f} B ({s['active_params'] / 1e9:.3f} B)",
              _si(s["flops_per_sample"]), _si(r["samples_per_day"]), _si(r["tokens_per_day"]),
              _si(r["flops_per_day"]), f"{r['samples_per_s_per_gpu']:,.0f}",
              f"{r['gpu_hours_per_day']:,.1f}", str(r["gpus"]), f"{r['hours_per_day']:.1f}",
              f"{r['nodes']} x {r['gpus_per_node']}", f"{r['train_state_gb']:.1f} GB",
              f"{r['flops_per_day'] / cpu_rate / 86400:,.0f}"]
             for r, s in zip(rows, sizes.values(), strict=True)]
    print_table(console, f"Training scale plan: {args.requests_per_user:g} requests/user/day, "
                f"{args.targets_per_request:g} targets/request, MFU {args.mfu:.1%} of "
                f"{args.peak_tflops:g} TFLOP/s, <= {args.max_hours:g} h/day, "
                f"{args.gpus_per_node} GPUs/node, DP efficiency {args.dp_efficiency:.0%}",
                cols, table, left=("model",))
    return {"anchor": {"small": small, "implied_flops_per_sample": implied},
            "sizes": sizes, "rows": rows}


if __name__ == "__main__":
    main()

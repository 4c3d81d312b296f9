"""Training throughput: samples/s, requests/s, MFU and where a training step spends its time.

    python -m bench.training [--config beauty|kuairand|both] [--steps 30] [--windows 5]
                             [--threads 2] [--codebook DIR] [--json FILE]

Why: the quality runs are compute-bound on 2 CPU cores (docs/results.md), so before making a
step faster we need to know which part of it to work on. Configs:
- beauty: what `bench.quality --dataset beauty` trains (small preset, data.max_seq_len=20,
  causal encoder, 128 user windows per step, ...) on ../shared/datasets/amazon-beauty, with the
  requests and codebook of `onerec.pretrain.run_sequences`. The codebook fit embeds 12k titles
  (1-2 min), so it is cached under `--out` and reused while its tokenizer settings and items
  match; `--codebook DIR` reuses another one. Skipped with a message if ../shared is missing.
- kuairand: the `small` preset on the shipped data/kuairand-pure, requests and codebook of
  `onerec.pretrain.run_kuairand` (events before the temporal cut).

The step is `onerec.train.train`'s step (the same stream, collate, AdamW, lr schedule and
gradient clipping) with `OneRec.forward` split into encoder, decoder and loss (heads +
cross-entropy) so each can be timed. The backward is split the same way, by running it in
stages: the decoder reads a detached copy of the encoder output and the loss a detached copy of
the decoder output, so `loss.backward()` stops at the decoder output, the decoder's backward
(fed that gradient) stops at the encoder output, and the encoder's backward runs last. The
gradients are the ones a single `model(batch)["loss"].backward()` gives (tests check it).

Measurement: `--warmup` untimed steps; then `--windows` timed windows of `--steps / --windows`
steps each; samples/s (targets), requests/s and MFU are medians over the windows. MFU = model
FLOPs (`onerec.train.model_flops`, the trainer's count) / the float32 matmul peak measured in
this run (`onerec.train.measure_peak_flops`). Then `--profile-steps` steps under
`torch.profiler` give each region's share of the step (record_function regions, CPU time
including children); the same regions timed by wall clock in the unprofiled windows are shown
beside them as a check that the profiler's overhead does not skew the split. CPU only.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.quality import BEAUTY_DEFAULTS
from bench.runtime import TUNED_ENV, reexec_with_tuned_env
from onerec.config import Config
from onerec.model import Batch, OneRec, visible_prefix
from onerec.stream import Requests, RequestStream, collate

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
# the `defaults` of `bench.quality --dataset beauty` (keep in step with bench/quality.py)
BEAUTY_OVERRIDES = BEAUTY_DEFAULTS  # what bench.quality trains on Beauty
# record_function regions of one step, in the order they run
REGIONS = ("collate", "encoder.forward", "decoder.forward", "loss.forward", "loss.backward",
           "decoder.backward", "encoder.backward", "optimizer")
STEP = "step"
# reported shares: name -> regions (forward, backward)
GROUPS = {"data collation": ("collate",), "encoder": ("encoder.forward", "encoder.backward"),
          "decoder": ("decoder.forward", "decoder.backward"),
          "loss (heads + CE)": ("loss.forward", "loss.backward"), "optimizer step": ("optimizer",)}
BACKWARD_NOTE = ("backward split in stages at the detached encoder and decoder outputs "
                 "(cells: total = forward + backward)")


# -- the split step -----------------------------------------------------------------------------
class Clock:
    """Context manager factory: a `record_function` region that also adds up its wall time."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        with torch.profiler.record_function(name):
            t0 = time.perf_counter()
            try:
                yield
            finally:
                self.seconds[name] += time.perf_counter() - t0


@dataclasses.dataclass
class SplitPass:
    """The forward pass cut at the encoder and decoder outputs (see the module docstring)."""

    loss: torch.Tensor
    ntp_loss: torch.Tensor
    balance_loss: torch.Tensor
    memory: torch.Tensor  # encoder output (graph to the encoder)
    memory_in: torch.Tensor  # its detached copy, the decoder's input
    hidden: torch.Tensor  # decoder output (graph to the decoder)
    hidden_in: torch.Tensor  # its detached copy, the heads' input
    balance: torch.Tensor  # summed MoE balance loss (graph to the routers)
    balance_in: torch.Tensor  # its detached copy


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().requires_grad_(t.requires_grad)


def split_forward(model: OneRec, batch: Batch,
                  clock: Callable[[str], contextlib.AbstractContextManager] | None = None,
                  ) -> SplitPass:
    """`OneRec.forward` in three timed parts; the loss equals `model(batch)["loss"]`."""
    clock = clock or (lambda _name: contextlib.nullcontext())
    assert batch.target_codes is not None  # nosec B101 # type narrowing
    with clock("encoder.forward"):
        memory, mask = model.encode(batch)
    with clock("decoder.forward"):
        memory_in = _leaf(memory)
        req = batch.target_req if batch.target_req is not None else torch.arange(
            memory.shape[0], device=memory.device)
        mask = mask[req]
        if model.cfg.causal_encoder and batch.target_len is not None:
            mask = mask & visible_prefix(mask.shape[1], batch.short.shape[1], batch.target_len)
        codes = batch.target_codes
        hidden, balance = model.decode(codes[:, :-1], memory_in, mask, memory_index=req)
    with clock("loss.forward"):
        hidden_in, balance_in = _leaf(hidden), _leaf(balance)
        losses = [F.cross_entropy(model.heads[lv](hidden_in[:, lv]), codes[:, lv])
                  for lv in range(model.levels)]
        ntp = torch.stack(losses).mean()
        bal = balance_in / max(1, len(model.decoder))
        loss = ntp + model.cfg.balance_loss_weight * bal
        if model.item_query is not None:  # the item head's full softmax counts as loss
            item = model.item_loss(memory_in, batch, req)
            loss = loss + model.cfg.item_loss_weight * item
    return SplitPass(loss, ntp, bal, memory, memory_in, hidden, hidden_in, balance, balance_in)


def split_backward(p: SplitPass,
                   clock: Callable[[str], contextlib.AbstractContextManager] | None = None,
                   ) -> None:
    """Backward of `p.loss` in stages: heads + loss, then the decoder, then the encoder."""
    clock = clock or (lambda _name: contextlib.nullcontext())
    with clock("loss.backward"):
        p.loss.backward()
    with clock("decoder.backward"):
        outs = [(t, t_in.grad) for t, t_in in ((p.hidden, p.hidden_in), (p.balance, p.balance_in))
                if t.requires_grad and t_in.grad is not None]
        if outs:
            torch.autograd.backward([t for t, _ in outs], [g for _, g in outs])
    with clock("encoder.backward"):
        if p.memory.requires_grad and p.memory_in.grad is not None:
            p.memory.backward(p.memory_in.grad)


# -- workloads ----------------------------------------------------------------------------------
@dataclasses.dataclass
class Workload:
    name: str
    cfg: Config
    reqs: Requests
    item_codes: torch.Tensor
    vocab_sizes: list[int]
    shuffle_window: int  # as the recipe trains: full shuffle for sequences, 4096 for events
    notes: dict[str, Any]


def _codebook(cfg: Config, cat: Any, cache: Path, explicit: str | None,
              log: Callable[[str], None]) -> Any:
    """Load `explicit`, else the cache if it was fitted with these settings on these items,
    else fit (as `onerec.pretrain.build_codebook`) and save to the cache."""
    from onerec.pretrain import build_codebook
    from onerec.tokenizer.build import tokenizer_settings
    from onerec.tokenizer.codebook import Codebook, CodebookError

    ids = np.sort(np.asarray(cat.item_ids, dtype=np.int64))
    for path in [p for p in (explicit, cache) if p is not None]:
        try:
            cb = Codebook.load(path)
        except CodebookError as e:
            if path == explicit:
                raise
            log(f"codebook cache {path} unusable ({e}); refitting")
            continue
        same_items = np.array_equal(np.sort(cb.item_ids), ids)
        same_settings = cb.settings == tokenizer_settings(cfg.tokenizer)
        if path == explicit or (same_items and same_settings):
            if not (same_items and same_settings):
                log(f"warning: codebook {path} was fitted on other items or settings")
            log(f"codebook {path} reused (fingerprint {cb.fingerprint[:12]})")
            return cb
        log(f"codebook cache {path} is for other items or settings; refitting")
    t0 = time.perf_counter()
    cb = build_codebook(cfg, cat, Path(cache))
    log(f"codebook fitted in {time.perf_counter() - t0:.0f} s, saved to {cache}")
    return cb


def beauty_workload(cfg: Config, data_dir: Path, out: Path, codebook: str | None,
                    log: Callable[[str], None]) -> Workload:
    """The requests and codebook of `onerec.pretrain.run_sequences`."""
    from onerec.data.sequences import load_beauty
    from onerec.items import ItemSpace
    from onerec.stream import requests_from_sequences
    from onerec.tokenizer.embeddings import catalogue_from_sequences

    data = load_beauty(data_dir)
    split = data.split(max_history=cfg.data.max_seq_len)
    cat = catalogue_from_sequences(data)
    cat = dataclasses.replace(cat, sequences=[np.asarray(s, dtype=np.int64)
                                              for _, s in sorted(split.train.items())])
    space = ItemSpace.from_codebook(_codebook(cfg, cat, out / "codebook", codebook, log))
    index = space.index
    reqs = requests_from_sequences({u: [index[i] for i in s] for u, s in split.train.items()},
                                   cfg.data, causal=cfg.model.causal_encoder)
    return Workload("beauty", cfg, reqs, space.codes, space.vocab_sizes, len(reqs),
                    {"data": str(data_dir), "users": len(data.sequences), "items": len(space)})


def kuairand_workload(cfg: Config, data_dir: Path, out: Path,
                      log: Callable[[str], None]) -> Workload:
    """The requests and codebook of `onerec.pretrain.run_kuairand` (events before the cut)."""
    from onerec.data import kuairand
    from onerec.evaluate import temporal_split
    from onerec.items import ItemSpace
    from onerec.stream import requests_from_events
    from onerec.tokenizer.embeddings import catalogue_from_kuairand

    ds = kuairand.load(data_dir)
    history = kuairand.read_history(data_dir)
    train_ev, _ = temporal_split(ds.events, cfg.data.test_days)
    cat = catalogue_from_kuairand(dataclasses.replace(ds, events=train_ev))
    space = ItemSpace.from_codebook(_codebook(cfg, cat, out / "codebook", None, log))
    reqs = requests_from_events(train_ev, space.index, cfg.data, history=history)
    return Workload("kuairand", cfg, reqs, space.codes, space.vocab_sizes, 4096,
                    {"data": str(data_dir), "items": len(space)})


# -- measurement --------------------------------------------------------------------------------
class Run:
    """Model, optimizer and stream as `onerec.train.train` builds them, stepping in regions."""

    def __init__(self, w: Workload) -> None:
        from onerec.checkpoint import build_model

        self.w = w
        self.model = build_model(w.cfg, w.item_codes, w.vocab_sizes)
        self.model.train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=w.cfg.train.lr,
                                     weight_decay=w.cfg.train.weight_decay)
        self.stream = RequestStream(w.reqs, w.cfg.train.batch_size, seed=w.cfg.train.seed,
                                    shuffle_window=w.shuffle_window)
        self.context_len = (1 + w.reqs.short.shape[1] + w.reqs.pos.shape[1]
                            + w.cfg.model.n_long_tokens)
        self.steps = 0

    def step(self, clock: Clock) -> dict[str, float]:
        """One training step -> requests, targets, model FLOPs and loss of the step."""
        from onerec.train import lr_at, model_flops

        with clock(STEP):
            with clock("collate"):
                idx = self.stream.next_indices()
                batch = collate(self.w.reqs, idx, self.w.item_codes)
            p = split_forward(self.model, batch, clock)
            split_backward(p, clock)
            with clock("optimizer"):
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.w.cfg.train.grad_clip)
                for g in self.opt.param_groups:
                    g["lr"] = lr_at(self.steps, self.w.cfg)
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)
        self.steps += 1
        n_t = int(batch.target_codes.shape[0])
        return {"requests": len(idx), "targets": n_t, "loss": float(p.loss.detach()),
                "flops": model_flops(self.model, len(idx), n_t, self.context_len)}


def shares(seconds: dict[str, float]) -> dict[str, float]:
    """Region -> share of the step; "other" is the step time outside every region."""
    total = seconds[STEP]
    out = {r: seconds.get(r, 0.0) / total for r in REGIONS}
    out["other"] = 1.0 - sum(out.values())
    return out


def profiler_seconds(prof: torch.profiler.profile) -> dict[str, float]:
    """CPU time (s, children included) of each record_function region in a profile."""
    want = {*REGIONS, STEP}
    return {e.key: e.cpu_time_total / 1e6 for e in prof.key_averages() if e.key in want}


def top_ops(prof: torch.profiler.profile, n: int = 8) -> list[tuple[str, float]]:
    """The n aten ops with the most self CPU time -> (name, share of the profiled step time)."""
    evs = prof.key_averages()
    step = next(e.cpu_time_total for e in evs if e.key == STEP)
    ops = sorted((e for e in evs if e.key not in {*REGIONS, STEP}),
                 key=lambda e: e.self_cpu_time_total, reverse=True)
    return [(e.key, e.self_cpu_time_total / step) for e in ops[:n]]


def measure(w: Workload, *, steps: int, windows: int, warmup: int, profile_steps: int,
            peak: float, log: Callable[[str], None] = print,
            deterministic: bool | None = None) -> dict[str, Any]:
    """Time `w`'s steps as `onerec.train.train` runs them: under PyTorch's deterministic mode
    when `deterministic` (default: the workload's `train.deterministic`)."""
    from onerec.determinism import deterministic_kernels

    det = w.cfg.train.deterministic if deterministic is None else deterministic
    with deterministic_kernels(det):
        res = _measure(w, steps=steps, windows=windows, warmup=warmup,
                       profile_steps=profile_steps, peak=peak, log=log)
    return {**res, "deterministic": det}


def _measure(w: Workload, *, steps: int, windows: int, warmup: int, profile_steps: int,
             peak: float, log: Callable[[str], None]) -> dict[str, Any]:
    run = Run(w)
    for _ in range(warmup):
        run.step(Clock())
    per_window = max(1, steps // windows)
    wins, wall = [], Clock()
    for k in range(windows):
        recs, t0 = [], time.perf_counter()
        for _ in range(per_window):
            recs.append(run.step(wall))
        dt = time.perf_counter() - t0
        win = {"seconds": dt, "steps": per_window,
               "samples_per_s": sum(r["targets"] for r in recs) / dt,
               "requests_per_s": sum(r["requests"] for r in recs) / dt,
               "mfu": sum(r["flops"] for r in recs) / dt / peak,
               "requests": sum(r["requests"] for r in recs),
               "targets": sum(r["targets"] for r in recs), "loss": recs[-1]["loss"]}
        wins.append(win)
        log(f"{w.name} window {k + 1}/{windows}: {win['samples_per_s']:.0f} samples/s, "
            f"{win['requests_per_s']:.0f} requests/s, MFU {win['mfu']:.2%}, "
            f"{1000 * dt / per_window:.0f} ms/step, loss {win['loss']:.3f}")
    prof_clock = Clock()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(profile_steps):
            run.step(prof_clock)
    prof_s = profiler_seconds(prof)
    n_steps = per_window * windows
    med = {k: statistics.median(x[k] for x in wins) for k in
           ("samples_per_s", "requests_per_s", "mfu")}
    return {
        "config": w.name, **med, "windows": wins, "steps_timed": n_steps, "warmup": warmup,
        "step_ms": 1000 * statistics.median(x["seconds"] / x["steps"] for x in wins),
        "requests_per_step": sum(x["requests"] for x in wins) / n_steps,
        "targets_per_step": sum(x["targets"] for x in wins) / n_steps,
        "profile_steps": profile_steps,
        "profiled_step_ms": 1000 * prof_clock.seconds[STEP] / profile_steps,
        "shares_profiler": shares(prof_s), "shares_wall": shares(wall.seconds),
        "top_ops": top_ops(prof),
        "params": run.model.num_params(), "active_params": run.model.num_params(active=True),
        "n_requests": len(w.reqs), "n_targets": w.reqs.n_targets,
        "config_fingerprint": w.cfg.fingerprint(), **w.notes,
    }


# -- report -------------------------------------------------------------------------------------
def group_cell(sh: dict[str, float], regions: tuple[str, ...]) -> str:
    total = sum(sh[r] for r in regions)
    if len(regions) == 1:
        return f"{total:.1%}"
    return f"{total:.1%} ({' + '.join(f'{100 * sh[r]:.1f}' for r in regions)})"


def dominant(sh: dict[str, float]) -> str:
    return max(GROUPS, key=lambda g: sum(sh[r] for r in GROUPS[g]))


def report(results: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    from rich.console import Console

    from bench.report import print_table

    console = Console(width=200)
    cols = ["config", "requests/step", "targets/step", "step ms", "samples/s", "requests/s",
            "MFU", "params (active)"]
    rows = [[r["config"], f"{r['requests_per_step']:.0f}", f"{r['targets_per_step']:.0f}",
             f"{r['step_ms']:.0f}", f"{r['samples_per_s']:.0f}", f"{r['requests_per_s']:.0f}",
             f"{r['mfu']:.2%}", f"{r['params'] / 1e6:.2f} M ({r['active_params'] / 1e6:.2f} M)"]
            for r in results]
    print_table(console, f"bench.training ({meta['date']}): medians of {meta['windows']} "
                f"windows, {meta['threads']} threads, torch {meta['torch']}, peak "
                f"{meta['peak_gflops']:.1f} GFLOP/s fp32 matmul; load average "
                f"{meta['load_before']} -> {meta['load_after']}", cols, rows, left=("config",))
    cols = ["share of step"]
    for r in results:
        cols += [f"{r['config']} profiler", f"{r['config']} wall"]
    rows = []
    for g, regions in GROUPS.items():
        row = [g]
        for r in results:
            row += [group_cell(r["shares_profiler"], regions), group_cell(r["shares_wall"], regions)]
        rows.append(row)
    rows.append(["other (outside regions)", *[f"{r[k]['other']:.1%}" for r in results
                                              for k in ("shares_profiler", "shares_wall")]])
    print_table(console, f"Step time by region; {BACKWARD_NOTE}; profiler: "
                f"{results[0]['profile_steps']} steps under torch.profiler (step "
                + ", ".join(f"{r['config']} {r['profiled_step_ms']:.0f} ms" for r in results)
                + "), wall: perf_counter over the timed windows", cols, rows,
                left=("share of step",))
    for r in results:
        print(f"{r['config']}: dominant share = {dominant(r['shares_profiler'])}; top ops by "
              "self CPU time: " + ", ".join(f"{k} {v:.1%}" for k, v in r["top_ops"]))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", choices=("beauty", "kuairand", "both"), default="both")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per config")
    ap.add_argument("--windows", type=int, default=5, help="timed windows (medians over them)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--profile-steps", type=int, default=4, help="steps under torch.profiler")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--beauty-dir", default=None,
                    help="amazon-beauty folder (default ../shared/datasets/amazon-beauty)")
    ap.add_argument("--kuairand-dir", default=None, help="default: data/kuairand-pure")
    ap.add_argument("--codebook", default=None, help="Beauty codebook folder to reuse")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="config override for both configs, e.g. train.batch_size=64")
    ap.add_argument("--deterministic-ablation", action="store_true",
                    help="also time each config with train.deterministic=false (its cost)")
    ap.add_argument("--out", default="runs/bench-training", help="run folder (codebook cache)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.windows < 1 or args.profile_steps < 1 or args.warmup < 0:
        ap.error("--steps, --windows and --profile-steps must be >= 1, --warmup >= 0")
    reexec_with_tuned_env("bench.training", argv)
    from onerec.train import measure_peak_flops

    torch.set_num_threads(args.threads)
    load_before = tuple(round(x, 2) for x in os.getloadavg())
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(msg, flush=True)

    peak = measure_peak_flops(torch.device("cpu"))
    log(f"load average {load_before}; {torch.get_num_threads()} threads; torch "
        f"{torch.__version__}; fp32 matmul peak {peak / 1e9:.1f} GFLOP/s")
    names = ["beauty", "kuairand"] if args.config == "both" else [args.config]
    results, skipped = [], {}
    for name in names:
        out = Path(args.out) / name
        t0 = time.perf_counter()
        if name == "beauty":
            data_dir = Path(args.beauty_dir) if args.beauty_dir else SHARED / "amazon-beauty"
            if not data_dir.is_dir():
                skipped[name] = f"{data_dir} not found"
                log(f"beauty skipped: {data_dir} not found (needs ../shared/datasets)")
                continue
            cfg = Config.from_preset(args.preset, BEAUTY_OVERRIDES + args.overrides)
            w = beauty_workload(cfg, data_dir, out, args.codebook, log)
        else:
            cfg = Config.from_preset(args.preset, args.overrides)
            w = kuairand_workload(cfg, Path(args.kuairand_dir or ROOT / "data" / "kuairand-pure"),
                                  out, log)
        prep_s = time.perf_counter() - t0
        log(f"{name}: {len(w.reqs):,} requests, {w.reqs.n_targets:,} targets, prepared in "
            f"{prep_s:.0f} s")
        modes = [True, False] if args.deterministic_ablation else [cfg.train.deterministic]
        for det in modes:
            t1 = time.perf_counter()
            res = measure(w, steps=args.steps, windows=args.windows, warmup=args.warmup,
                          profile_steps=args.profile_steps, peak=peak, log=log,
                          deterministic=det)
            if len(modes) > 1:
                res["config"] = f"{name} (deterministic {'on' if det else 'off'})"
            res["prepare_s"] = prep_s
            res["measure_s"] = time.perf_counter() - t1
            results.append(res)
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "load_before": load_before,
            "load_after": tuple(round(x, 2) for x in os.getloadavg()),
            "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "peak_gflops": peak / 1e9, "windows": args.windows, "argv": sys.argv,
            "tuned_env": all(os.environ.get(k) == v for k, v in TUNED_ENV.items()),
            "skipped": skipped, "backward": BACKWARD_NOTE,
            "total_s": time.perf_counter() - t_start}
    if results:
        report(results, meta)
    print(f"total {meta['total_s'] / 60:.1f} min; load average {meta['load_before']} -> "
          f"{meta['load_after']}")
    summary = {"meta": meta, "results": results}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str))
    return summary


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

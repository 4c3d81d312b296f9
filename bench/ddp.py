"""Data-parallel efficiency: 2 gloo DDP ranks against one process on the same global batch.

    python -m bench.ddp [--steps 40] [--log-every 5] [--repeats 3] [--preset small]
                        [--set KEY=VALUE ...] [--out runs/bench-ddp] [--json FILE]

Trains the `bench.training` kuairand workload (the `small` preset on the shipped
data/kuairand-pure, requests and codebook of `onerec.pretrain.run_kuairand`) with
`onerec.train.train` itself, the trainer as shipped, in three ways:
- `1 proc x 2 threads`: one process, 2 intra-op threads, the global batch (`train.batch_size`);
- `1 proc x 1 thread`: one process, 1 thread, the global batch: the per-rank baseline;
- `2 ranks x 1 thread`: 2 gloo ranks under torchrun (`torch.distributed.run --standalone`),
  1 thread each; every rank keeps its strided half of the same global batch (the trainer's
  DDP) and DDP all-reduces the gradients.

Timing: the trainer's `log` callback (rank 0) stamps the wall clock every `--log-every` steps;
the first window (first-step allocations) is dropped and samples/s is the global batch's
targets (replayed from the same `RequestStream`, so exact for every layout) over the other
windows' wall time. Each layout runs `--repeats` times, interleaved (a, b, c, a, b, c, ...) so a
drifting machine load hits all three alike, each in a fresh process; the table shows medians.

    scaling efficiency = samples/s(2 ranks x 1 thread) / (2 x samples/s(1 proc x 1 thread))
    speedup vs 2 threads = samples/s(2 ranks x 1 thread) / samples/s(1 proc x 2 threads)

On a shared machine the ranks may not get a core each, so the same windows are also timed in
each process's CPU time (`time.process_time`, all its threads; rank 0 for the 2-rank run):

    CPU-time efficiency = CPU s/step(1 proc x 1 thread) / (2 x CPU s/step(rank 0))

the efficiency the 2 ranks would reach with a free core each (it counts what data parallelism
adds: two half-size steps, the gradient all-reduce, gloo's threads; not waiting for a core).

Parity: the final weights of the 2-rank run equal the one-process run's on the same global
batch within float32 summation-order noise. The bench prints the largest absolute weight gap
between the 2-rank run and the 1 proc x 2 threads run, and, as the noise floor, the gap between
the two one-process runs (1 vs 2 threads: the same maths summed in another order). The MoE
balance loss is off by default (`model.balance_loss_weight=0`): it is a statistic of each
rank's own tokens, so with it the 2-rank step is not the global batch's step (see
tests/test_distributed.py, which checks the parity at a tight tolerance on the tiny preset);
its weight does not change the compute of a step. CPU only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess  # nosec B404 # runs ourselves (python -m bench.ddp) under torchrun
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.runtime import TUNED_ENV, reexec_with_tuned_env

ROOT = Path(__file__).resolve().parents[1]
# the layouts, in run order: (name, ranks, threads per rank)
LAYOUTS = (("1 proc x 2 threads", 1, 2), ("1 proc x 1 thread", 1, 1), ("2 ranks x 1 thread", 2, 1))
PARITY_OVERRIDES = ["model.balance_loss_weight=0"]  # see the module docstring


# -- pure helpers (tests/test_bench_ddp.py) -----------------------------------------------------
def step_targets(target_offsets: np.ndarray, batches: Sequence[np.ndarray]) -> list[int]:
    """Targets in each step's global batch of request indices."""
    off = np.asarray(target_offsets)
    return [int((off[idx + 1] - off[idx]).sum()) for idx in batches]


def window_rate(stamps: Sequence[tuple[int, float]], targets: Sequence[int],
                skip: int = 1) -> dict[str, float]:
    """Throughput from the wall-clock stamps (step, seconds) taken after those steps.

    The first `skip` windows are dropped (warm-up); samples/s = the targets of the steps in the
    remaining windows / their wall time, step_ms = that wall time / those steps."""
    if len(stamps) < skip + 2:
        raise ValueError(f"need at least {skip + 2} stamps to time a window after {skip} "
                         f"skipped, got {len(stamps)}")
    (s0, t0), (s1, t1) = stamps[skip], stamps[-1]
    if s1 <= s0 or t1 <= t0:
        raise ValueError(f"stamps must increase: {stamps[skip]} -> {stamps[-1]}")
    n = sum(targets[s0:s1])  # steps s0+1 .. s1 (stamp k is taken after step k)
    dt = t1 - t0
    return {"samples_per_s": n / dt, "step_ms": 1000 * dt / (s1 - s0), "steps": s1 - s0,
            "targets": n, "seconds": dt}


def summarise(runs: dict[str, list[float]], ddp: str, single: str, threaded: str,
              ranks: int = 2) -> dict[str, float]:
    """Medians of each layout's samples/s, the scaling efficiency of `ddp` against `ranks` x
    the one-thread `single` process, and its speedup against the multi-threaded process."""
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {"median": med, "efficiency": med[ddp] / (ranks * med[single]),
            "speedup_vs_threads": med[ddp] / med[threaded],
            "speedup_vs_one_thread": med[ddp] / med[single]}


def cpu_efficiency(single_cpu_s: float, rank_cpu_s: float, ranks: int = 2) -> float:
    """CPU time a step takes one single-thread process / the CPU time `ranks` ranks spend on
    it together: the scaling efficiency the ranks would reach with a free core each, whatever
    else shares the machine (it counts the ranks' extra work: smaller matmuls, the gradient
    all-reduce, gloo's polling; not their waiting for a core)."""
    return single_cpu_s / (ranks * rank_cpu_s)


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[float, str]:
    """Largest absolute gap between two state dicts with the same keys -> (gap, tensor name)."""
    if a.keys() != b.keys():
        raise ValueError(f"state dicts differ in keys: {sorted(set(a) ^ set(b))[:5]}")
    gap, name = 0.0, ""
    for k, v in a.items():
        if not v.is_floating_point():
            if not torch.equal(v, b[k]):
                return float("inf"), k
            continue
        d = float((v.double() - b[k].double()).abs().max()) if v.numel() else 0.0
        if d > gap:
            gap, name = d, k
    return gap, name


# -- one training run (a process, or a rank under torchrun) -------------------------------------
def train_timed(w: Any, steps: int, out_dir: Path) -> dict[str, Any]:
    """`onerec.train.train` on workload `w` for `steps` steps (DDP when the process group is
    up), stamping the wall clock and this process's CPU time (all its threads) at each logged
    step -> both stamps, per-step global targets, the model's weights and the last loss."""
    from onerec.stream import RequestStream
    from onerec.train import train

    stamps: list[tuple[int, float]] = [(0, time.perf_counter())]
    cpu_stamps: list[tuple[int, float]] = [(0, time.process_time())]

    def log(rec: dict[str, float]) -> None:
        if "loss" in rec:  # a training record, not an evaluation's
            stamps.append((int(rec["step"]), time.perf_counter()))
            cpu_stamps.append((int(rec["step"]), time.process_time()))

    model, res = train(w.cfg, w.reqs, w.item_codes, w.vocab_sizes, out_dir, resume=False,
                       max_steps=steps, log=log, shuffle_window=w.shuffle_window)
    stream = RequestStream(w.reqs, w.cfg.train.batch_size, seed=w.cfg.train.seed,
                           shuffle_window=w.shuffle_window)
    targets = step_targets(w.reqs.target_offsets, [stream.next_indices() for _ in range(steps)])
    return {"stamps": stamps, "cpu_stamps": cpu_stamps, "targets": targets,
            "final_loss": res.final_loss,
            "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def worker(args: argparse.Namespace) -> None:
    """One layout's run: rank 0 writes result.json and weights.pt under --worker."""
    from bench.training import kuairand_workload
    from onerec.config import Config
    from onerec.distributed import init_from_env, shutdown

    torch.set_num_threads(args.threads)
    rank, world = init_from_env()
    out = Path(args.worker)
    cfg = Config.from_preset(args.preset, PARITY_OVERRIDES + args.overrides
                             + [f"train.log_every={args.log_every}",
                                f"train.checkpoint_every={10 * args.steps}"])
    t0 = time.perf_counter()
    w = kuairand_workload(cfg, Path(args.kuairand_dir or ROOT / "data" / "kuairand-pure"),
                          Path(args.out) / "kuairand", lambda _m: None)
    prep_s = time.perf_counter() - t0
    r = train_timed(w, args.steps, out / "train")
    if rank == 0:
        state = r.pop("state")
        torch.save(state, out / "weights.pt")
        rate = window_rate(r["stamps"], r["targets"])
        cpu = window_rate(r["cpu_stamps"], r["targets"])  # the same windows in CPU seconds
        (out / "result.json").write_text(json.dumps({
            **rate, "cpu_ms_per_step": cpu["step_ms"], "world": world, "threads": torch.get_num_threads(), "prepare_s": prep_s,
            "final_loss": r["final_loss"], "stamps": r["stamps"], "cpu_stamps": r["cpu_stamps"],
            "targets_per_step": statistics.mean(r["targets"]),
            "requests_per_step": cfg.train.batch_size,
            "params": sum(v.numel() for v in state.values() if v.is_floating_point()),
            "config_fingerprint": cfg.fingerprint()}, indent=2))
    shutdown()


def launch(args: argparse.Namespace, ranks: int, threads: int, out: Path) -> dict[str, Any]:
    """Run one layout in fresh process(es) -> its result.json."""
    out.mkdir(parents=True, exist_ok=True)
    fwd = ["--worker", str(out), "--threads", str(threads), "--steps", str(args.steps),
           "--log-every", str(args.log_every), "--preset", args.preset, "--out", args.out,
           *(["--kuairand-dir", args.kuairand_dir] if args.kuairand_dir else []),
           *[x for o in args.overrides for x in ("--set", o)]]
    if ranks == 1:
        cmd = [sys.executable, "-m", "bench.ddp", *fwd]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={ranks}", "-m", "bench.ddp", *fwd]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,  # nosec B603
                         timeout=args.timeout)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    result = json.loads((out / "result.json").read_text())
    result["process_s"] = time.perf_counter() - t0
    return result


# -- the driver ---------------------------------------------------------------------------------
def prepare(args: argparse.Namespace) -> None:
    """Fit (or reuse) the codebook once, so the ranks only read it."""
    from bench.training import kuairand_workload
    from onerec.config import Config

    cfg = Config.from_preset(args.preset, PARITY_OVERRIDES + args.overrides)
    w = kuairand_workload(cfg, Path(args.kuairand_dir or ROOT / "data" / "kuairand-pure"),
                          Path(args.out) / "kuairand", lambda m: print(m, flush=True))
    print(f"kuairand: {len(w.reqs):,} requests, {w.reqs.n_targets:,} targets, "
          f"{cfg.train.batch_size} requests a step", flush=True)


def report(summary: dict[str, Any], results: dict[str, list[dict[str, Any]]],
           parity: dict[str, Any], meta: dict[str, Any]) -> None:
    from rich.console import Console

    from bench.report import print_table

    console = Console(width=200)
    cols = ["layout", "processes x threads", "requests/step (per rank)", "step ms",
            "CPU ms/step (per process)", "samples/s (median)", "samples/s (runs)",
            "vs 1 proc x 1 thread"]
    base = summary["median"][LAYOUTS[1][0]]
    rows = []
    for name, ranks, threads in LAYOUTS:
        rs = results[name]
        med = summary["median"][name]
        rows.append([name, f"{ranks} x {threads}",
                     f"{meta['batch_size']} ({meta['batch_size'] // ranks})",
                     f"{statistics.median(r['step_ms'] for r in rs):.0f}",
                     f"{statistics.median(r['cpu_ms_per_step'] for r in rs):.0f}", f"{med:.0f}",
                     ", ".join(f"{r['samples_per_s']:.0f}" for r in rs), f"{med / base:.2f}x"])
    print_table(console, f"bench.ddp ({meta['date']}): kuairand, {meta['preset']} preset, "
                f"{meta['steps']} steps ({meta['timed_steps']} timed), medians of "
                f"{meta['repeats']} runs; torch {meta['torch']}; load average "
                f"{meta['load_before']} -> {meta['load_after']}", cols, rows,
                left=("layout", "processes x threads"))
    print(f"scaling efficiency (2 ranks / (2 x 1 proc x 1 thread)): {summary['efficiency']:.1%}; "
          f"speedup of 2 ranks vs 1 proc x 2 threads: {summary['speedup_vs_threads']:.2f}x; "
          f"vs 1 proc x 1 thread: {summary['speedup_vs_one_thread']:.2f}x")
    print(f"CPU-time efficiency (1 proc x 1 thread's CPU s/step / (2 ranks x rank 0's CPU s/step),"
          f" what the 2 ranks would reach with a free core each): {meta['cpu_efficiency']:.1%}")
    print(f"parity after {meta['steps']} steps: max |w(2 ranks) - w(1 proc x 2 threads)| = "
          f"{parity['ddp_gap']:.2e} ({parity['ddp_tensor']}); noise floor max |w(1 thread) - "
          f"w(2 threads)| = {parity['thread_gap']:.2e} ({parity['thread_tensor']}); last step's loss "
          "(2 ranks: rank 0's half of the batch) "
          + ", ".join(f"{k} {v:.4f}" for k, v in parity["final_loss"].items())
          + f"; within atol {parity['atol']:g}: {parity['ok']}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40, help="training steps per run")
    ap.add_argument("--log-every", type=int, default=5,
                    help="steps per timed window (the first window is dropped)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each layout (medians)")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="config override, e.g. train.batch_size=256")
    ap.add_argument("--kuairand-dir", default=None, help="default: data/kuairand-pure")
    ap.add_argument("--out", default="runs/bench-ddp", help="run folder (codebook cache)")
    ap.add_argument("--atol", type=float, default=1e-4,
                    help="parity tolerance on the largest weight gap")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per run")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # one run's folder
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)  # worker's
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return {}
    if args.steps < 3 * args.log_every or args.repeats < 1:
        ap.error("--steps must be >= 3 x --log-every (a dropped and two timed windows), "
                 "--repeats >= 1")
    reexec_with_tuned_env("bench.ddp", argv)
    load_before = tuple(round(x, 2) for x in os.getloadavg())
    t_start = time.perf_counter()
    print(f"load average {load_before}; torch {torch.__version__}", flush=True)
    prepare(args)
    from onerec.config import Config

    cfg = Config.from_preset(args.preset, PARITY_OVERRIDES + args.overrides)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in LAYOUTS}
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp:
        weights: dict[str, dict[str, torch.Tensor]] = {}
        for rep in range(args.repeats):
            for k, (name, ranks, threads) in enumerate(LAYOUTS):
                out = Path(tmp) / f"r{rep}-l{k}"
                r = launch(args, ranks, threads, out)
                results[name].append(r)
                if rep == 0:
                    weights[name] = torch.load(out / "weights.pt", weights_only=True)
                print(f"run {rep + 1}/{args.repeats} {name}: {r['samples_per_s']:.0f} samples/s, "
                      f"{r['step_ms']:.0f} ms/step, loss {r['final_loss']:.4f} "
                      f"({r['process_s']:.0f} s with {r['prepare_s']:.0f} s preparing)",
                      flush=True)
    summary = summarise({k: [r["samples_per_s"] for r in v] for k, v in results.items()},
                        ddp=LAYOUTS[2][0], single=LAYOUTS[1][0], threaded=LAYOUTS[0][0])
    ddp_gap, ddp_tensor = max_abs_diff(weights[LAYOUTS[2][0]], weights[LAYOUTS[0][0]])
    thread_gap, thread_tensor = max_abs_diff(weights[LAYOUTS[1][0]], weights[LAYOUTS[0][0]])
    parity = {"ddp_gap": ddp_gap, "ddp_tensor": ddp_tensor, "thread_gap": thread_gap,
              "thread_tensor": thread_tensor, "atol": args.atol, "ok": ddp_gap <= args.atol,
              "final_loss": {k: v[0]["final_loss"] for k, v in results.items()}}
    cpu_ms = {k: statistics.median(r["cpu_ms_per_step"] for r in v) for k, v in results.items()}
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu_ms_per_step": cpu_ms,
            "cpu_efficiency": cpu_efficiency(cpu_ms[LAYOUTS[1][0]], cpu_ms[LAYOUTS[2][0]]),
            "load_before": load_before, "load_after": tuple(round(x, 2) for x in os.getloadavg()),
            "torch": torch.__version__, "python": platform.python_version(),
            "cpus": os.cpu_count(), "preset": args.preset, "steps": args.steps,
            "timed_steps": args.steps - args.log_every, "repeats": args.repeats,
            "batch_size": cfg.train.batch_size, "argv": sys.argv,
            "tuned_env": all(os.environ.get(k) == v for k, v in TUNED_ENV.items()),
            "overrides": PARITY_OVERRIDES + args.overrides,
            "total_s": time.perf_counter() - t_start}
    report(summary, results, parity, meta)
    print(f"total {meta['total_s'] / 60:.1f} min; load average {meta['load_before']} -> "
          f"{meta['load_after']}")
    out = {"meta": meta, "summary": summary, "parity": parity, "results": results}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    return out


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

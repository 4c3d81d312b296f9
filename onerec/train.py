"""Streaming pretraining: next-token prediction on the targets' semantic IDs.

A flat, readable loop (torchtune-style recipe) over `RequestStream` batches:
- AdamW, linear warmup then cosine decay, gradient-norm clipping, bf16 autocast on CUDA;
- MoE load-balancing loss added with `model.balance_loss_weight`, per-expert load logged;
- atomic checkpoints (`onerec.checkpoint`) holding weights, optimizer, scheduler, the
  stream position, RNG states, the Config and the codebook fingerprint, so a run killed with
  `kill -9` resumes with the same weights and the same next batch;
- DDP under torchrun (gloo on CPU, nccl on CUDA): every rank reads the same global batch of
  requests and keeps its strided share, so the global batch does not depend on world size,
  and weighs its loss by its share of the batch's targets, so a step equals one process's;
- logs loss, samples/s, tokens/s and MFU. MFU = model FLOPs / peak, where on CPU the peak is a
  float32 matmul throughput measured in the same run (no datasheet number to trust there).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from onerec.checkpoint import CKPT_NAME, build_model, load_checkpoint, save_checkpoint
from onerec.config import Config
from onerec.determinism import deterministic_training
from onerec.model import OneRec
from onerec.stream import Requests, RequestStream, collate
from onerec.transitions import count_transitions


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: Path | None = None
    wall_s: float = 0.0
    watermark_ms: int = 0
    budget_bound: bool = False  # the time budget drove the decay (`budget_binds`): a slow run


_PEAK: dict[str, float] = {}


def measure_peak_flops(device: torch.device, n: int = 1024, repeats: int = 10) -> float:
    """Matmul FLOP/s on this device, measured once per process (the MFU denominator on CPU)."""
    key = f"{device}:{torch.get_num_threads()}"
    if key not in _PEAK:
        _PEAK[key] = _matmul_flops(device, n, repeats)
    return _PEAK[key]


def _matmul_flops(device: torch.device, n: int, repeats: int) -> float:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    g = torch.Generator(device=device).manual_seed(0)  # leaves the global RNG (dropout) alone
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    (a @ b).sum().item()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        (a @ b).sum().item()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def model_flops(model: OneRec, n_requests: int, n_targets: int, context_len: int) -> float:
    """Training FLOPs (forward + backward = 6 x params x tokens) of one step, active experts."""
    enc = sum(p.numel() for p in model.encoder.parameters())
    dec = model.num_params(active=True) - enc - sum(
        p.numel() for m in (model.item_emb, model.code_emb, model.user_emb) if m is not None
        for p in m.parameters())
    head = 0.0
    if model.item_query is not None:  # the item head: a full softmax over the catalogue
        head = float(n_targets) * (model.item_codes.shape[0] + model.cfg.d_model) * model.cfg.d_model
    return 6.0 * (enc * n_requests * context_len + dec * n_targets * model.levels + head)


def warmup_for(cfg: Config, total_steps: int) -> int:
    """Warmup steps of a run of `total_steps`: `train.warmup_steps`, but at most a tenth of the
    run, so a short run (a continuous-training cycle of a few dozen steps) reaches its peak
    learning rate instead of ending inside the warmup."""
    return max(1, min(cfg.train.warmup_steps, total_steps // 10))


def lr_at(step: int, cfg: Config, time_frac: float = 0.0, total_steps: int | None = None,
          ) -> float:
    """Linear warmup, then cosine decay to 0 over the rest of training (`total_steps`, by
    default `train.max_steps`: the steps this run will take, so the schedule ends with it).

    `time_frac` (elapsed / time budget) lets a wall-clock budget drive the decay: progress is
    the larger of the step and time fractions, so a run cut by its budget still ends with a
    decayed learning rate instead of stopping mid-schedule.
    """
    t = cfg.train
    total = total_steps or t.max_steps
    warmup = warmup_for(cfg, total)
    if step < warmup:
        return t.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return t.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, max(progress, time_frac))))


BIND_MIN_STEPS = 10  # the pace is judged after this many steps (the first one is slow)


def budget_binds(elapsed_s: float, steps_done: int, steps_left: int, budget_s: float) -> bool:
    """Will a run at its pace so far (`steps_done` steps in `elapsed_s`) pass its time budget
    before its `steps_left` steps end? Only then does the budget drive the learning-rate
    decay (`lr_at`'s time_frac): a run whose step count fits its budget follows the step
    schedule alone, so a busy machine trains the same model as an idle one, only slower.
    Before `BIND_MIN_STEPS` steps the pace is not judged (the first step's allocations would
    make every run look slow); a run already past its budget binds at once."""
    if elapsed_s > budget_s:
        return True
    if steps_done < BIND_MIN_STEPS:
        return False
    return elapsed_s + elapsed_s / steps_done * steps_left > budget_s


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@deterministic_training
def train(cfg: Config, reqs: Requests, item_codes: torch.Tensor, vocab_sizes: list[int],
          out_dir: str | Path, *, codebook_fingerprint: str = "", n_user_buckets: int = 1,
          resume: bool = True, max_steps: int | None = None, init_from: OneRec | None = None,
          log: Any = None, shuffle_window: int = 4096, stop_after: int | None = None,
          time_budget_s: float | None = None, eval_fn: Any = None, eval_every: int = 0,
          ) -> tuple[OneRec, TrainResult]:
    """Train (or resume) on `reqs`. Returns the model and a TrainResult.

    `max_steps` overrides cfg.train.max_steps; `stop_after` ends this call early after that
    many steps (the schedule still spans max_steps: used to simulate a crash in tests).
    `init_from` warm-starts from another model's weights (continuous training).
    `time_budget_s` stops after that much wall time (a checkpoint is written first);
    `eval_fn(model, step) -> dict` runs every `eval_every` steps on rank 0 and its result joins
    the history (model selection happens in the caller).
    """
    out_dir = Path(out_dir)
    rank, world = _dist_info()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    total_steps = max_steps or cfg.train.max_steps
    model = build_model(cfg, item_codes, vocab_sizes, n_user_buckets)
    if init_from is not None:
        model.load_state_dict(init_from.state_dict())
    if model.next_items is not None:  # the transition memory counts these requests' pairs
        model.set_transitions(count_transitions(reqs, item_codes.shape[0] - 1,
                                                cfg.model.transition_neighbors,
                                                prior=model.transition_table()
                                                if init_from is not None else None))
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr,
                            weight_decay=cfg.train.weight_decay)
    stream = RequestStream(reqs, cfg.train.batch_size, seed=cfg.train.seed,
                           shuffle_window=shuffle_window)
    step = 0
    ckpt = out_dir / CKPT_NAME
    if resume and (ckpt / "meta.json").exists():
        loaded = load_checkpoint(ckpt, codebook_fingerprint)
        model.load_state_dict(loaded["state"]["model"])
        opt.load_state_dict(loaded["state"]["optimizer"])
        stream.load_state_dict(loaded["state"]["stream"])
        torch.set_rng_state(loaded["state"]["torch_rng"])
        step = loaded["state"]["step"]
    ddp_model: torch.nn.Module = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(model)
    writer = None
    if rank == 0:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out_dir / "tb"))
        except ImportError:  # tensorboard is the `train` extra
            writer = None
    peak = measure_peak_flops(device)
    context_len = 1 + reqs.short.shape[1] + reqs.pos.shape[1] + cfg.model.n_long_tokens
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                if device.type == "cuda" and cfg.train.precision == "bf16" else None)
    history: list[dict[str, float]] = []
    t_start = time.perf_counter()
    t_log, samples, tokens, flops = time.perf_counter(), 0, 0, 0.0
    steps_this_call = 0
    binds = False  # whether the time budget will cut this run short (`budget_binds`)
    loss_val = float("nan")
    model.train()
    while step < total_steps:
        global_idx = stream.next_indices()
        idx = global_idx[rank::world]
        batch = collate(reqs, idx, item_codes).to(device)
        # the time budget drives the schedule on one process (ranks' clocks would disagree),
        # and only once it binds, so a run whose steps fit gets the same model on any machine
        if time_budget_s and world == 1:
            binds = binds or budget_binds(time.perf_counter() - t_start, steps_this_call,
                                          total_steps - step, time_budget_s)
        time_frac = (time.perf_counter() - t_start) / time_budget_s if binds else 0.0
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg, time_frac, total_steps)
        opt.zero_grad(set_to_none=True)
        if autocast is not None:
            with autocast:
                out = ddp_model(batch)
        else:
            out = ddp_model(batch)
        loss = out["loss"]
        if world > 1:  # DDP averages the ranks' gradients: weigh each rank's per-target mean
            # by its share of the global batch's targets, so the step follows the mean over all
            # of them, as one process on the global batch does, even when ranks hold unequal
            # target counts (every rank reads the same global batch: no all-reduce needed).
            # The MoE balance loss, a statistic of the rank's own tokens, is weighted alike.
            off = reqs.target_offsets
            n_global = int((off[global_idx + 1] - off[global_idx]).sum())
            loss = loss * (world * batch.target_codes.shape[0] / n_global)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        step += 1
        steps_this_call += 1
        loss_val = float(out["loss"].detach())
        n_t = int(batch.target_codes.shape[0])
        samples += n_t * world
        tokens += (len(idx) * context_len + n_t * model.levels) * world
        flops += model_flops(model, len(idx), n_t, context_len) * world
        if step % cfg.train.log_every == 0 or step == total_steps:
            dt = time.perf_counter() - t_log
            rec = {"step": step, "loss": loss_val, "ntp_loss": float(out["ntp_loss"].detach()),
                   "balance_loss": float(out["balance_loss"].detach()), "lr": opt.param_groups[0]["lr"],
                   "grad_norm": float(grad_norm), "samples_per_s": samples / dt,
                   "tokens_per_s": tokens / dt, "mfu": flops / dt / (peak * world),
                   "expert_load_max": float(model.expert_load().max())}
            history.append(rec)
            if rank == 0:
                if writer is not None:
                    for k, v in rec.items():
                        if k != "step":
                            writer.add_scalar(f"train/{k}", v, step)
                if log is not None:
                    log(rec)
            t_log, samples, tokens, flops = time.perf_counter(), 0, 0, 0.0
        if rank == 0 and (step % cfg.train.checkpoint_every == 0 or step == total_steps):
            save_checkpoint(out_dir, model=model, opt=opt, step=step, stream=stream, cfg=cfg,
                            codebook_fingerprint=codebook_fingerprint,
                            n_user_buckets=n_user_buckets)
        if eval_fn is not None and eval_every and rank == 0 and step % eval_every == 0:
            model.eval()
            rec = {"step": step, "wall_s": time.perf_counter() - t_start, **eval_fn(model, step)}
            model.train()
            history.append(rec)
            if log is not None:
                log(rec)
        out_of_time = time_budget_s is not None and time.perf_counter() - t_start > time_budget_s
        if world > 1 and time_budget_s is not None:  # every rank stops at the same step
            flag = torch.tensor([float(out_of_time)], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            out_of_time = bool(flag.item())
        if out_of_time and rank == 0 and step % cfg.train.checkpoint_every != 0:
            save_checkpoint(out_dir, model=model, opt=opt, step=step, stream=stream, cfg=cfg,
                            codebook_fingerprint=codebook_fingerprint,
                            n_user_buckets=n_user_buckets)
        if out_of_time or (stop_after is not None and steps_this_call >= stop_after):
            break
    if writer is not None:
        writer.close()
    result = TrainResult(steps=step, final_loss=loss_val, history=history,
                         checkpoint=ckpt if ckpt.exists() else None,
                         wall_s=time.perf_counter() - t_start, watermark_ms=stream.watermark_ms,
                         budget_bound=binds)
    return model, result


@torch.no_grad()
def heldout_loss(model: OneRec, reqs: Requests, item_codes: torch.Tensor,
                 batch_size: int = 512) -> float:
    """Mean next-token loss (nats per semantic-ID token) over every target of `reqs`, in eval
    mode: the y-axis of the scaling study and a cheap validation signal."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(reqs), batch_size):
        idx = np.arange(start, min(len(reqs), start + batch_size))
        batch = collate(reqs, idx, item_codes).to(device)
        n = int(batch.target_codes.shape[0])
        total += float(model(batch)["ntp_loss"]) * n
        count += n
    model.train(was_training)
    return total / max(1, count)

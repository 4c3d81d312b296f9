"""ECPO: Early-Clipped GRPO, aligning the generator with the reward model (OneRec section 4.2).

For each user the policy *samples* (not beam search: the group must cover what the policy
would do, not only its mode) G semantic IDs; each is rewarded (P-Score + industrial rules,
format reward for legality, `onerec.rewards`), and advantages are normalised within the
group: A_i = (r_i - mean(r)) / std(r), so no value network is needed (GRPO).

The policy-gradient objective is PPO's clipped ratio with one change for negative advantages:

    J = 1/G sum_i min( pi/pi'_old * A_i, clip(pi/pi'_old, 1 - eps, 1 + eps) * A_i )
    pi'_old = max( sg(pi) / (1 + eps + delta), pi_old )   if A_i < 0,   pi_old otherwise

With A < 0 the min picks the unclipped term whenever the ratio is above 1 + eps, so in plain
GRPO/PPO a sample the policy has made much more likely than at sampling time pushes a gradient
proportional to that (unbounded) ratio. Raising pi_old to sg(pi) / (1 + eps + delta) caps the
ratio, hence the gradient, at (1 + eps + delta) |A|. With `align.early_clip: false` the same
code is plain GRPO. Probabilities are of the whole semantic ID (the product over its levels),
the unit that names a video.

The RL loss is mixed with the next-token loss on the batch's real positive targets
(`align.ntp_loss_weight`), which keeps the generator's ability to produce real, engaged-with
videos while rewards reshape it; an optional KL penalty to the frozen pretrained reference
(`align.kl_weight`, k3 estimator) is available and the KL is logged either way, with mean
reward, legality, clip fractions and gradient norm.

Each round samples one group per user, then takes `align.ppo_epochs` optimizer steps on it
(ratios move away from 1 after the first step). The sampler (pi_old) is a copy of the policy
refreshed every `align.sync_every` rounds: 1 is on-policy; larger values reproduce a sampling
service that lags the trainer, where ratios drift far enough for the clipping to act. Dropout is
off throughout (the model runs in eval mode), so ratios measure policy change, not dropout
noise. Checkpoints are the pretraining format (`onerec.checkpoint`), so serving and export
load an aligned model exactly like a pretrained one (`onerec.checkpoint.load_model`).

Resume. A checkpoint also holds what the loop needs to continue exactly (`ALIGN_STATE_KEY`):
the sampling generator's state, the sampler's weights between two syncs, the history, and
digests of the frozen reference and of the reward model. `align(..., resume=True)` continues
from `out_dir/checkpoint` (written atomically, so a `kill -9` leaves the last complete one) and
ends with the same weights, optimizer state and next batch as an uninterrupted run; it refuses
a checkpoint made with other settings, another reference or another reward model, naming what
differs, since continuing those would silently mix two runs.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from onerec.checkpoint import (
    CKPT_NAME,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    tensors_digest,
)
from onerec.config import AlignConfig, Config
from onerec.determinism import deterministic_training
from onerec.items import ItemSpace
from onerec.model import Batch, OneRec
from onerec.reward import RewardModel
from onerec.rewards import (
    IndustrialRules,
    format_advantage,
    format_choice,
    preference_reward,
    redundancy,
)
from onerec.stream import Requests, RequestStream, collate
from onerec.trie import ItemTrie

Log = Callable[[dict[str, Any]], None]


# -- sampling and log-probabilities --------------------------------------------------------------
@torch.no_grad()
def sample_group(model: OneRec, batch: Batch, group: int, *, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample `group` semantic IDs per user, level by level, unconstrained -> (B, G, L)."""
    memory, mask = model.encode(batch)
    b = memory.shape[0]
    codes = torch.zeros(b * group, 0, dtype=torch.long, device=memory.device)
    for lv in range(model.levels):
        hidden, _ = model.decode(codes, memory, mask, group=group)
        logits = model.level_logits(hidden[:, -1], lv) / temperature
        probs = torch.softmax(logits.float(), -1)
        nxt = torch.multinomial(probs.cpu(), 1, generator=generator).to(memory.device)
        codes = torch.cat([codes, nxt], 1)
    return codes.view(b, group, model.levels)


def sequence_logprob(model: OneRec, batch: Batch, codes: torch.Tensor,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(semantic ID | user) for (B, G, L) codes -> (B, G), and the MoE balance loss.

    Teacher-forced: one encoder pass per user, one decoder pass over all G samples (the G
    samples of a user share its encoder output)."""
    b, g, n_lv = codes.shape
    memory, mask = model.encode(batch)
    flat = codes.reshape(b * g, n_lv)
    hidden, balance = model.decode(flat[:, :-1], memory, mask, group=g)
    logp = flat.new_zeros(b * g, dtype=torch.float32)
    for lv in range(n_lv):
        lp = model.level_logits(hidden[:, lv], lv).float().log_softmax(-1)
        logp = logp + lp.gather(1, flat[:, lv:lv + 1]).squeeze(1)
    return logp.view(b, g), balance / max(1, len(model.decoder))


# -- advantages and the loss ---------------------------------------------------------------------
def group_advantages(rewards: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """(B, G) rewards -> (r - group mean) / (group std + 1e-6) over the valid samples of each
    group; invalid samples, and groups with fewer than 2 valid samples, get 0."""
    if valid is None:
        valid = torch.ones_like(rewards, dtype=torch.bool)
    w = valid.float()
    n = w.sum(-1, keepdim=True)
    mean = (rewards * w).sum(-1, keepdim=True) / n.clamp_min(1)
    var = (((rewards - mean) ** 2) * w).sum(-1, keepdim=True) / n.clamp_min(1)
    adv = (rewards - mean) / (var.sqrt() + 1e-6)
    return torch.where(valid & (n >= 2), adv, torch.zeros_like(adv))


def ecpo_loss(logp: torch.Tensor, logp_old: torch.Tensor, adv: torch.Tensor, *,
              clip_eps: float, early_clip_delta: float | None,
              ) -> tuple[torch.Tensor, dict[str, float]]:
    """The (negated, to minimise) ECPO objective; `early_clip_delta=None` is plain GRPO.

    logp: (...) log pi_theta of the samples (with grad); logp_old: (...) at sampling time;
    adv: (...) advantages. Returns the mean loss and the clip fractions.
    """
    logp_old = logp_old.detach()
    early = torch.zeros_like(adv, dtype=torch.bool)
    if early_clip_delta is not None:
        # pi'_old = max(sg(pi) / (1 + eps + delta), pi_old), for negative advantages only
        raised = logp.detach() - math.log1p(clip_eps + early_clip_delta)
        early = (adv < 0) & (raised > logp_old)
        logp_old = torch.where(early, raised, logp_old)
    ratio = torch.exp(logp - logp_old)
    unclipped = ratio * adv
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv
    obj = torch.minimum(unclipped, clipped)
    n = max(1, adv.numel())
    stats = {"clip_frac": float((clipped < unclipped).sum()) / n,
             "early_clip_frac": float(early.sum()) / n,
             "ratio_max": float(ratio.detach().max()) if adv.numel() else 1.0}
    return -obj.mean(), stats


# -- the alignment loop --------------------------------------------------------------------------
@dataclass
class AlignResult:
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: Path | None = None
    wall_s: float = 0.0


class Rewarder:
    """Sampled codes -> items, legality, rewards and the combined advantage of one group."""

    def __init__(self, cfg: AlignConfig, reward_model: RewardModel, trie: ItemTrie,
                 rules: IndustrialRules | None, generator: torch.Generator) -> None:
        self.cfg, self.rm, self.trie, self.rules, self.gen = cfg, reward_model, trie, rules, generator

    def items(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, G, L) codes -> (B, G) item index (0 = names no video)."""
        return self.trie.walk(codes)

    def __call__(self, batch: Batch, codes: torch.Tensor, now_ms: torch.Tensor,
                 logp: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """logp: (B, G) log pi_old of the samples, which `align.format_select: topk` ranks by."""
        items = self.items(codes.cpu())
        legal = items > 0
        pscore = preference_reward(self.rm, batch.to("cpu"), items)
        reward = pscore.clone()
        if self.rules is not None:
            reward = reward + self.cfg.industrial_weight * self.rules(items, now_ms)
        if self.cfg.diversity_weight > 0:  # first-level code: the cluster a slate fills up on
            reward = reward - self.cfg.diversity_weight * redundancy(codes[..., 0].cpu(), legal)
        adv = group_advantages(reward, legal)
        lp = logp.detach().cpu() if logp is not None else None
        chosen = torch.zeros_like(legal)
        if self.cfg.format_weight > 0:
            chosen = format_choice(legal, self.cfg.format_k, select=self.cfg.format_select,
                                   logp=lp, generator=self.gen)
            adv = adv + self.cfg.format_weight * format_advantage(legal, chosen)
        return {"items": items, "legal": legal, "pscore": pscore, "reward": reward, "adv": adv,
                "chosen": chosen}


def format_legality(legal: torch.Tensor, chosen: torch.Tensor, logp: torch.Tensor, k: int,
                    ) -> dict[str, float]:
    """Legality seen by the format reward, logged each round: `legality_chosen`, the share of
    the k format-rewarded slots per group a legal sample fills (1 once every group has k legal
    samples); `legality_top_k`, the legality of each group's k most probable samples (what the
    policy's mode names, the set top-k selection rewards once it is all legal)."""
    top = logp.topk(min(k, logp.shape[-1]), dim=-1).indices
    return {"legality_chosen": float(chosen.float().sum()) / max(1, legal.shape[0] * k),
            "legality_top_k": float(legal.gather(-1, top).float().mean())}


ALIGN_STATE_KEY = "align"  # the alignment's resume state inside a checkpoint's state.pt
ALIGN_STATE_VERSION = 1


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 of every tensor of `module` (names and bytes): identifies the frozen reference and
    the reward model a resumed alignment must keep optimising against."""
    return tensors_digest(module.state_dict())[:16]


def _config_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two `Config.to_dict()`s, as 'key: a -> b'."""
    out: list[str] = []
    for k in sorted(set(a) | set(b)):
        key = f"{prefix}{k}"
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _config_diff(va, vb, key + ".")
        elif va != vb:
            out.append(f"{key}: {va!r} -> {vb!r}")
    return out


def load_align_state(ckpt: Path, cfg: Config, codebook_fingerprint: str, *,
                     reference_digest: str, reward_digest: str) -> dict[str, Any]:
    """The state.pt of an alignment checkpoint this run can continue, else CheckpointError
    naming why (a pretraining checkpoint, other settings, another reference or reward model)."""
    loaded = load_checkpoint(ckpt, codebook_fingerprint)
    meta, state = loaded["meta"], loaded["state"]
    again = "use another output folder, or start over (--no-resume)"
    if meta.get("stage") != "align" or ALIGN_STATE_KEY not in state:
        raise CheckpointError(f"cannot resume from {ckpt}: not an alignment checkpoint with "
                              f"resume state (stage {meta.get('stage', 'pretrain')!r}); {again}")
    st = state[ALIGN_STATE_KEY]
    if st.get("version") != ALIGN_STATE_VERSION:
        raise CheckpointError(f"cannot resume from {ckpt}: resume state version "
                              f"{st.get('version')!r}, this build reads {ALIGN_STATE_VERSION}; "
                              f"{again}")
    if meta.get("config_fingerprint") != cfg.fingerprint():
        diff = _config_diff(loaded["config"].to_dict(), cfg.to_dict())
        raise CheckpointError(f"cannot resume from {ckpt}: it was written with other settings ("
                              f"{'; '.join(diff) or 'config fingerprint differs'}); resume with "
                              f"the same config, or {again}")
    for what, key, now in (("frozen reference (initial checkpoint)", "reference_digest",
                            reference_digest), ("reward model", "reward_digest", reward_digest)):
        if st.get(key) != now:
            raise CheckpointError(f"cannot resume from {ckpt}: the {what} differs from the one "
                                  f"this alignment started with ({st.get(key)} vs {now}); {again}")
    return state


@deterministic_training
def align(cfg: Config, model: OneRec, reward_model: RewardModel, reqs: Requests,
          space: ItemSpace, out_dir: str | Path, *, items_table: pd.DataFrame | None = None,
          n_user_buckets: int = 1, steps: int | None = None, time_budget_s: float | None = None,
          log: Log | None = None, extra_meta: dict[str, Any] | None = None,
          resume: bool = False) -> tuple[OneRec, AlignResult]:
    """Align a (pretrained) `model` with ECPO (or GRPO: `align.early_clip: false`).

    reqs: training requests (contexts + real positive targets for the next-token loss), from
    before the temporal cut; the model is copied as the frozen reference. Writes checkpoints
    in the pretraining format to `out_dir/checkpoint` every `align.checkpoint_every` rounds and
    at the end. Returns the aligned model and the per-round history.

    `resume`: when `out_dir/checkpoint` holds an alignment checkpoint, continue from it (pass
    the same initial `model`: it is the frozen reference); the result, history included, is
    the uninterrupted run's. A message record (`{"message": ...}`) goes to `log` first.
    """
    ac = cfg.align
    out_dir = Path(out_dir)
    device = next(model.parameters()).device
    total = steps or ac.steps
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    model.eval()  # no dropout: ratios must measure policy change only
    opt = torch.optim.AdamW(model.parameters(), lr=ac.lr, weight_decay=0.0)
    stream = RequestStream(reqs, ac.batch_size, seed=ac.seed, shuffle_window=len(reqs))
    gen = torch.Generator().manual_seed(ac.seed)
    torch.manual_seed(ac.seed)
    trie = ItemTrie.from_codes(space.codes, space.vocab_sizes)
    rules = (IndustrialRules.from_config(ac, items_table, space.item_ids)
             if ac.demoted_authors or ac.fresh_days > 0 else None)
    rewarder = Rewarder(ac, reward_model, trie, rules, gen)
    delta = ac.early_clip_delta if ac.early_clip else None
    meta = {"stage": "align", "algorithm": "ecpo" if ac.early_clip else "grpo",
            "reward_model_codebook": reward_model.codebook_fingerprint, **(extra_meta or {})}
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    step = 0
    ckpt = out_dir / CKPT_NAME
    digests = {"reference_digest": weights_digest(ref),
               "reward_digest": weights_digest(reward_model)}
    sampler: OneRec = model
    if resume and (ckpt / "meta.json").exists():
        state = load_align_state(ckpt, cfg, space.fingerprint, **digests)
        st = state[ALIGN_STATE_KEY]
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        stream.load_state_dict(state["stream"])
        torch.set_rng_state(state["torch_rng"])
        gen.set_state(st["generator"])
        step, history = int(state["step"]), list(st["history"])
        if st["sampler"] is not None and step % ac.sync_every != 0:  # between two syncs
            sampler = copy.deepcopy(model)
            sampler.load_state_dict(st["sampler"])
        if log is not None:
            log({"message": f"resuming alignment from {ckpt} at round {step} of {total}"})

    def checkpoint() -> None:
        extra_state = {ALIGN_STATE_KEY: {
            "version": ALIGN_STATE_VERSION, "generator": gen.get_state(),
            "sampler": sampler.state_dict() if sampler is not model else None,
            "history": history, **digests}}
        save_checkpoint(out_dir, model=model, opt=opt, step=step, stream=stream, cfg=cfg,
                        codebook_fingerprint=space.fingerprint, n_user_buckets=n_user_buckets,
                        extra=meta, extra_state=extra_state)

    while step < total:
        idx = stream.next_indices()
        batch = collate(reqs, idx, space.codes).to(device)
        ctx = Batch(batch.user, batch.short, batch.pos, batch.long)
        if step % ac.sync_every == 0:  # pi_old: the sampler's copy of the policy
            sampler = copy.deepcopy(model) if ac.sync_every > 1 else model
        codes = sample_group(sampler, ctx, ac.group_size, temperature=ac.temperature,
                             generator=gen)
        with torch.no_grad():
            logp_old, _ = sequence_logprob(sampler, ctx, codes)
            logp_ref, _ = sequence_logprob(ref, ctx, codes)
        rw = rewarder(ctx, codes, torch.from_numpy(reqs.time_ms[idx]), logp_old)
        adv = rw["adv"].to(device)
        stats: dict[str, float] = {}
        for _ in range(ac.ppo_epochs):
            logp, balance = sequence_logprob(model, ctx, codes)
            pg, stats = ecpo_loss(logp, logp_old, adv, clip_eps=ac.clip_eps,
                                  early_clip_delta=delta)
            # k3 estimator of KL(pi || ref) on the policy's own samples (>= 0, unbiased)
            log_r = logp_ref - logp
            kl = (torch.exp(log_r) - log_r - 1).mean()
            loss = pg + ac.kl_weight * kl + cfg.model.balance_loss_weight * balance
            ntp = torch.zeros(())
            if ac.ntp_loss_weight > 0:
                ntp = model(batch)["loss"]
                loss = loss + ac.ntp_loss_weight * ntp
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), ac.grad_clip)
            opt.step()
        step += 1
        legal = rw["legal"]
        rec = {"step": step, "loss": float(loss.detach()), "pg_loss": float(pg.detach()),
               "ntp_loss": float(ntp.detach()), "kl": float(kl.detach()),
               "reward": float(rw["reward"][legal].mean()) if legal.any() else 0.0,
               "pscore": float(rw["pscore"][legal].mean()) if legal.any() else 0.0,
               "legality": float(legal.float().mean()), "grad_norm": float(grad_norm),
               **format_legality(legal, rw["chosen"], logp_old.cpu(), ac.format_k),
               "distinct": float(np.mean([len(set(r.tolist()) - {0}) / ac.group_size
                                          for r in rw["items"]])),
               "wall_s": time.perf_counter() - t0, **stats}
        history.append(rec)
        if log is not None and (step % ac.log_every == 0 or step == total):
            log(rec)
        out_of_time = time_budget_s is not None and time.perf_counter() - t0 > time_budget_s
        if step % ac.checkpoint_every == 0 or step == total or out_of_time:
            checkpoint()
        if out_of_time:
            break
    return model, AlignResult(steps=step, history=history,
                              checkpoint=ckpt if ckpt.exists() else None,
                              wall_s=time.perf_counter() - t0)

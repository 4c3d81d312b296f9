"""The alignment recipe on KuaiRand: pretrained checkpoint -> P-Score reward model -> ECPO.

What `onerec align` (and, later, the pipeline's alignment step) runs:
1. load the pretrained generator and its codebook (a checkpoint trained with another codebook
   is refused);
2. the reward model: load `reward_model` when given (same codebook), else fit the duration
   shaper and train the P-Score model on the impressions before the temporal cut, evaluate it
   on the held-out days (per-task AUC, ECE) and save it beside the run;
3. ECPO (or GRPO with `align.early_clip: false`) on the training requests before the cut,
   warm-started from the checkpoint, writing `out/align/checkpoint` in the pretraining format.
Returns a plain dict (metrics, wall times, the last log line) that the CLI prints and writes.

With `resume` and an alignment checkpoint in `out/align/checkpoint` (a run killed or preempted
there), the reward model that run trained and saved (`out/reward_model`, written before the
first alignment round) is loaded instead of trained again, and ECPO continues from the
checkpoint: the result is the uninterrupted run's (`onerec.ecpo.align`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onerec.checkpoint import CKPT_NAME, load_model
from onerec.config import Config
from onerec.data import kuairand
from onerec.ecpo import align
from onerec.evaluate import split_cut_ms, temporal_split
from onerec.items import ItemSpace
from onerec.reward import fit_p_score, load_reward_model
from onerec.stream import requests_from_events
from onerec.tokenizer.codebook import Codebook

Log = Callable[[dict[str, Any]], None]


def run_alignment(cfg: Config, data_dir: str | Path, checkpoint: str | Path,
                  codebook_dir: str | Path, out: str | Path, *,
                  reward_model: str | Path | None = None, rm_time_budget_s: float | None = None,
                  steps: int | None = None, time_budget_s: float | None = None,
                  log: Log | None = None, resume: bool = False) -> dict[str, Any]:
    """Reward model (loaded or trained) + ECPO from `checkpoint`. The generator keeps the
    settings it was trained with; `cfg` supplies the data split, reward and align sections.
    `resume`: continue an interrupted run in `out` (module docstring)."""
    out = Path(out)
    resuming = resume and (out / "align" / CKPT_NAME / "meta.json").exists()
    own_rm = out / "reward_model"
    cb = Codebook.load(codebook_dir)
    space = ItemSpace.from_codebook(cb)
    policy, ck_cfg, n_buckets = load_model(checkpoint, cb.fingerprint)
    d = cfg.to_dict()
    cfg = Config.from_dict({**ck_cfg.to_dict(), "data": d["data"], "reward": d["reward"],
                            "align": d["align"]})
    ds = kuairand.load(data_dir)
    history = kuairand.read_history(data_dir)
    t0 = time.perf_counter()
    if reward_model is not None:
        rm, rm_cfg, _ = load_reward_model(reward_model, cb.fingerprint)
        cfg = Config.from_dict({**cfg.to_dict(), "reward": rm_cfg.to_dict()["reward"]})
        rm_info: dict[str, Any] = {"loaded": str(reward_model)}
    elif resuming and (own_rm / "meta.json").exists():
        # the reward model the interrupted run optimised against: the same one, not a retrain
        # (a time budget could stop a retrain elsewhere); trained with this cfg, which the
        # checkpoint's settings check confirms
        rm, _, _ = load_reward_model(own_rm, cb.fingerprint)
        metrics = json.loads((own_rm / "meta.json").read_text()).get("metrics", {})
        rm_info = {"loaded": str(own_rm), "resumed": True, "heldout": metrics}
        if log is not None:
            log({"message": f"resuming: reusing the reward model this run trained, {own_rm}"})
    else:
        # the one recipe (the pipeline's reward stage runs it too), on the data split's cut
        rm, s = fit_p_score(cfg, ds.events, space, split_cut_ms(ds.events, cfg.data.test_days),
                            own_rm, history=history, n_user_buckets=n_buckets,
                            time_budget_s=rm_time_budget_s, log=log)
        rm_info = {"heldout": s["metrics"], "steps": s["steps"], "train_s": s["train_s"],
                   "n_train": s["n_train_impressions"], "n_heldout": s["n_heldout_impressions"]}
    rm_s = time.perf_counter() - t0
    train_ev, _ = temporal_split(ds.events, cfg.data.test_days)
    reqs = requests_from_events(train_ev, space.index, cfg.data, history=history,
                                n_user_buckets=n_buckets)
    _, res = align(cfg, policy, rm, reqs, space, out / "align", items_table=ds.items,
                       n_user_buckets=n_buckets, steps=steps, time_budget_s=time_budget_s,
                       log=log, extra_meta={"init_checkpoint": str(checkpoint)},
                       resume=resume)
    return {"reward_model": rm_info, "reward_model_s": rm_s, "align_steps": res.steps,
            "align_s": res.wall_s, "last": res.history[-1] if res.history else {},
            "checkpoint": str(res.checkpoint), "algorithm": "ecpo" if cfg.align.early_clip
            else "grpo", "config_fingerprint": cfg.fingerprint()}

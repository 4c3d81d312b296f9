"""Preference alignment on KuaiRand held-out days: pretrained vs GRPO vs ECPO vs ECPO + RM selection.

    python -m bench.alignment [--checkpoint CKPT --codebook CB] [--quick]

1. the pretrained generator: `--checkpoint/--codebook`, or a short `onerec.pretrain.run_kuairand`
   (`--pretrain-minutes`) on the days before the cut;
2. the P-Score reward model trained on the same days (`onerec.reward.fit_p_score`, the
   pipeline's recipe); per-task AUC and calibration on the held-out days (the last
   `data.test_days`);
3. GRPO and ECPO (the same code, early clip off / on) from the same start, same seed, same
   number of rounds, with a sampler that lags the trainer by `--sync-every` rounds (OneRec's
   sampling service; on-policy, early clipping never binds and the two are identical);
4. each generator on the held-out users (contexts as of the cut), constrained beam search,
   top 10: mean P-Score of the recommended videos, legality with constraints off, diversity
   (distinct videos across users, intra-list diversity of first-level codes), Recall@10 of
   the users' real long-view events; "+ RM selection" re-ranks the whole beam by P-Score;
5. stability over the alignment rounds: gradient norm, sampled legality first -> last, KL to
   the pretrained model, clip fractions.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.runtime import reexec_with_tuned_env

ROOT = Path(__file__).resolve().parents[1]


def _log(rec: dict) -> None:
    keep = ("step", "loss", "pscore", "legality", "kl", "grad_norm", "clip_frac",
            "early_clip_frac", "wall_s", "fusion_loss")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in rec.items()
                      if k in keep}), flush=True)


def pretrained(args: argparse.Namespace, cfg: Any) -> tuple[Path, Path]:
    """Checkpoint and codebook folders: given, or trained now on the days before the cut."""
    if args.checkpoint:
        return Path(args.checkpoint), Path(args.codebook)
    from onerec.pretrain import run_kuairand

    out = Path(args.out) / "pretrain"
    run_kuairand(cfg, args.data_dir, out, time_budget_s=args.pretrain_minutes * 60,
                 beam_width=8, log=_log, max_test_users=50)
    return out / "train" / "checkpoint", out / "codebook"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="pretrained checkpoint folder")
    ap.add_argument("--codebook", default=None, help="its codebook folder")
    ap.add_argument("--data-dir", default=str(ROOT / "data" / "kuairand-pure"))
    ap.add_argument("--pretrain-minutes", type=float, default=3.0,
                    help="budget of the short pretraining when no --checkpoint is given")
    ap.add_argument("--rm-minutes", type=float, default=2.0, help="reward-model training budget")
    ap.add_argument("--align-steps", type=int, default=60, help="alignment rounds per method")
    ap.add_argument("--sync-every", type=int, default=8,
                    help="align.sync_every: rounds the sampler (pi_old) lags the trainer; with "
                         "1 (on-policy) early clipping never binds and ECPO equals GRPO")
    ap.add_argument("--test-users", type=int, default=1000, help="held-out users evaluated")
    ap.add_argument("--beam", type=int, default=32, help="beam width (RM selection's N)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: minutes, fewer users")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="config override for the reward model and alignment (repeatable)")
    ap.add_argument("--out", default="runs/bench-alignment")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    reexec_with_tuned_env("bench.alignment", argv)
    if args.quick:
        args.rm_minutes = min(args.rm_minutes, 0.75)
        args.align_steps = min(args.align_steps, 15)
        args.test_users = min(args.test_users, 300)
        args.pretrain_minutes = min(args.pretrain_minutes, 1.0)
    if bool(args.checkpoint) != bool(args.codebook):
        ap.error("--checkpoint and --codebook go together")

    import torch

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    from onerec.config import Config

    cfg = Config.from_preset(args.preset, [f"align.sync_every={args.sync_every}",
                                           *args.overrides])
    ckpt, cb_dir = pretrained(args, cfg)
    result = run(args, cfg, ckpt, cb_dir)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"total wall time {(time.perf_counter() - t_start) / 60:.1f} min; {stamp}; "
          f"argv: {' '.join(sys.argv[1:])}")
    if args.json:
        Path(args.json).write_text(json.dumps({**result, "date": stamp, "argv": sys.argv},
                                              default=str, indent=1))
    return result


@dataclass
class Prepared:
    """What every alignment bench starts from: the pretrained generator, the data, the P-Score
    reward model and the training requests (contexts as of each impression, before the cut)."""

    policy: Any  # the pretrained OneRec
    cfg: Any  # the generator's Config with the bench's reward and align sections
    space: Any  # ItemSpace of the codebook
    n_buckets: int
    ds: Any  # the KuaiRand dataset
    test_ev: Any  # held-out events (the last data.test_days)
    rm: Any  # the P-Score reward model
    rm_metrics: dict
    rm_s: float
    reqs: Any  # training Requests
    state: dict  # user -> (short, pos, long) histories as of the cut


def prepare(args: argparse.Namespace, bench_cfg: Any, ckpt: Path, cb_dir: Path,
            reward_model: str | None = None) -> Prepared:
    """Load the generator and data, train the reward model (or load `reward_model`, a folder
    `fit_p_score` wrote with this codebook) and build the training requests."""
    from rich.console import Console

    from bench.report import print_table
    from onerec.checkpoint import load_model
    from onerec.config import Config
    from onerec.data import kuairand
    from onerec.evaluate import split_cut_ms, temporal_split
    from onerec.items import ItemSpace
    from onerec.reward import fit_p_score, load_reward_model
    from onerec.stream import requests_from_events
    from onerec.tokenizer.codebook import Codebook

    console = Console()
    out = Path(args.out)
    cb = Codebook.load(cb_dir)
    space = ItemSpace.from_codebook(cb)
    policy, ck_cfg, n_buckets = load_model(ckpt, cb.fingerprint)
    # the generator keeps its own settings; the reward model and alignment take the bench's
    cfg = Config.from_dict({**ck_cfg.to_dict(), "reward": bench_cfg.to_dict()["reward"],
                            "align": bench_cfg.to_dict()["align"]})
    ds = kuairand.load(args.data_dir)
    history = kuairand.read_history(args.data_dir)
    cut = split_cut_ms(ds.events, cfg.data.test_days)
    train_ev, test_ev = temporal_split(ds.events, cfg.data.test_days)

    # -- reward model: the recipe of the pipeline's reward stage and `onerec align` --------------
    t0 = time.perf_counter()
    if reward_model:
        rm, _, _ = load_reward_model(reward_model, cb.fingerprint)
        rm_metrics = json.loads((Path(reward_model) / "meta.json").read_text()).get("metrics", {})
        print(f"reusing the reward model {reward_model}")
    else:
        rm, rm_summary = fit_p_score(cfg, ds.events, space, cut, out / "reward_model",
                                     history=history, n_user_buckets=n_buckets,
                                     time_budget_s=args.rm_minutes * 60, log=_log)
        rm_metrics = rm_summary["metrics"]
        rows = [[t, f"{m['auc']:.4f}", f"{m['ece']:.4f}", f"{m['mean_pred']:.4f}",
                 f"{m['mean_obs']:.4f}", f"{int(m['positives'])}"]
                for t, m in rm_metrics.items()]
        print_table(console, f"P-Score reward model on the held-out days "
                    f"({rm_summary['n_heldout_impressions']} impressions; {rm_summary['steps']} "
                    f"steps, {rm_summary['train_s'] / 60:.1f} min)",
                    ["task", "AUC", "ECE", "mean pred", "mean observed", "positives"], rows,
                    left=["task"])
    rm_s = time.perf_counter() - t0
    state: dict[int, tuple[list[int], list[int], list[int]]] = {}
    reqs = requests_from_events(train_ev, space.index, cfg.data, history=history,
                                n_user_buckets=n_buckets, final_state=state)
    return Prepared(policy=policy, cfg=cfg, space=space, n_buckets=n_buckets, ds=ds,
                    test_ev=test_ev, rm=rm, rm_metrics=rm_metrics, rm_s=rm_s, reqs=reqs,
                    state=state)


def align_variant(p: Prepared, name: str, align_overrides: dict[str, Any], out: Path,
                  steps: int, ckpt: Path, log: Any = _log) -> tuple[Any, Any]:
    """One alignment run from `p.policy` (copied) with `align_overrides` on top of `p.cfg`."""
    from rich.console import Console

    from onerec.config import Config
    from onerec.ecpo import align

    c = Config.from_dict({**p.cfg.to_dict(), "align": {**p.cfg.to_dict()["align"],
                                                      **align_overrides}})
    Console().rule(f"{name}: {steps} rounds")
    return align(c, copy.deepcopy(p.policy), p.rm, p.reqs, p.space, out,
                 items_table=p.ds.items, n_user_buckets=p.n_buckets, steps=steps, log=log,
                 extra_meta={"init_checkpoint": str(ckpt)})


def run(args: argparse.Namespace, bench_cfg: Any, ckpt: Path, cb_dir: Path) -> dict:
    import numpy as np
    import torch
    from rich.console import Console

    from bench.report import print_table
    from onerec.evaluate import rank_metrics_multi
    from onerec.recommend import recommend
    from onerec.reward import TASKS, rm_select
    from onerec.stream import contexts_from_histories

    console = Console()
    out = Path(args.out)
    p = prepare(args, bench_cfg, ckpt, cb_dir)
    policy, cfg, space, n_buckets, rm = p.policy, p.cfg, p.space, p.n_buckets, p.rm
    rm_metrics, rm_s, reqs, state, test_ev = p.rm_metrics, p.rm_s, p.reqs, p.state, p.test_ev
    index = space.index

    # -- alignment -------------------------------------------------------------------------------
    runs: dict[str, Any] = {}
    for name, early in (("GRPO", False), ("ECPO", True)):
        runs[name] = align_variant(p, name, {"early_clip": early}, out / name.lower(),
                                   args.align_steps, ckpt)

    # -- held-out evaluation ---------------------------------------------------------------------
    lv = test_ev[test_ev["long_view"] == 1].sort_values(["user_id", "time_ms"], kind="stable")
    lv = lv.drop_duplicates(["user_id", "video_id"])
    targets = {int(u): [int(v) for v in g] for u, g in lv.groupby("user_id")["video_id"]}
    users = sorted(u for u in targets if u in state)[:args.test_users]
    ctx = contexts_from_histories([state[u][0] for u in users], cfg.data, users=users,
                                  n_user_buckets=n_buckets, pos=[state[u][1] for u in users],
                                  long=[state[u][2] for u in users])
    first_code = {int(v): int(space.codes[i, 0]) for v, i in index.items()}

    def mean_pscore(lists: list[list[int]]) -> float:
        width = max(len(r) for r in lists)
        items = torch.zeros(len(lists), width, dtype=torch.long)
        for r, row in enumerate(lists):
            items[r, :len(row)] = torch.tensor([index[v] for v in row], dtype=torch.long)
        s = rm.pscore(ctx, items)
        return float(s[items > 0].mean())

    def ild(lists: list[list[int]]) -> float:
        vals = []
        for row in lists:
            c = [first_code[v] for v in row]
            pairs = [(a, b) for i, a in enumerate(c) for b in c[i + 1:]]
            if pairs:
                vals.append(sum(a != b for a, b in pairs) / len(pairs))
        return float(np.mean(vals)) if vals else 0.0

    def evaluate(model: Any) -> tuple[dict[str, float], dict[str, float]]:
        """-> metrics of the beam's top 10, and of the beam re-ranked by P-Score (top 10)."""
        recs = recommend(model, space, ctx, beam_width=args.beam, top_n=args.beam)
        free = recommend(model, space, ctx, beam_width=args.beam, top_n=args.beam,
                         constrained=False)
        out = []
        for lists in ([r[:10] for r in recs.items], rm_select(rm, ctx, recs.items, 10)):
            distinct = len({v for r in lists for v in r}) / max(1, sum(len(r) for r in lists))
            out.append({"pscore@10": mean_pscore(lists), "legality_free": free.legality,
                        "distinct@10": distinct, "ild@10": ild(lists),
                        "recall@10_long_view": rank_metrics_multi(
                            lists, [targets[u] for u in users], ks=(10,))["recall@10"]})
        return out[0], out[1]

    t1 = time.perf_counter()
    table: dict[str, dict[str, float]] = {}
    table["pretrained"], table["pretrained + RM selection"] = evaluate(policy)
    table["GRPO"], _ = evaluate(runs["GRPO"][0])
    table["ECPO"], table["ECPO + RM selection"] = evaluate(runs["ECPO"][0])
    eval_s = time.perf_counter() - t1
    cols = ["pscore@10", "legality_free", "distinct@10", "ild@10", "recall@10_long_view"]
    print_table(console, f"bench.alignment: {len(users)} held-out users, beam {args.beam}, "
                f"top 10 ({args.align_steps} rounds of G={cfg.align.group_size} x "
                f"{cfg.align.batch_size} users, sampler synced every {cfg.align.sync_every})",
                ["model", "mean P-Score", "legality (free)", "distinct", "ILD",
                 "Recall@10 long view"],
                [[name, *(f"{m[c]:.4f}" for c in cols)] for name, m in table.items()],
                left=["model"])

    def stab(res: Any) -> list[str]:
        h = res.history
        k = max(1, len(h) // 5)
        g = [r["grad_norm"] for r in h]
        leg = [r["legality"] for r in h]
        ps = [r["pscore"] for r in h]
        return [f"{res.steps}", f"{res.wall_s / 60:.1f} min", f"{np.mean(g):.3f} / {max(g):.3f}",
                f"{np.mean(leg[:k]):.3f} -> {np.mean(leg[-k:]):.3f} (min {min(leg):.3f})",
                f"{np.mean(ps[:k]):.3f} -> {np.mean(ps[-k:]):.3f}", f"{h[-1]['kl']:.4f}",
                f"{np.mean([r['clip_frac'] for r in h]):.3f}",
                f"{np.mean([r['early_clip_frac'] for r in h]):.3f}"]

    print_table(console, "stability over the alignment rounds (sampled groups)",
                ["method", "rounds", "wall", "grad norm mean / max", "legality first -> last",
                 "P-Score first -> last", "final KL", "clip", "early clip"],
                [[name, *stab(res)] for name, (_, res) in runs.items()], left=["method"])
    print(json.dumps({"reward_model_s": round(rm_s, 1), "eval_s": round(eval_s, 1),
                      "n_train_requests": len(reqs), "n_test_users": len(users),
                      "tasks": list(TASKS)}))
    return {"reward_model": rm_metrics, "table": table,
            "history": {k: r.history for k, (_, r) in runs.items()}}


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

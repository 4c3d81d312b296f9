"""How many held-out users the gate needs to tell two models apart (issue #13).

    python -m bench.gate_power [--data-dir data/kuairand-pure] [--until 2022-04-28 2022-04-29]

For each cycle day `until`, takes the gate's held-out window (`stages.validate`, then
`stages.heldout_users(snap, None)`: every user with a positive held-out event and behaviour
before it) and two cheap recommenders that need no training: popularity (the gate's floor) and
"recent history" (each user's last 10 distinct positive videos before the window, most recent
first, from its events and then its pre-log history, filled up with popularity). From their per-user NDCG@10 it prints the per-user sd and the
users a paired one-sided test at 5% with 80% power needs (`onerec.power`) to detect a 10% and a
20% relative difference at popularity's level: n = ((1.645 + 0.842) sd / (r mean_pop))^2, with
sd either one model's per-user sd or the sd of the paired differences of the two recommenders.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from onerec import stages
from onerec.config import Config
from onerec.power import paired_users_needed, users_needed

ROOT = Path(__file__).resolve().parents[1]


def recent_history(snap: stages.Snapshot, users: list[int], fill: list[int],
                   k: int = 10) -> list[list[int]]:
    """Each user's last k distinct positive videos before the held-out window, most recent
    first: positive (long view or like) events, then the pre-log history's long views and likes
    (the shipped sample has only a few days of events, so most users have few), then the `fill`
    ranking. A personal but untrained recommender, far less correlated with popularity."""
    from onerec.data import kuairand

    ev = snap.events()
    ev = ev[(ev["time_ms"] < snap.holdout_start_ms)
            & ((ev["long_view"] == 1) | (ev["is_like"] == 1))]
    ev = ev.sort_values("time_ms", ascending=False, kind="stable")
    last = {int(u): g["video_id"].astype(int).tolist() for u, g in ev.groupby("user_id")}
    hist = kuairand.read_history(snap.data_dir)
    if hist is not None:
        for row in hist.itertuples(index=False):
            seq = [int(v) for v in row.long_watch_seq] + [int(v) for v in row.like_seq]
            last.setdefault(int(row.user_id), []).extend(reversed(seq))
    recs = []
    for u in users:
        row = list(dict.fromkeys(last.get(u, [])))[:k]
        row += [v for v in fill if v not in row][: k - len(row)]
        recs.append(row)
    return recs


def measure(data_dir: Path, until: str, work: Path) -> dict[str, float]:
    """The numbers above for one cycle day."""
    from onerec.baselines import fit_popularity

    cfg = Config.from_preset("tiny")
    snap_dir = work / f"snapshot-{until}"
    stages.validate(cfg, data_dir, snap_dir, until=until, root=work / "no-production")
    snap = stages.Snapshot.load(snap_dir)
    users, targets = stages.heldout_users(snap, None)
    target_sets = [targets[u] for u in users]
    pop_eval = stages.evaluate_popularity(snap_dir)
    pop = np.asarray(pop_eval["per_user"]["ndcg@10"])
    ev = snap.events()
    ev = ev[ev["time_ms"] < snap.holdout_start_ms]
    ranking = fit_popularity([ev.loc[(ev["long_view"] == 1) | (ev["is_like"] == 1),
                                     "video_id"].tolist()]).ranking[:10]
    rec = np.asarray(stages.per_user_metrics(recent_history(snap, users, ranking),
                                             target_sets)["ndcg@10"])
    sd_pop, sd_rec, sd_d = pop.std(ddof=1), rec.std(ddof=1), (rec - pop).std(ddof=1)
    overlap = np.mean([len(set(r) & set(ranking)) for r in recent_history(snap, users, ranking)])
    out = {"until": until, "heldout_users": len(users), "overlap_top10": float(overlap),
           "ndcg_pop": pop.mean(),
           "ndcg_recent": rec.mean(), "sd_pop": sd_pop, "sd_recent": sd_rec, "sd_diff": sd_d,
           "needed_observed": paired_users_needed(rec, pop)}
    for r in (0.1, 0.2):
        out[f"n{int(r * 100)}_sd_pop"] = users_needed(sd_pop, r * pop.mean())
        out[f"n{int(r * 100)}_sd_diff"] = users_needed(sd_d, r * pop.mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=ROOT / "data" / "kuairand-pure")
    ap.add_argument("--until", nargs="+", default=["2022-04-28", "2022-04-29"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(args.data_dir, u, Path(tmp)) for u in args.until]
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + " --- |" * len(keys))
    for row in rows:
        print("| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v)
                                for v in row.values()) + " |")


if __name__ == "__main__":
    main()

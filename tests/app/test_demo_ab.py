"""The served A/B: two real KServe servers (stand-in graphs whose answer follows from the
history, `tests.serving_util`), users split between them, each user's slate from their own arm's
server for the history sent, feedback and a decision. The canary's version carries a reward
model, so its server re-ranks with RM selection (the served default); the stable's does not
(beam order)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onerec import ab
from onerec.app.demo_ab import ABOptions, run, user_histories
from onerec.config import Config
from onerec.data import kuairand
from tests.serving_util import carry_reward_model, expected_items, write_version

UNTIL = "2022-05-01"
N_ITEMS = 300


def _version(models: Path, name: str, table: np.ndarray) -> Path:
    """An exported repository <models>/<name>/onerec/1 whose item table is `table`."""
    folder = write_version(models / name / "onerec", 1, n_items=len(table), beam_width=None)
    np.save(folder / "items.npy", table.astype(np.int64))
    return folder


@pytest.fixture(scope="module")
def served(tmp_path_factory, shipped_dir):
    root = tmp_path_factory.mktemp("ab")
    ev = kuairand.read_events(shipped_dir)
    popular = ev.loc[ev["is_click"] == 1, "video_id"].value_counts().index.to_numpy(np.int64)
    tables = {"v-stable": popular[:N_ITEMS], "v-canary": popular[N_ITEMS:2 * N_ITEMS]}
    for name, table in tables.items():
        _version(root / "state" / "models", name, table)
    carry_reward_model(root / "state" / "models" / "v-canary" / "onerec" / "1")
    cfg = Config.from_preset("tiny")
    opts = ABOptions(data_dir=Path(shipped_dir), work_dir=root / "ab", state=root / "state",
                     stable="v-stable", canary="v-canary", canary_percent=30, until=UNTIL,
                     n_requests=3_000)
    lines: list[str] = []
    return run(cfg, opts, log=lines.append), opts, tables, cfg, lines


def test_each_user_gets_their_own_arms_slate_for_the_history_sent(served):
    outcome, opts, tables, cfg, _ = served
    split = ab.TrafficSplitter(opts.canary_percent, salt=opts.canary)
    version = {"stable": opts.stable, "canary": opts.canary}
    checked, reranked = 0, 0
    for arm in ("stable", "canary"):
        z = np.load(opts.work_dir / f"{arm}-slates.npz")
        sent = np.load(opts.work_dir / f"{arm}-requests.npz")
        assert (z["user_id"] == sent["user_id"]).all() and len(z["user_id"]) > 100
        assert all(split.arm(int(u)) == arm for u in z["user_id"])
        table = tables[version[arm]]
        known = set(table.tolist())
        for u, short, vids, cold in zip(sent["user_id"], sent["short_history"],
                                        z["video_ids"], z["cold_start"], strict=True):
            if cold:
                continue
            got = [int(v) for v in vids if v >= 0]
            last = [int(v) for v in short if int(v) in known]
            # the stand-in answers the videos after the newest known short-history video
            width = cfg.serve.beam_width
            beam = list(expected_items(table, last[-1], width) if last else table[:width])
            if arm == "stable":  # beam order: its version carries no reward model
                assert got == beam[:len(got)], (arm, u)
            else:  # RM selection: the beam's best P-Scores, in that order
                assert set(got) <= set(beam) and len(got) == cfg.serve.top_n, (arm, u)
                reranked += got != beam[:len(got)]
            checked += 1
    assert checked > 200 and reranked > 10
    assert outcome.arms["stable"]["reranker"] == "beam order"
    assert outcome.arms["canary"]["reranker"].startswith("RM selection (")
    assert {a["version"] for a in outcome.arms.values()} == {"v-stable", "v-canary"}
    assert all(a["model_version"] == 1 and a["slate_size"] == cfg.serve.top_n
               for a in outcome.arms.values())


def test_feedback_covers_every_request_and_the_analysis_decides(served):
    outcome, opts, _, _, lines = served
    fb = outcome.feedback
    assert len(fb) == opts.n_requests
    assert sum(a["requests"] for a in outcome.arms.values()) == opts.n_requests
    assert (fb.groupby("user_id")["variant"].nunique() == 1).all()
    assert abs((fb["variant"] == "canary").mean() - 0.3) < 0.05
    for a in outcome.arms.values():
        assert 0 < a["mean_p_click"] < 1 and 0 <= a["mean_reward"] <= 2
    assert outcome.result.decision in ("promote", "rollback", "wait")
    assert outcome.result.n_stable + outcome.result.n_canary == fb["user_id"].nunique()
    m = outcome.behaviour["metrics"]["click"]
    assert m["model"]["log_loss"] < m["user"]["log_loss"]
    assert any(line.startswith("served ") for line in lines)
    assert set(outcome.walls) >= {"behaviour model", "servers ready", "slates"}


def test_histories_are_the_feature_store_sequences_before_until(shipped_dir):
    cfg = Config.from_preset("tiny")
    ev = kuairand.load(shipped_dir).events
    from onerec.stages import day_ms

    before = ev[ev["time_ms"] < day_ms(UNTIL)]
    user = int(before.loc[before["is_click"] == 1, "user_id"].value_counts().index[0])
    stranger = 10**9
    h = user_histories(Path(shipped_dir), UNTIL, cfg, np.array([user, stranger]))
    mine = before[before["user_id"] == user]
    clicks = mine.loc[mine["is_click"] == 1, "video_id"].tolist()[-cfg.data.max_seq_len:]
    assert h["short_history"].shape == (2, cfg.data.max_seq_len)
    assert h["short_history"][0][-len(clicks):].tolist() == clicks
    assert h["long_history"][0][-1] == mine["video_id"].iloc[-1]
    assert (h["short_history"][1] == -1).all() and (h["long_history"][1] == -1).all()

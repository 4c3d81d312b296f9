"""Serving pieces in-process: version manager (hot swap rules), runtime id mapping, limits, and
the transformer's Feast / cold-start / reranker paths through KServe's Model.__call__."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from serving.repository import (
    Expected,
    VersionRefused,
    popular_videos,
    read_cold_start,
    write_cold_start,
)
from serving.runtime import load_version
from serving.schema import Limits, RequestError, check_parameters
from serving.versions import VersionManager
from tests.serving_util import (
    CODEBOOK_FP,
    CONFIG_FP,
    carry_reward_model,
    expected_items,
    write_version,
)


# -- limits --------------------------------------------------------------------------------------
def test_parameters_default_and_limits() -> None:
    lim = Limits(beam_width=8, max_beam_width=64, top_n=5, max_top_n=100)
    assert check_parameters({}, lim) == (8, 5)
    assert check_parameters({"beam_width": 2}, lim) == (2, 2)  # default top_n capped by beam
    assert check_parameters({"beam_width": "16", "top_n": 16}, lim) == (16, 16)
    for params, msg in [({"beam_width": 0}, "beam_width: must be >= 1"),
                        ({"beam_width": 65}, "max_beam_width=64"),
                        ({"beam_width": True}, "must be an integer"),
                        ({"top_n": 9}, "top_n: 9 exceeds beam_width=8")]:
        with pytest.raises(RequestError, match=msg):
            check_parameters(params, lim)


# -- runtime -------------------------------------------------------------------------------------
def test_graph_sessions_use_the_configured_intra_op_threads(tmp_path: Path) -> None:
    from onerec.config import Config

    assert Config.from_preset("small").serve.ort_threads == 1  # the server's default
    folder = write_version(tmp_path / "m", 1, n_items=5)
    for threads in (1, 2):
        sess = load_version(folder, threads=threads).graphs[0].session
        assert sess.get_session_options().intra_op_num_threads == threads


def test_id_mapping_drops_unknown_and_padding(tmp_path: Path) -> None:
    p = load_version(write_version(tmp_path / "m", 1, n_items=5))
    vids = p.items  # shuffled 1000, 1007, ... 1028
    idx, unknown = p.to_indices(np.array([[-1, vids[2], 1001, vids[0]], [-1, -1, -1, 5]]))
    assert idx.tolist() == [[0, 3, 0, 1], [0, 0, 0, 0]]
    assert unknown.tolist() == [1, 1]
    assert p.to_videos(np.array([[3, 1, 0, 6]])).tolist() == [[vids[2], vids[0], -1, -1]]


def test_fixed_width_graph_serves_narrower_beams_and_refuses_wider(tmp_path: Path) -> None:
    p = load_version(write_version(tmp_path / "m", 1, beam_width=16))
    z = np.zeros((1, 8), np.int64)
    items, scores = p.predict(np.zeros(1, np.int64), z, z, np.zeros((1, 16), np.int64), 4)
    assert items.shape == (1, 4) and scores.tolist() == [[0.0, -0.5, -1.0, -1.5]]
    with pytest.raises(RequestError, match="exceeds the widest beam model version 1"):
        p.graph_for(17)


def test_graph_taking_the_width_as_input(tmp_path: Path) -> None:
    p = load_version(write_version(tmp_path / "m", 1, beam_width=None))
    assert p.max_beam_width is None
    short = np.zeros((2, 8), np.int64)
    short[0, -1] = 7
    for w in (1, 5, 300):
        items, _ = p.predict(np.arange(2), short, np.zeros((2, 8), np.int64),
                             np.zeros((2, 16), np.int64), w)
        assert items.shape == (2, w) and items[0, 0] == 8 and items[1, 0] == 1


def test_cold_start_table_round_trip(tmp_path: Path) -> None:
    import pandas as pd

    ev = pd.DataFrame({"video_id": [5, 5, 6, 7, 7, 7, 9], "time_ms": [0, 1, 2, 3, 4, 5, 10**12],
                       "long_view": [1, 1, 1, 1, 1, 0, 1], "is_like": [0] * 7})
    assert popular_videos(ev, n=3, last_days=None) == [5, 7, 6]
    assert popular_videos(ev, n=3, last_days=1.0) == [9]  # only the last day
    path = write_cold_start(tmp_path / "cold.json", [5, 7], "test")
    assert read_cold_start(path).tolist() == [5, 7]


# -- version manager -----------------------------------------------------------------------------
def test_manager_pins_fingerprints_refuses_mismatch_and_retries_a_fixed_manifest(
        tmp_path: Path) -> None:
    d = tmp_path / "onerec"
    swaps, refusals = [], []
    m = VersionManager(d, on_swap=lambda old, new: swaps.append(new.version),
                       on_refuse=lambda v, why: refusals.append((v, why)))
    assert m.refresh() is None
    with pytest.raises(VersionRefused, match="no complete version folder"):
        m.reload()
    (d / "5").mkdir(parents=True)  # incomplete (being written): neither loaded nor refused
    assert m.refresh() is None and not m.refused
    write_version(d, 1)
    assert m.reload().version == 1
    assert m.expected == Expected(CONFIG_FP, CODEBOOK_FP)  # pinned by the first version
    write_version(d, 2, config_fp="different")
    with pytest.raises(VersionRefused, match=r"config_fingerprint different does not match.*"
                                             r"still serving version 1"):
        m.reload()
    assert m.current.version == 1 and refusals[0][0] == 2
    assert m.refresh().version == 1 and len(refusals) == 1  # unchanged: not retried
    manifest = d / "2" / "manifest.json"
    body = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**body, "config_fingerprint": CONFIG_FP}))
    os.utime(manifest, (1e9, 1e9))  # a different mtime even on coarse file systems
    assert m.refresh().version == 2
    assert swaps == [1, 2]
    write_version(d, 0)  # older than the active version: never a rollback
    assert m.refresh().version == 2


def test_manager_with_configured_fingerprints_refuses_the_first_version(tmp_path: Path) -> None:
    d = tmp_path / "onerec"
    write_version(d, 1, codebook_fp="old")
    write_version(d, 2)
    m = VersionManager(d, expected=Expected(None, "old"))
    assert m.refresh().version == 1  # the newest (2) is refused, the next newest serves
    assert "codebook_fingerprint" in m.refused[2].reason
    assert m.status()["refused"]["2"]["reason"] == m.refused[2].reason


def test_manager_refuses_a_torn_or_unloadable_graph(tmp_path: Path) -> None:
    d = tmp_path / "onerec"
    write_version(d, 1)  # the manifest records the graph's sha256
    (d / "1" / "model.onnx").write_bytes(b"not a graph")
    write_version(d, 2, beam_width=None)  # no sha256 to compare: ONNX Runtime finds out
    (d / "2" / "model.onnx").write_bytes(b"not a graph")
    m = VersionManager(d)
    assert m.refresh() is None
    assert "sha256 does not match the manifest" in m.refused[1].reason
    assert "ONNX Runtime cannot load it" in m.refused[2].reason


def test_mapping_only_versions_need_no_graph(tmp_path: Path) -> None:
    """A transformer with a remote predictor loads manifest + item table, not the graph."""
    d = tmp_path / "onerec"
    write_version(d, 1, beam_width=16)
    (d / "1" / "model.onnx").unlink()
    assert VersionManager(d).refresh() is None  # a local predictor needs the graph
    m = VersionManager(d, sessions=False)
    p = m.refresh()
    assert p.version == 1 and p.lengths == {"short": 8, "pos": 8, "long": 16}
    assert p.graph_for(16).beam_width == 16 and p.to_videos(np.array([1]))[0] == p.items[0]
    with pytest.raises(RequestError, match="exceeds the widest beam"):
        p.graph_for(17)
    z = np.zeros((1, 8), np.int64)
    with pytest.raises(RuntimeError, match="id mapping only"):
        p.predict(np.zeros(1, np.int64), z, z, np.zeros((1, 16), np.int64), 4)


# -- the transformer in-process ------------------------------------------------------------------
class FakeOnlineStore:
    """What `online_user_context` reads: get_online_features(...).to_dict()."""

    def __init__(self, rows: dict[int, tuple[list[int], list[int], list[int]]]) -> None:
        self.rows = rows
        self.calls: list[list[int]] = []

    def get_online_features(self, features: list[str], entity_rows: dict) -> FakeOnlineStore:
        ids = entity_rows["user_id"]
        self.calls.append(list(ids))
        self._got = {"user_id": ids}
        for k, f in enumerate(features):
            self._got[f.split(":")[1]] = [list(self.rows[u][k]) if u in self.rows else None
                                          for u in ids]
        return self

    def to_dict(self) -> dict:
        return self._got


def make_request(users: list[int], short: list[list[int]] | None = None, **params):
    from kserve import InferInput, InferRequest

    inputs = [InferInput("user_id", [len(users)], "INT64", data=users)]
    if short is not None:
        width = max(len(r) for r in short)
        arr = [[-1] * (width - len(r)) + r for r in short]
        inputs.append(InferInput("short_history", [len(users), width], "INT64", data=arr))
    return InferRequest(model_name="onerec", infer_inputs=inputs, parameters=params)


def test_transformer_reads_feast_maps_ids_and_marks_cold_start(tmp_path: Path) -> None:
    pytest.importorskip("kserve")
    from kserve.errors import InvalidInput

    from serving.transformer import OneRecTransformer

    d = tmp_path / "onerec"
    write_version(d, 1, cold_start=[1000, 1007])
    manager = VersionManager(d)
    vids = load_version(d / "1").items
    store = FakeOnlineStore({10: ([int(vids[4]), 1], [], [int(vids[9])]), 11: ([], [], [])})
    reversed_beam = []

    def rerank(users, v, s):
        reversed_beam.append(users.tolist())
        return v[:, ::-1], s[:, ::-1]

    t = OneRecTransformer("onerec", manager, Limits(beam_width=4, top_n=3), reranker=rerank,
                          feature_repo=tmp_path / "unused")
    t.store = store
    assert t.ready is False and t.load() is False  # no version loaded yet
    manager.refresh()
    assert t.load() is True

    async def call(req):
        resp, _ = await t(req)
        return {o.name: np.asarray(o.data) for o in resp.outputs}, resp.parameters

    # user 10: Feast row (short ends with an unknown id 1 -> dropped); 11: empty Feast row;
    # 12: not in Feast; 13: history in the request, so Feast is not asked for it
    out, params = asyncio.run(call(make_request(
        [10, 11, 12, 13], [[], [], [], [int(vids[20])]])))
    assert store.calls == [[10, 11, 12]]
    assert out["cold_start"].tolist() == [False, True, True, False]
    assert out["unknown_ids"].tolist() == [1, 0, 0, 0]
    w4_10 = expected_items(vids, int(vids[4]), 4)[::-1]  # the reranker reversed the beam of 4
    w4_13 = expected_items(vids, int(vids[20]), 4)[::-1]
    assert out["video_ids"].tolist() == [w4_10[:3], [1000, 1007, -1], [1000, 1007, -1],
                                         w4_13[:3]]
    assert reversed_beam == [[10, 13]]  # only generated rows are reranked
    assert params == {"model_version": 1, "beam_width": 4, "top_n": 3}
    with pytest.raises(InvalidInput, match="parameter top_n: 9 exceeds beam_width=4"):
        asyncio.run(call(make_request([1], top_n=9)))


def test_cold_start_table_from_a_file_or_built_from_data(tmp_path: Path, shipped_dir: Path) -> None:
    import argparse

    from onerec.config import Config
    from onerec.data import kuairand
    from serving.server import cold_start_table

    cfg = Config.from_preset("small")
    path = write_cold_start(tmp_path / "cold.json", [3, 2, 1], "test")
    args = argparse.Namespace(cold_start=path, cold_start_data=shipped_dir)
    assert cold_start_table(args, cfg).tolist() == [3, 2, 1]  # an explicit file wins
    args.cold_start = None
    got = cold_start_table(args, cfg).tolist()
    events = kuairand.load(shipped_dir).events
    assert got == popular_videos(events, n=cfg.serve.max_top_n, last_days=cfg.data.test_days)
    assert len(got) == cfg.serve.max_top_n and set(got) <= set(events["video_id"].tolist())
    args.cold_start_data = None
    assert cold_start_table(args, cfg) is None


def test_rm_selection_orders_each_beam_by_pscore_and_keeps_generator_scores(
        tmp_path: Path) -> None:
    import torch

    from onerec.config import Config
    from onerec.model import Batch
    from onerec.reward import build_reward_model, save_reward_model
    from serving.rm_selection import RMSelection

    cfg = Config.from_preset("tiny")
    vocab = [4, 3, 2]
    torch.manual_seed(0)
    codes = torch.cat([torch.zeros(1, 3, dtype=torch.long),
                       torch.stack([torch.randint(0, k, (12,)) for k in vocab], 1)])
    rm = build_reward_model(cfg, codes, vocab)
    rm.item_ids = np.arange(100, 112, dtype=np.int64)  # item index i -> video 99 + i
    rm.codebook_fingerprint = "cb"
    save_reward_model(tmp_path / "rm", rm, cfg)
    with pytest.raises(ValueError, match="codebook"):
        RMSelection.load(tmp_path / "rm", codebook_fingerprint="other")
    select = RMSelection.load(tmp_path / "rm", codebook_fingerprint="cb")
    assert select.wants_contexts
    ctx = {"user": np.zeros(2, np.int64), "short": np.array([[0, 3, 4], [0, 0, 7]]),
           "pos": np.zeros((2, 1), np.int64), "long": np.zeros((2, 1), np.int64)}
    videos = np.array([[101, 105, 110, -1], [102, 103, 104, 111]])
    logp = np.array([[-1.0, -2.0, -3.0, 0.0], [-0.5, -1.5, -2.5, -3.5]], dtype=np.float32)
    out_v, out_s = select(np.array([7, 8]), videos, logp, contexts=ctx)
    batch = Batch(*(torch.from_numpy(ctx[n]) for n in ("user", "short", "pos", "long")))
    for r in range(2):
        real = [int(v) for v in videos[r] if v >= 0]
        ps = select.reward_model.pscore(
            Batch(batch.user[r:r + 1], batch.short[r:r + 1], batch.pos[r:r + 1],
                  batch.long[r:r + 1]), torch.tensor([[v - 99 for v in real]]))[0]
        expected = [real[j] for j in np.argsort(-ps.numpy(), kind="stable")]
        assert out_v[r, :len(real)].tolist() == expected  # best P-Score first
        assert sorted(out_v[r, :len(real)].tolist()) == sorted(real)  # same candidates
        for v, s in zip(out_v[r, :len(real)], out_s[r, :len(real)], strict=True):
            assert s == logp[r, list(videos[r]).index(v)]  # each keeps its generator score
    assert out_v[0, 3] == -1  # padding stays padding
    # serve.rm_selection_top_m: only the first M compete, the rest follow in beam order
    head = RMSelection(select.reward_model, top_m=2)(np.array([7, 8]), videos, logp, contexts=ctx)[0]
    for r in range(2):
        first = [v for v in out_v[r].tolist() if v in videos[r, :2].tolist()]
        assert head[r].tolist() == first + videos[r, 2:].tolist()
    # serve.rm_selection_code_cap: at most C picks per first-level code, then the passed-over
    whole = np.tile(np.arange(100, 112), (2, 1))  # all 12 videos: 4 first-level codes
    zeros = np.zeros(whole.shape, np.float32)
    free = select(np.array([7, 8]), whole, zeros, contexts=ctx)[0]
    capped = RMSelection(select.reward_model, code_cap=1)(np.array([7, 8]), whole, zeros,
                                                         contexts=ctx)[0]
    first = {v: int(codes[v - 99, 0]) for v in range(100, 112)}
    for r in range(2):
        expect, passed, held = [], [], set()
        for v in free[r].tolist():  # walk the P-Score order, one pick per code
            (passed if first[v] in held else expect).append(v)
            held.add(first[v])
        assert len(expect) == 4 and capped[r].tolist() == expect + passed
    assert any(len({first[v] for v in free[r, :4].tolist()}) < 4 for r in range(2))  # it bit
    assert "at most 1 per first-level code" in str(RMSelection(select.reward_model, code_cap=1))


# -- RM selection with the reward model each version carries --------------------------------------
def test_a_version_loads_the_reward_model_it_carries_as_its_reranker(tmp_path: Path) -> None:
    pytest.importorskip("kserve")
    from serving.rm_selection import RMSelection
    from serving.transformer import OneRecTransformer, describe, keep_order

    d = tmp_path / "onerec"
    carry_reward_model(write_version(d, 1))
    write_version(d, 2)  # exported without one (the reward stage skipped)
    own = load_version(d / "1", rm_top_m=16)
    assert isinstance(own.reranker, RMSelection) and own.reranker.top_m == 16
    assert load_version(d / "1", rm_code_cap=3).reranker.code_cap == 3
    assert describe(own.reranker) == f"RM selection ({d / '1' / 'reward_model'}, top 16)"
    assert load_version(d / "1", rm_selection=False).reranker is None  # serve.rm_selection off
    assert load_version(d / "1", sessions=False).reranker is not None  # the cluster transformer
    none = load_version(d / "2")
    assert none.reranker is None
    # precedence: the command line's reranker, else the version's own, else beam order
    t = OneRecTransformer("onerec", VersionManager(d), Limits())
    assert t.reranker_for(own) is own.reranker and t.reranker_for(none) is keep_order
    assert describe(t.reranker_for(none)) == "beam order"
    t.reranker = keep_order  # --reranker serving.transformer:keep_order
    assert t.reranker_for(own) is keep_order


def test_the_command_line_reranker_overrides_and_the_switch_disables_the_versions_own() -> None:
    pytest.importorskip("kserve")
    from onerec.config import Config
    from serving.server import build_parser, reranker_of, versions_rerank
    from serving.transformer import describe

    def override(*argv: str):
        return reranker_of(build_parser().parse_args(["--repo", "r", *argv]), None)

    cfg, off = Config.from_preset("tiny"), Config.from_preset("tiny", ["serve.rm_selection=false"])
    assert cfg.serve.rm_selection  # the default: the behaviour model's winner
    assert override() is None and versions_rerank(cfg, None) and not versions_rerank(off, None)
    given = override("--reranker", "serving.transformer:keep_order")
    assert describe(given) == "beam order" and not versions_rerank(cfg, given)
    with pytest.raises(SystemExit, match="exclusive"):
        override("--reranker", "serving.transformer:keep_order", "--rm_selection", "rm")


@pytest.mark.parametrize("breaks, reason", [
    (lambda f: carry_reward_model(f, codebook_fp="other"),
     r"2/reward_model/meta\.json: reward model made with codebook other, the version's is cb0"),
    (lambda f: (carry_reward_model(f), (f / "reward_model" / "state.pt").write_bytes(b"torn")),
     r"2/reward_model/state\.pt: sha256 does not match the manifest's reward_model"),
    (lambda f: (f / "reward_model").mkdir(), r"2/reward_model: not recorded in the manifest"),
], ids=["another codebook", "torn", "not in the manifest"])
def test_a_foreign_or_torn_reward_model_refuses_its_version(tmp_path: Path, breaks,
                                                            reason: str) -> None:
    d = tmp_path / "onerec"
    write_version(d, 1)
    m = VersionManager(d)
    assert m.refresh().version == 1
    breaks(write_version(d, 2))
    with pytest.raises(VersionRefused, match=reason + ".*; still serving version 1"):
        m.reload()
    assert m.current.version == 1
    # serve.rm_selection off: the reward model is not read, the version serves in beam order
    assert VersionManager(d, rm_selection=False).refresh().version == 2

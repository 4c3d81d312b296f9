"""Serving a real exported model (`onerec.export`): the Predictor behind serving gives the
PyTorch generator's items, and the transformer maps them to the codebook's video ids; a version
that carries its reward model serves RM-selected slates, one without (or with
serve.rm_selection off) the beam order.

Skipped until `onerec.export` (issue #6, the generation branch) is on this branch.
"""

from __future__ import annotations

import asyncio
import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("onerec.export.artifact")
pytest.importorskip("kserve")

from onerec.checkpoint import build_model
from onerec.config import Config
from onerec.items import ItemSpace
from onerec.model import Batch
from onerec.reward import rm_select
from onerec.tokenizer.codebook import Codebook
from serving.repository import Expected
from serving.runtime import load_version
from serving.schema import Limits
from serving.versions import VersionManager
from tests.reward.util import save_space_rm


def reference(model, space: ItemSpace, batch: Batch, width: int):
    """The PyTorch generator's answer (imported here: the module exists only with export)."""
    from onerec.generate import generate
    from onerec.trie import ItemTrie

    return generate(model, batch, beam_width=width,
                    trie=ItemTrie.from_codes(space.codes, space.vocab_sizes))


EXPORTER = "torchscript"  # 3x faster to export than dynamo here; the graph contract is the same


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny untrained OneRec over a 60-video codebook, exported at beam widths 8 and 16."""
    from onerec.export.artifact import export_version

    cfg = Config.from_preset("tiny")
    rng = np.random.default_rng(0)
    cb = Codebook.from_codes(rng.normal(size=(3, 4, 2)), 1000 + 7 * np.arange(60),
                             rng.integers(0, 4, (60, 3)))
    space = ItemSpace.from_codebook(cb)
    torch.manual_seed(0)
    model = build_model(cfg, space.codes, space.vocab_sizes, n_user_buckets=5).eval()
    repo = tmp_path_factory.mktemp("exported")
    folder = export_version(model, space, cfg, repo, beam_widths=[8, 16], exporter=EXPORTER)
    return model, space, cfg, folder


def batch_of(space: ItemSpace, b: int) -> Batch:
    g = torch.Generator().manual_seed(b)
    n = len(space) + 1
    short, pos, long = (torch.randint(1, n, (b, w), generator=g) for w in (8, 8, 16))
    short[0, :5], long[-1, :9] = 0, 0  # some left padding
    return Batch(user=torch.arange(b) % 5, short=short, pos=pos, long=long)


def test_predictor_equals_the_pytorch_generator_at_each_exported_width(exported) -> None:
    model, space, _, folder = exported
    pred = load_version(folder)
    assert sorted(g.beam_width for g in pred.graphs) == [8, 16]
    assert pred.lengths == {"short": 8, "pos": 8, "long": 16}
    batch = batch_of(space, 3)
    for width in (8, 16):
        items, scores = pred.predict(batch.user.numpy(), batch.short.numpy(), batch.pos.numpy(),
                                     batch.long.numpy(), width)
        ref = reference(model, space, batch, width)
        assert np.array_equal(items, ref.items.numpy()[:, :width])
        np.testing.assert_allclose(scores, ref.scores.numpy()[:, :width], rtol=1e-4, atol=1e-5)
    items, _ = pred.predict(batch.user.numpy(), batch.short.numpy(), batch.pos.numpy(),
                            batch.long.numpy(), 12)  # served by the 16-wide graph, cut to 12
    assert items.shape == (3, 12)


def request_of(space: ItemSpace, batch: Batch, beam_width: int, top_n: int):
    """The v2 request of `batch`'s users, histories as video ids (padding left out)."""
    from kserve import InferInput, InferRequest

    b = len(batch.user)
    inputs = [InferInput("user_id", [b], "INT64", data=batch.user.tolist())]
    for name, arr in (("short_history", batch.short), ("pos_history", batch.pos),
                      ("long_history", batch.long)):
        rows = [[int(space.item_ids[i - 1]) for i in row if i > 0] for row in arr.tolist()]
        width = max(len(r) for r in rows)
        inputs.append(InferInput(name, [b, width], "INT64",
                                 data=[[-1] * (width - len(r)) + r for r in rows]))
    return InferRequest(model_name="onerec", infer_inputs=inputs,
                        parameters={"beam_width": beam_width, "top_n": top_n})


def outputs(resp) -> dict[str, np.ndarray]:
    return {o.name: np.asarray(o.data) for o in resp.outputs}


def test_transformer_returns_the_codebook_video_ids(exported) -> None:
    from serving.transformer import OneRecTransformer

    model, space, cfg, folder = exported
    manager = VersionManager(folder.parent, expected=Expected(cfg.fingerprint(),
                                                              space.fingerprint))
    assert manager.refresh().version == 1
    t = OneRecTransformer("onerec", manager, Limits.from_config(cfg.serve))
    assert t.load()
    batch = batch_of(space, 2)
    resp, _ = asyncio.run(t(request_of(space, batch, 8, 5)))
    out = outputs(resp)
    ref = reference(model, space, batch, 8)
    assert out["video_ids"].tolist() == space.to_ids(ref.items[:, :5].tolist())
    assert out["cold_start"].tolist() == [False, False]
    assert out["unknown_ids"].tolist() == [0, 0]


# -- RM selection with the version's own reward model ---------------------------------------------
W = 16  # beam width and top_n: the whole re-ranked beam comes back


@pytest.fixture(scope="module")
def carried(exported, tmp_path_factory):
    """The same model exported at beam 16 carrying a (perturbed, untrained) reward model of its
    codebook, as the pipeline's export does; -> the version folder."""
    from onerec.export.artifact import export_version

    model, space, cfg, _ = exported
    root = tmp_path_factory.mktemp("carried")
    rm = save_space_rm(cfg, space, root / "rm")
    return export_version(model, space, cfg, root / "repo", beam_widths=[W], exporter=EXPORTER,
                          reward_model=rm)


def served(t, req) -> tuple[list[list[int]], int]:
    resp, _ = asyncio.run(t(req))
    return outputs(resp)["video_ids"].tolist(), int(resp.parameters["model_version"])


def test_a_version_with_its_reward_model_serves_rm_selected_slates(exported, carried) -> None:
    from serving.transformer import OneRecTransformer

    model, space, cfg, _ = exported
    batch = batch_of(space, 4)
    beam = space.to_ids(reference(model, space, batch, W).items.tolist())  # generator order
    manager = VersionManager(carried.parent)  # serve.rm_selection's default: on
    t = OneRecTransformer("onerec", manager, Limits.from_config(cfg.serve))
    assert manager.refresh().version == 1 and t.load()
    picked = rm_select(manager.current.reranker.reward_model, batch, beam, k=W)
    got, _ = served(t, request_of(space, batch, W, W))
    assert got == picked and got != beam  # best P-Score first: the reward model disagrees
    assert [sorted(r) for r in got] == [sorted(r) for r in beam]  # the same candidates
    # serve.rm_selection off: the same version serves its beam order
    off = OneRecTransformer("onerec", VersionManager(carried.parent, rm_selection=False),
                            Limits.from_config(cfg.serve))
    assert off.manager.refresh().reranker is None
    assert served(off, request_of(space, batch, W, W))[0] == beam


def test_a_swap_changes_the_model_and_its_reward_model_together(exported, carried,
                                                                tmp_path) -> None:
    from serving.transformer import OneRecTransformer

    model, space, cfg, _ = exported
    repo = tmp_path / "onerec"
    shutil.copytree(carried, repo / "1")
    manager = VersionManager(repo)
    t = OneRecTransformer("onerec", manager, Limits.from_config(cfg.serve))
    assert manager.refresh().version == 1 and t.load()
    batch = batch_of(space, 3)
    beam = space.to_ids(reference(model, space, batch, W).items.tolist())
    picked = rm_select(manager.current.reranker.reward_model, batch, beam, k=W)
    req = request_of(space, batch, W, W)
    in_flight = asyncio.run(t.preprocess(req))  # on version 1
    # version 2: the same graph exported without a reward model (the reward stage skipped)
    shutil.copytree(carried, tmp_path / "v2")
    shutil.rmtree(tmp_path / "v2" / "reward_model")
    body = json.loads((tmp_path / "v2" / "manifest.json").read_text())
    (tmp_path / "v2" / "manifest.json").write_text(json.dumps(
        {**body, "version": 2, "reward_model": None}))
    (tmp_path / "v2").rename(repo / "2")
    assert manager.refresh().version == 2 and manager.current.reranker is None
    # the request that started on version 1 finishes with version 1's reward model
    resp = asyncio.run(t.postprocess(asyncio.run(t.predict(in_flight))))
    assert outputs(resp)["video_ids"].tolist() == picked and resp.parameters[
        "model_version"] == 1
    assert served(t, req) == (beam, 2)  # new requests: version 2, beam order

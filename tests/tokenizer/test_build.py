"""Fitting a codebook from embeddings, and the refresh policy (encode new items or refit)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from onerec.config import Config, ConfigError
from onerec.tokenizer.build import fit_codebook, refresh
from onerec.tokenizer.rq_kmeans import TokenizerError
from tests.tokenizer.test_rq_kmeans import clustered


@pytest.fixture(scope="module")
def tcfg():
    return Config.from_preset("tiny").tokenizer


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

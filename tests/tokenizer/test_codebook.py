"""The codebook artifact: lookups, prefix tables, fingerprint, atomic save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from onerec.config import Config
from onerec.tokenizer import codebook as codebook_mod
from onerec.tokenizer.build import fit_codebook
from onerec.tokenizer.codebook import (
    Codebook,
    CodebookError,
    CodebookMismatchError,
    assign_disambiguation,
)


def clustered(n: int = 300, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(12, d)) * 3
    return (centers[rng.integers(0, 12, n)] + rng.normal(size=(n, d))).astype(np.float32)


@pytest.fixture(scope="module")
def tcfg():
    return Config.from_preset("tiny").tokenizer


@pytest.fixture(scope="module")
def cb(tcfg) -> Codebook:
    x = clustered()
    return fit_codebook(x, np.arange(1000, 1000 + len(x)), tcfg, config_fingerprint="cfg")


def test_every_item_round_trips_through_its_semantic_id(cb):
    for item in cb.item_ids.tolist():
        assert cb.item(cb.semantic_id(item)) == item
    assert np.array_equal(cb.lookup(cb.semantic_ids_of(cb.item_ids)), cb.item_ids)


def test_unknown_item_and_unknown_id_are_named(cb):
    with pytest.raises(CodebookError, match="item 7 is not in the codebook"):
        cb.semantic_id(7)
    bogus = (0,) * cb.levels + (cb.vocab_sizes[-1],)
    with pytest.raises(CodebookError, match="belongs to no item"):
        cb.item(bogus)
    assert cb.lookup(np.array([bogus]))[0] == -1


def test_colliding_items_get_ranks_in_catalogue_order():
    codes = np.array([[1, 2], [1, 2], [0, 0], [1, 2]])
    assert assign_disambiguation(codes).tolist() == [0, 1, 0, 2]
    assert assign_disambiguation(np.array([[1, 2]]), {(1, 2): 3}).tolist() == [3]


def test_valid_next_allows_exactly_the_prefixes_of_real_items(cb):
    real = {tuple(s) for s in cb.semantic_ids.tolist()}
    found, stack = set(), [()]
    while stack:  # walk every path the tables allow
        p = stack.pop()
        if len(p) == cb.levels + 1:
            found.add(p)
            continue
        nxt = cb.valid_next(p)
        assert nxt.size > 0, f"dead-end prefix {p}"
        assert np.all(np.diff(nxt) > 0)
        stack.extend((*p, int(c)) for c in nxt)
    assert found == real
    # a prefix no item has allows nothing
    used = {s[0] for s in real}
    unused = next(c for c in range(cb.codebook_size + 1) if c not in used)
    assert cb.valid_next((unused,)).size == 0


def test_allowed_mask_matches_valid_next(cb):
    prefixes = cb.semantic_ids[:5, :2]
    mask = cb.allowed_mask(prefixes)
    assert mask.shape == (5, cb.vocab_sizes[2])
    for row, p in zip(mask, prefixes.tolist(), strict=True):
        assert np.flatnonzero(row).tolist() == cb.valid_next(p).tolist()


def test_fingerprint_mismatch_is_refused_naming_both(cb, tcfg):
    cb.check_fingerprint(cb.fingerprint)  # the right one passes
    other = fit_codebook(clustered(seed=1), cb.item_ids, tcfg)
    with pytest.raises(CodebookMismatchError) as e:
        other.check_fingerprint(cb.fingerprint)
    assert cb.fingerprint in str(e.value) and other.fingerprint in str(e.value)


def test_fingerprint_changes_with_any_assignment(cb):
    sids = cb.semantic_ids.copy()
    a, b = 0, int(np.flatnonzero((sids[:, :-1] != sids[0, :-1]).any(1))[0])
    sids[[a, b]] = sids[[b, a]]
    swapped = Codebook(cb.centroids, cb.item_ids, sids)
    assert swapped.fingerprint != cb.fingerprint


def test_save_load_round_trip(cb, tmp_path):
    cb.save(tmp_path / "cb")
    back = Codebook.load(tmp_path / "cb")
    assert back.fingerprint == cb.fingerprint
    assert np.array_equal(back.centroids, cb.centroids)
    assert np.array_equal(back.semantic_ids, cb.semantic_ids)
    assert back.metrics == json.loads(json.dumps(cb.metrics))
    assert back.config_fingerprint == "cfg"
    with np.load(tmp_path / "cb" / "codebook.npz") as z:  # the trie is derived, not stored
        assert sorted(z.files) == ["centroids", "item_ids", "semantic_ids"]
    assert all(np.array_equal(back.valid_next(p), cb.valid_next(p))
               for p in [(), tuple(cb.semantic_ids[0, :1]), tuple(cb.semantic_ids[3, :3])])
    assert (tmp_path / "cb" / "metrics.png").stat().st_size > 1000
    assert json.loads((tmp_path / "cb" / "metrics.json").read_text())["n_items"] == cb.n_items


def test_failed_save_leaves_previous_codebook_intact(cb, tcfg, tmp_path, monkeypatch):
    cb.save(tmp_path / "cb")
    newer = fit_codebook(clustered(seed=2), cb.item_ids, tcfg)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(codebook_mod, "plot_metrics", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        newer.save(tmp_path / "cb")
    assert Codebook.load(tmp_path / "cb").fingerprint == cb.fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cb"]  # no temp folder left


def test_load_refuses_tampered_or_missing_files(cb, tmp_path):
    cb.save(tmp_path / "cb", plot=False)
    with np.load(tmp_path / "cb" / "codebook.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["centroids"] = arrays["centroids"] + 1.0
    np.savez(tmp_path / "cb" / "codebook.npz", **arrays)
    with pytest.raises(CodebookError, match="do not match the recorded fingerprint"):
        Codebook.load(tmp_path / "cb")
    (tmp_path / "cb" / "codebook.json").unlink()
    with pytest.raises(CodebookError, match=r"missing file codebook\.json"):
        Codebook.load(tmp_path / "cb")
    with pytest.raises(CodebookError, match="not found"):
        Codebook.load(tmp_path / "nope")


def test_vocab_sizes_cover_every_token(cb):
    assert cb.vocab_sizes[: cb.levels] == [cb.codebook_size] * cb.levels
    assert cb.vocab_sizes[-1] == cb.metrics["items_per_id_max"]
    assert (cb.semantic_ids.max(0) < np.array(cb.vocab_sizes)).all()


def test_disambiguation_ranks_equal_a_running_count_per_code_tuple():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 3, (2000, 3))
    start = {(0, 0, 0): 5, (1, 2, 1): 2}
    for given in (None, start):
        seen, want = dict(given or {}), []
        for row in map(tuple, codes.tolist()):
            want.append(seen.get(row, 0))
            seen[row] = want[-1] + 1
        assert assign_disambiguation(codes, given).tolist() == want
    assert assign_disambiguation(np.zeros((0, 3), dtype=np.int64)).shape == (0,)


def test_holders_counts_the_existing_rows_of_each_wanted_id():
    from onerec.tokenizer.codebook import holders

    rng = np.random.default_rng(3)
    codes = rng.integers(0, 4, (3000, 3))
    wanted = rng.integers(0, 5, (200, 3))  # some hold a code 4 that no existing row has
    count: dict[tuple[int, ...], int] = {}
    for row in map(tuple, codes.tolist()):
        count[row] = count.get(row, 0) + 1
    expect = {tuple(r): count[tuple(r)] for r in wanted.tolist() if tuple(r) in count}
    assert holders(codes, wanted) == expect and expect
    assert holders(codes[:0], wanted) == {} and holders(codes, wanted[:0]) == {}

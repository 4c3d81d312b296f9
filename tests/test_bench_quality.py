"""bench.quality: published Amazon Beauty rows are shown for Amazon Beauty only."""

from __future__ import annotations

import json

import numpy as np

from bench import quality
from onerec.data.sequences import load_beauty

from .conftest import shared_dataset


def _beauty_format_folder(path, n_users: int = 30, n_items: int = 40) -> None:
    """A small folder in the amazon-beauty format (sequential_data, datamaps, item_text)."""
    rng = np.random.default_rng(0)
    lines = [" ".join(map(str, [u, *rng.choice(np.arange(1, n_items + 1), rng.integers(5, 10),
                                               replace=False)]))
             for u in range(1, n_users + 1)]
    (path / "sequential_data.txt").write_text("\n".join(lines) + "\n")
    asins = {f"B{i:05d}": str(i) for i in range(1, n_items + 1)}
    (path / "datamaps.json").write_text(json.dumps({"item2id": asins}))
    words = ["red", "blue", "lipstick", "shampoo", "cream", "serum", "mask", "oil"]
    (path / "item_text.txt").write_text("".join(
        f"{a} {words[i % 8]} {words[(3 * i) % 8]}\n" for a, i in
        ((a, int(i)) for a, i in asins.items())))


def test_other_data_in_the_beauty_format_gets_no_published_rows(tmp_path, monkeypatch, capsys):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    _beauty_format_folder(data_dir)
    data = load_beauty(data_dir)
    assert not quality.is_amazon_beauty(data)
    rows, note = quality.published_rows(data)
    assert rows == [] and "withheld" in note
    # the whole benchmark on it: our rows, no published ones, the note, the load average
    monkeypatch.setenv("ONEREC_NO_TUNING", "1")  # no re-exec of the test process
    result = quality.main(["--dataset", "beauty", "--data-dir", str(data_dir), "--preset", "tiny",
                           "--no-sasrec", "--eval-every", "0", "--beam", "4", "--threads", "1",
                           "--set", "train.max_steps=2", "--set", "train.warmup_steps=1",
                           "--set", "serve.beam_width=4",  # the tiny preset's limit is 64
                           "--out", str(tmp_path / "out")])
    names = [name for name, *_ in result["rows"]]
    # the Beauty defaults train the item head and keep a transition memory: each scorer's
    # re-ranking share is a row of its own
    assert names == ["OneRec (ours)", "OneRec, item head re-rank only (no transition memory)",
                     "OneRec, beam order (no re-rank)", "popularity", "item transitions"]
    assert all("coverage@10" in m for _, m, _ in result["rows"])
    # every model with lists is split by whether (last item -> target) was seen in training
    assert [n for n, _ in result["by_transition"]] == ["OneRec (ours)", "popularity",
                                                       "item transitions"]
    assert 0.0 <= result["transition_share"] <= 1.0
    out = capsys.readouterr().out
    assert "occurs in training" in out
    assert "published TIGER / SASRec rows withheld" in out and "(published)" not in out
    assert "load average" in out
    # the probes of the trained model (bench.heldout_shift) on the run it left
    from bench import heldout_shift

    probes = heldout_shift.main(["--run", str(tmp_path / "out" / "beauty"), "--data-dir",
                                 str(data_dir), "--users", "10", "--sasrec-minutes", "0.05",
                                 "--beam", "4", "--threads", "1"])
    assert sorted(probes) == ["shorter", "skip", "test", "valid"]
    for m in probes.values():
        assert 0.0 <= m["seen share"] <= 1.0 and 0.0 <= m["OneRec all"] <= 1.0
        assert m["transitions seen"] != m["transitions seen"] or m["transitions seen"] > 0


def test_amazon_beauty_gets_the_published_rows():
    data = load_beauty(shared_dataset("amazon-beauty"))
    assert quality.is_amazon_beauty(data)
    rows, note = quality.published_rows(data)
    assert note is None and [r[0] for r in rows] == list(quality.PUBLISHED)


def test_same_size_is_not_enough_every_count_must_match():
    from onerec.data.sequences import SequenceData

    users, items, n = quality.BEAUTY_COUNTS
    # right users and items, one interaction short
    seqs = {u: [1, 2, 3] for u in range(users)}
    seqs[0] = [1, 2, items]
    data = SequenceData("beauty", seqs, items)
    assert sum(len(s) for s in seqs.values()) != n
    assert not quality.is_amazon_beauty(data)
    assert quality.published_rows(data)[0] == []

"""bench.ablation: a fixed-step validation row, split by seen item-to-item transitions."""

from __future__ import annotations

from bench import ablation
from onerec.data.sequences import load_beauty

from .test_bench_quality import _beauty_format_folder


def test_ablation_row_on_beauty_format_data(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    _beauty_format_folder(data_dir)
    monkeypatch.setenv("ONEREC_NO_TUNING", "1")  # no re-exec of the test process
    res = ablation.main(["--data-dir", str(data_dir), "--preset", "tiny", "--steps", "2",
                         "--beam", "4", "--more-beams", "8", "--more-weights", "1,2", "--n-valid", "20", "--set", "train.warmup_steps=1", "--set", "serve.beam_width=4",
                         "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cb")])
    assert res["steps"] == 2 and res["n_valid"] == 20
    # the Beauty defaults train the item head: every re-ranking weight is scored
    assert sorted(res["by_item_score_weight"]) == sorted(ablation.SCORE_WEIGHTS)
    for row in res["by_item_score_weight"].values():
        assert {"recall@10", "seen recall@10", "unseen recall@10", "legality"} <= set(row)
        assert row["legality"] == 1.0
    assert 0.0 <= res["transition_seen_share"] <= 1.0
    # the wider beam is scored at each asked weight, with the same columns
    assert list(res["by_beam"]) == [8] and sorted(res["by_beam"][8]) == ["w1 prior1", "w2 prior1"]
    for row in res["by_beam"][8].values():
        assert row["legality"] == 1.0 and "seen recall@10" in row


def test_shifted_validation_history_ends_with_an_item_new_to_the_user(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    _beauty_format_folder(data_dir)
    monkeypatch.setenv("ONEREC_NO_TUNING", "1")
    res = ablation.main(["--data-dir", str(data_dir), "--preset", "tiny", "--steps", "1",
                         "--beam", "4", "--n-valid", "10", "--shifted", "--sasrec", "--set", "serve.beam_width=4", "--set",
                         "train.warmup_steps=1", "--out", str(tmp_path / "out"),
                         "--cache", str(tmp_path / "cb")])
    assert res["shifted"] is True and res["steps"] == 1
    # the SASRec reference row, on the same users with the same columns
    assert {"recall@10", "ndcg@10", "seen recall@10", "coverage@10"} <= set(res["sasrec"])
    assert 0.0 <= res["sasrec"]["recall@10"] <= 1.0
    data = load_beauty(data_dir)
    split = ablation.selection_split(data, shifted=True)
    for user, hist, target in split.valid:
        seq = data.sequences[user]
        assert split.train[user] == seq[:-3] and target == seq[-2]
        assert hist[-1] == seq[-3]  # the history's last item is not in the user's training
    # its own codebook: the cache key differs from the unshifted one
    assert len(list((tmp_path / "cb").iterdir())) == 1


"""bench.ablation: a fixed-step validation row, split by seen item-to-item transitions."""

from __future__ import annotations

from bench import ablation

from .test_bench_quality import _beauty_format_folder


def test_ablation_row_on_beauty_format_data(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    _beauty_format_folder(data_dir)
    monkeypatch.setenv("ONEREC_NO_TUNING", "1")  # no re-exec of the test process
    res = ablation.main(["--data-dir", str(data_dir), "--preset", "tiny", "--steps", "2",
                         "--beam", "4", "--more-beams", "8", "--n-valid", "20", "--set", "train.warmup_steps=1",
                         "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cb")])
    assert res["steps"] == 2 and res["n_valid"] == 20
    # the Beauty defaults train the item head: every re-ranking weight is scored
    assert sorted(res["by_item_score_weight"]) == sorted(ablation.SCORE_WEIGHTS)
    for row in res["by_item_score_weight"].values():
        assert {"recall@10", "seen recall@10", "unseen recall@10", "legality"} <= set(row)
        assert row["legality"] == 1.0
    assert 0.0 <= res["transition_seen_share"] <= 1.0
    assert list(res["by_beam"]) == [8] and res["by_beam"][8]["legality"] == 1.0

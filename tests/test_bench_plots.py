"""`python -m bench.plots` on a made-up run folder (the layout `onerec demo` leaves): every plot
whose input is there is a real PNG, one whose input is missing is skipped, and the generation
plot reads the JSON `bench.generation --json` writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from bench.plots import generation_png, main
from onerec.ab import analyze
from onerec.tokenizer import Codebook
from tests.test_run_pages import _history, assert_png

ROOT = Path(__file__).resolve().parents[1]


def _run_folder(tmp: Path) -> Path:
    run = tmp / "demo"
    for i, name in enumerate(("onerec-continuous-training-1", "onerec-continuous-training-2")):
        model = run / "pipeline" / "kfp" / name / "pretrain" / "model"
        model.mkdir(parents=True)
        (model / "history.json").write_text(json.dumps(_history(20 + 10 * i)))
    rng = np.random.default_rng(0)
    Codebook.from_codes(rng.normal(size=(2, 8, 4)).astype(np.float32),
                        np.arange(200, dtype=np.int64) + 1, rng.integers(0, 8, size=(200, 2))
                        ).save(run / "pipeline" / "state" / "production" / "codebook", plot=False)
    fb = pd.DataFrame({"user_id": np.arange(400), "variant": ["stable"] * 300 + ["canary"] * 100,
                       "reward": rng.normal(1.0, 0.3, 400)})
    (run / "ab").mkdir()
    fb.to_parquet(run / "ab" / "feedback.parquet")
    (run / "report.json").write_text(json.dumps({"ab": {"result": analyze(fb).to_dict()}},
                                                default=float))
    return run


def test_plots_of_a_run_folder_are_real_pngs_and_missing_inputs_are_skipped(tmp_path, capsys):
    run = _run_folder(tmp_path)
    gen = ROOT / "docs" / "img" / "generation-2026-12-01.json"
    written = main(["--run", str(run), "--out", str(tmp_path / "img"),
                    "--generation", str(gen)])
    assert set(written) == {"training-curves.png", "codebook.png", "ab-arms.png",
                            "generation-latency.png"}
    for path in written.values():
        assert_png(Path(path).read_bytes())
    assert "align-curves.png: skipped" in capsys.readouterr().out  # no align history


def test_generation_plot_reads_the_bench_generation_summary():
    summary = {"32/fast": {"p50": 16.8, "p99": 20.7, "b16": 303.0, "b64": 497.0},
               "128/fast": {"p50": 21.6, "p99": 24.1, "b16": 184.0, "b64": 249.0},
               "32/textbook": {"p50": 36.2, "p99": 40.3, "b16": float("nan"),
                               "b64": float("nan")},
               "128/textbook": {"p50": 85.5, "p99": 98.8, "b16": None, "b64": None},
               "32/onnx_vs_fast_p50": 9.9}
    assert_png(generation_png(summary))
    assert generation_png({"32/onnx_vs_fast_p50": 9.9}) is None

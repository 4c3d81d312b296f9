"""A 2-process gloo DDP smoke run under torchrun: both ranks train and end with equal weights."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

SCRIPT = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {root!r})
    torch.set_num_threads(1)
    from onerec.distributed import init_from_env, shutdown
    from tests.test_train import fixture_data, VOCAB
    from onerec.config import Config
    from onerec.train import train
    rank, world = init_from_env()
    assert world == 2, world
    cfg = Config.from_preset("tiny", ["train.max_steps=8", "train.checkpoint_every=4"])
    _, _, codes, reqs = fixture_data(cfg)
    model, res = train(cfg, reqs, codes, VOCAB, sys.argv[1])
    torch.save(model.state_dict(), f"{{sys.argv[1]}}/rank{{rank}}.pt")
    shutdown()
""")


def test_two_process_gloo_ddp_trains_with_identical_replicas(tmp_path):
    root = str(Path(__file__).resolve().parents[1])
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT.format(root=root))
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", str(script), str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    a = torch.load(tmp_path / "rank0.pt")
    b = torch.load(tmp_path / "rank1.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (tmp_path / "checkpoint" / "meta.json").exists()  # written by rank 0 only

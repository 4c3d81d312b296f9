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


MOE_SCRIPT = textwrap.dedent("""
    import sys, torch
    import torch.distributed as dist
    sys.path.insert(0, {root!r})
    torch.set_num_threads(1)
    from tests.test_ddp import moe_fixture, moe_steps
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    moe, x = moe_fixture()
    ddp = torch.nn.parallel.DistributedDataParallel(moe)  # no find_unused_parameters
    half = x.shape[0] // 2
    moe_steps(ddp, x[rank * half:(rank + 1) * half])
    if rank == 0:
        torch.save(moe.state_dict(), sys.argv[1])
    dist.destroy_process_group()
""")


def moe_fixture() -> tuple[torch.nn.Module, torch.Tensor]:
    """A 2-expert top-1 MoE whose router sends x[0] > 0 to expert 0 and the rest to expert 1,
    and a global batch whose first half (rank 0's) is all x[0] > 0: rank 0 routes no token to
    expert 1."""
    from onerec.moe import MoEFeedForward

    torch.manual_seed(0)
    moe = MoEFeedForward(d_model=4, hidden=8, n_experts=2, top_k=1)
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[0, 0], moe.router.weight[1, 0] = 50.0, -50.0
    x = torch.randn(16, 4)
    x[:8, 0] = x[:8, 0].abs() + 0.5
    x[8:, 0] = torch.tensor([1.0, -1.0] * 4)
    return moe, x


def moe_steps(model: torch.nn.Module, x: torch.Tensor, steps: int = 3) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        y, balance = model(x)
        ((y ** 2).mean() + 0.01 * balance).backward()
        opt.step()
        opt.zero_grad()


def test_moe_under_ddp_matches_one_process_when_a_rank_routes_nothing_to_an_expert(tmp_path):
    """An expert that gets no token on one rank still takes part in DDP's gradient all-reduce
    (a zero gradient), so plain DDP neither hangs nor fails, and the run equals one process
    on the same global batch."""
    root = str(Path(__file__).resolve().parents[1])
    script = tmp_path / "moe_ddp.py"
    script.write_text(MOE_SCRIPT.format(root=root))
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", str(script),
           str(tmp_path / "ddp.pt")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    one, x = moe_fixture()
    chosen = one.router(x).argmax(-1)
    assert (chosen[:8] == 0).all() and (chosen[8:] == 1).any()  # rank 0: expert 1 idle
    moe_steps(one, x)
    got = torch.load(tmp_path / "ddp.pt")
    for k, v in one.state_dict().items():
        torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-6, msg=k)

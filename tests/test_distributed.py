"""2-process gloo DDP runs under torchrun, each compared with one process on the same global
batch: DDP keeps its replicas equal by construction, so only a one-process reference shows
that the ranks' shards and the gradient all-reduce add up to the global batch's step."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import torch

ROOT = str(Path(__file__).resolve().parents[1])

# no dropout (tiny's default) and no MoE balance loss: both depend on which rank draws or routes
# what (the balance loss is a product of per-batch means, so a rank's half-batch value does not
# average to the global batch's); top-2 of 2 experts, so the router still learns through the
# gate weights (top-1's renormalised weight is 1: no gradient); day-long requests, so requests
# hold 1 to 5 targets and the two ranks' shards hold unequal target counts
TRAIN_OVERRIDES = ["train.max_steps=8", "train.checkpoint_every=4", "model.top_k_experts=2",
                   "model.balance_loss_weight=0", "data.request_gap_ms=86400000"]

TRAIN_SCRIPT = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {root!r})
    torch.set_num_threads(1)
    from onerec.distributed import init_from_env, shutdown
    from tests.test_distributed import train_tiny
    rank, world = init_from_env()
    assert world == 2, world
    state = train_tiny(sys.argv[1])
    torch.save(state, f"{{sys.argv[1]}}/rank{{rank}}.pt")
    shutdown()
""")


def torchrun2(tmp_path: Path, script: str, *args: str, timeout: int = 180) -> None:
    """Run `script` (formatted with the repo root) in 2 gloo processes under torchrun."""
    path = tmp_path / "ddp_script.py"
    path.write_text(script.format(root=ROOT))
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", str(path), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert res.returncode == 0, res.stderr[-3000:]


def assert_same_weights(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor],
                        rtol: float, atol: float) -> None:
    assert got.keys() == want.keys()
    for k, v in want.items():
        torch.testing.assert_close(got[k], v, rtol=rtol, atol=atol, msg=lambda m, k=k: f"{k}: {m}")


def tiny_run() -> tuple[Any, Any, torch.Tensor]:
    """-> (Config, Requests, item codes) of the DDP parity run."""
    from onerec.config import Config
    from tests.test_train import fixture_data

    cfg = Config.from_preset("tiny", TRAIN_OVERRIDES)
    _, _, codes, reqs = fixture_data(cfg)
    return cfg, reqs, codes


def train_tiny(out_dir: str | Path) -> dict[str, torch.Tensor]:
    """`onerec.train.train` on the tiny run (DDP when started under torchrun) -> its weights."""
    from onerec.train import train
    from tests.test_train import VOCAB

    cfg, reqs, codes = tiny_run()
    model, _ = train(cfg, reqs, codes, VOCAB, out_dir, resume=False)
    return model.state_dict()


def test_two_process_gloo_ddp_equals_one_process_on_the_global_batch(tmp_path):
    """Each rank trains on its strided half of the same global batch (onerec.train), DDP
    all-reduces the gradients and the trainer weighs each rank's loss by its share of the global
    batch's targets: every step is then the one-process step on the whole global batch, and
    after 8 AdamW steps both replicas hold its weights. It fails if the ranks' gradients are
    not all-reduced or both ranks read the same shard (max gap ~8e-3), or if each rank's mean
    over its own targets were averaged as if the ranks held equal counts (~5e-3).

    Tolerance (atol 1e-5, rtol 1e-4): the two runs sum the same float32 terms in a different
    order (two half batches and an all-reduce), which leaves most weights within 1e-6 after 8
    steps; the largest gaps (~3e-6) are in the attention key biases, whose true gradient is
    zero (softmax ignores a shift shared by all keys), so AdamW's update there is normalised
    rounding noise."""
    from onerec.stream import RequestStream

    cfg, reqs, _ = tiny_run()
    stream = RequestStream(reqs, cfg.train.batch_size, seed=cfg.train.seed, shuffle_window=4096)
    off = reqs.target_offsets
    counts = [off[idx + 1] - off[idx] for idx in (stream.next_indices() for _ in range(8))]
    assert any(n[0::2].sum() != n[1::2].sum() for n in counts)  # ranks' target counts differ
    torchrun2(tmp_path, TRAIN_SCRIPT, str(tmp_path), timeout=300)
    assert (tmp_path / "checkpoint" / "meta.json").exists()  # written by rank 0 only
    one = train_tiny(tmp_path / "one")
    for rank in (0, 1):
        assert_same_weights(torch.load(tmp_path / f"rank{rank}.pt"), one, rtol=1e-4, atol=1e-5)


MOE_SCRIPT = textwrap.dedent("""
    import sys, torch
    import torch.distributed as dist
    sys.path.insert(0, {root!r})
    torch.set_num_threads(1)
    from tests.test_distributed import moe_fixture, moe_steps
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
    torchrun2(tmp_path, MOE_SCRIPT, str(tmp_path / "ddp.pt"))
    one, x = moe_fixture()
    chosen = one.router(x).argmax(-1)
    assert (chosen[:8] == 0).all() and (chosen[8:] == 1).any()  # rank 0: expert 1 idle
    moe_steps(one, x)
    assert_same_weights(torch.load(tmp_path / "ddp.pt"), one.state_dict(), rtol=1e-5, atol=1e-6)

"""Process-group set-up for DDP, the same under torchrun on a laptop, in a TrainJob and in a
PyTorchJob.

torchrun (on a laptop, and in a TrainJob's pods: Kubeflow Trainer passes it the node count,
rank and master as PET_* variables) and the Kubeflow Training Operator export RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT; `init_from_env` starts the process group from them (gloo on CPU,
nccl on CUDA) and is a no-op for a single process, so training code never branches on the
launcher.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_from_env() -> tuple[int, int]:
    """-> (rank, world_size); initialises the default process group when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return dist.get_rank(), dist.get_world_size()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

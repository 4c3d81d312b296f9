"""Run a training step (pretrain, align) in-process or as a cluster job: one call, three runners.

Locally (`launcher="local"`) the step is the `onerec.stages` function in the component's own
process. On a cluster the component stages its inputs on the shared data volume (ROOT is the
`onerec-data` PVC, mounted at the same path in the step and in the training pods), creates a job
whose pods run the same function through `onerec pipeline step ...`, waits for the job's
terminal condition and copies its output folder back into the component's artifact. The job is
one of two kinds, the same pods either way (`components.launch.jobs`: Config in a ConfigMap, GPU
nodes, restricted security, DDP):

- `launcher="trainjob"` (the cluster default): a TrainJob on Kubeflow Trainer v2's
  `torch-distributed` runtime (`components.launch.trainjob`), through the Trainer SDK.
- `launcher="pytorchjob"`: a PyTorchJob on the Training Operator v1
  (`components.launch.pytorchjob`), for clusters that have not moved to Trainer.

The job is the only thing that differs; what trains is identical.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from components.launch.jobs import CLUSTER_LAUNCHER, LAUNCHERS, JobLauncher, JobSpec, to_manifest
from components.launch.pytorchjob import TrainingClientLauncher, build_pytorchjob
from components.launch.trainjob import TrainerClientLauncher, build_trainjob
from onerec import stages
from onerec.config import Config

__all__ = ["CLUSTER_LAUNCHER", "LAUNCHERS", "StepOptions", "preview_job", "run_local",
           "run_step", "step_command"]


@dataclass
class StepOptions:
    """What a training step needs beyond the Config (all of it travels on the command line)."""

    root: str
    warm_start: bool = True
    epochs: float = 1.0
    max_steps: int = 0  # 0: `epochs` passes
    time_budget_s: float = 0.0  # 0: no budget


def check_launcher(launcher: str) -> None:
    if launcher not in LAUNCHERS:
        raise stages.StageError(f"launcher: must be one of {list(LAUNCHERS)}, got {launcher!r}")


def step_command(step: str, inputs: dict[str, str], out: str, opts: StepOptions) -> list[str]:
    """The `onerec pipeline step` command a training pod runs (`--config` is appended by the
    job builders, pointing at the ConfigMap)."""
    cmd = ["onerec", "pipeline", "step", step, "--out", out, "--root", opts.root]
    for name, path in inputs.items():
        cmd += [f"--{name}", path]
    if step == "pretrain":
        cmd += ["--epochs", str(opts.epochs), "--max-steps", str(opts.max_steps),
                "--warm-start" if opts.warm_start else "--cold-start"]
    cmd += ["--time-budget", str(opts.time_budget_s)]
    return cmd


def run_local(step: str, cfg: Config, inputs: dict[str, str], out: str,
              opts: StepOptions) -> dict[str, Any]:
    """The step in this process (the laptop path, and what each pod of the job runs)."""
    budget = opts.time_budget_s or None
    if step == "pretrain":
        return stages.pretrain(cfg, inputs["snapshot"], inputs["codebook"], out, root=opts.root,
                               warm_start=opts.warm_start, epochs=opts.epochs,
                               max_steps=opts.max_steps or None, time_budget_s=budget)
    if step == "align":
        return stages.align(cfg, inputs["snapshot"], inputs["codebook"], inputs["pretrained"],
                            inputs["reward"], out, time_budget_s=budget)
    raise stages.StageError(f"unknown training step {step!r} (pretrain or align)")


def job_name(step: str, run_id: str) -> str:
    """A DNS-1123 name (the job's and its ConfigMap's), unique per run and step."""
    slug = re.sub(r"[^a-z0-9-]+", "-", f"onerec-{step}-{run_id}".lower()).strip("-")
    return slug[:52].rstrip("-")


def stage_job(step: str, cfg: Config, inputs: dict[str, str], opts: StepOptions, run_id: str,
              spec: JobSpec) -> tuple[JobSpec, Path, dict[str, str]]:
    """Copy the inputs under ROOT/jobs/<name>/ and the JobSpec that trains on them."""
    name = job_name(step, run_id)
    work = Path(opts.root) / "jobs" / name
    staged = {}
    for key, src in inputs.items():
        dst = work / "in" / key
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst)
        staged[key] = str(dst)
    out = work / "out"
    job = replace(spec, name=name, command=step_command(step, staged, str(out), opts))
    return job, out, staged


def make_launcher(launcher: str, client: Any = None) -> JobLauncher:
    """The cluster launcher by name; `client` is its SDK client (TrainerClient or
    TrainingClient), made from the pod's service account when None."""
    check_launcher(launcher)
    if launcher == "trainjob":
        return TrainerClientLauncher(trainer_client=client)
    if launcher == "pytorchjob":
        return TrainingClientLauncher(training_client=client)
    raise stages.StageError("launcher: 'local' runs in this process, not as a cluster job")


def run_step(step: str, cfg: Config, inputs: dict[str, str], out: str, opts: StepOptions, *,
             launcher: str = "local", run_id: str = "run", spec: JobSpec | None = None,
             client: Any = None, wait_timeout_s: int = 86_400) -> dict[str, Any]:
    """Run `step` with the chosen launcher; returns the step's summary either way."""
    check_launcher(launcher)
    if launcher == "local":
        return run_local(step, cfg, inputs, out, opts)
    runner = make_launcher(launcher, client)
    job, job_out, _ = stage_job(step, cfg, inputs, opts, run_id, spec or JobSpec())
    runner.launch(cfg, job)
    runner.wait(job.name, job.namespace, wait_timeout_s)  # raises on Failed or timeout
    if Path(out).exists():
        shutil.rmtree(out)
    shutil.copytree(job_out, out)
    return json.loads((Path(out) / "summary.json").read_text())


def preview_job(step: str, cfg: Config, opts: StepOptions, run_id: str,
                spec: JobSpec | None = None, *,
                launcher: str = CLUSTER_LAUNCHER) -> dict[str, Any]:
    """The job manifest a cluster run of `step` would create (no copying, no cluster)."""
    check_launcher(launcher)
    inputs = {"snapshot": "SNAPSHOT", "codebook": "CODEBOOK"}
    if step == "align":
        inputs.update({"pretrained": "PRETRAINED", "reward": "REWARD"})
    work = Path(opts.root) / "jobs" / job_name(step, run_id)
    staged = {k: str(work / "in" / k) for k in inputs}
    job = replace(spec or JobSpec(), name=job_name(step, run_id),
                  command=step_command(step, staged, str(work / "out"), opts))
    if launcher == "pytorchjob":
        return to_manifest(build_pytorchjob(cfg, job))
    if launcher == "trainjob":
        return to_manifest(build_trainjob(cfg, job))
    raise stages.StageError("launcher: 'local' creates no job to preview")

"""`onerec pipeline compile|run|submit|step`: the continuous-training pipeline (issue #8).

A self-contained sub-app: `onerec/app/cli.py` calls `register(app)`. kfp and the pipeline modules
are imported inside the commands, so the rest of the CLI starts without them.

- `compile OUT.yaml`: the cluster variant (PVC, GPU pool, TrainJobs) or `--local`'s.
- `run --local [--cycles N]`: N successive days under kfp.local; cycle k+1 warm-starts from
  cycle k's published model and trains past its watermark; prints and writes a report.
- `submit --host URL [--schedule CRON]`: upload, then run once or create a recurring run.
- `step pretrain|align`: what a TrainJob or PyTorchJob pod runs (the same `onerec.stages` function).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from onerec.app.cli_options import ConfigOpt, PresetOpt, SetOpt, load_config
from onerec.config import Config, ConfigError

console = Console()
err_console = Console(stderr=True)
pipeline_app = typer.Typer(help="The continuous-training pipeline on Kubeflow: compile, run "
                                "locally (kfp.local), submit.", no_args_is_help=True)

StagesOpt = Annotated[str | None, typer.Option(
    "--stages", help="Comma list of stages [default: every stage installed here].")]


def _fail(msg: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {msg}", highlight=False)
    return typer.Exit(code)


def _config(config: Path | None, preset: str | None, overrides: list[str] | None,
            default_preset: str) -> Config:
    try:
        return load_config(config, preset, overrides, default_preset=default_preset)
    except ConfigError as e:
        raise _fail(f"config: {e}") from None


def _stages(text: str | None) -> str:
    from onerec import stages

    try:
        return ",".join(stages.parse_stages(text) if text else stages.default_stages())
    except stages.StageError as e:
        raise _fail(str(e)) from None


@pipeline_app.command("compile")
def compile_cmd(out: Annotated[Path, typer.Argument(help="Where the pipeline YAML goes.")],
                local: Annotated[bool, typer.Option(
                    "--local", help="The local variant (no PVC, no GPU settings).")] = False,
                ) -> None:
    """Compile the pipeline to YAML (the cluster variant unless --local)."""
    from pipelines.continuous import compile_pipeline

    path = compile_pipeline(out, cluster=not local)
    console.print(f"wrote {path} ({'local' if local else 'cluster'} variant)")


@pipeline_app.command("run")
def run_cmd(
    local: Annotated[bool, typer.Option("--local", help="Run under kfp.local (required: the "
                                        "cluster path is `submit`).")] = False,
    cycles: Annotated[int, typer.Option(help="Successive days to run.")] = 2,
    start: Annotated[str, typer.Option(help="`until` of the first cycle (YYYY-MM-DD, UTC): "
                                       "events before it exist.")] = "2022-04-28",
    data_dir: Annotated[Path, typer.Option(help="KuaiRand-layout folder.")] =
        Path("data/kuairand-pure"),
    out: Annotated[Path, typer.Option(help="Run folder: state/ (production, GitOps repo, "
                                      "records), kfp/ (artifacts), report.*")] =
        Path("runs/pipeline"),
    fresh: Annotated[bool, typer.Option(help="Start from an empty state (no production "
                                        "model); off: continue from the last run.")] = True,
    stages_: StagesOpt = None,
    train_minutes: Annotated[float, typer.Option(help="Safety cap on each training stage's "
                                                 "wall time per cycle.")] = 1.0,
    epochs: Annotated[float, typer.Option(help="Pretraining passes over each cycle's new "
                                          "requests.")] = 1.0,
    max_steps: Annotated[int, typer.Option(help="Pretraining steps per cycle (0: from "
                                           "--epochs).")] = 0,
    eval_users: Annotated[int, typer.Option(help="Users the gate measures.")] = 500,
    tolerance: Annotated[float, typer.Option(help="Gate: relative tolerance.")] = 0.05,
    popularity_floor: Annotated[bool, typer.Option(help="Gate: block a candidate "
                                                   "significantly below popularity.")] = True,
    cold: Annotated[bool, typer.Option("--cold", help="Do not warm-start (from scratch "
                                       "every cycle).")] = False,
    config: ConfigOpt = None, preset: PresetOpt = None, set_: SetOpt = None,
) -> None:
    """Run N continuous-training cycles on successive days under kfp.local; print the report."""
    from onerec.app.pipeline_local import CycleOptions, cycle_line, run_cycles
    from onerec.stages import StageError, day_ms

    if not local:
        raise _fail("run: only --local is supported here; use `onerec pipeline submit` for a "
                    "Kubeflow Pipelines server")
    if cycles < 1:
        raise _fail("--cycles: must be >= 1")
    try:
        day_ms(start)
    except StageError as e:
        raise _fail(f"--start: {e}") from None
    cfg = _config(config, preset, set_, "tiny")
    stage_list = _stages(stages_)
    console.print(f"stages: {stage_list}  config: preset={cfg.preset} "
                  f"fingerprint={cfg.fingerprint()}", highlight=False)
    opts = CycleOptions(cycles=cycles, start=start, stages_csv=stage_list,
                        train_minutes=train_minutes, epochs=epochs, max_steps=max_steps,
                        eval_users=eval_users,
                        tolerance=tolerance, popularity_floor=popularity_floor,
                        warm_start=not cold, fresh=fresh)
    run = run_cycles(
        cfg, data_dir, out, opts,
        on_start=lambda i, until: console.rule(f"cycle {i}: until {until}"),
        on_cycle=lambda i, c, wall: console.print(cycle_line(c, wall), highlight=False))
    if run.failed:
        raise _fail(f"{run.run_ids[-1]} failed: {run.failed}; report: {run.report_md}", 1)
    console.print(f"report: {run.report_md}  ({run.report_json})")


@pipeline_app.command("submit")
def submit_cmd(
    host: Annotated[str, typer.Option(help="Kubeflow Pipelines API endpoint.")],
    schedule: Annotated[str | None, typer.Option(help="KFP cron (6 fields, seconds first), "
                                                 "e.g. '0 0 2 * * *': a recurring run.")] = None,
    until: Annotated[str, typer.Option(help="Cycle day for a one-off run (default: today, "
                                       "UTC; a recurring run uses its scheduled day).")] = "",
    namespace: Annotated[str | None, typer.Option(help="Kubeflow profile namespace.")] = None,
    experiment: Annotated[str, typer.Option(help="KFP experiment.")] = "onerec",
    name: Annotated[str, typer.Option(help="Pipeline name on the server.")] =
        "onerec-continuous-training",
    stages_: StagesOpt = None,
    package: Annotated[Path, typer.Option(help="Where the compiled YAML is written.")] =
        Path("runs/pipeline/onerec-continuous-training.yaml"),
    config: ConfigOpt = None, preset: PresetOpt = None, set_: SetOpt = None,
) -> None:
    """Compile the cluster variant, upload it, and run it once or on a schedule."""
    from pipelines.continuous import compile_pipeline
    from pipelines.run import KfpServer, submit

    cfg = _config(config, preset, set_, "base")
    params = {"config_yaml": cfg.to_yaml(), "until": until, "stages_csv": _stages(stages_)}
    compile_pipeline(package, cluster=True)
    try:
        sub = submit(KfpServer(host, namespace), package, params, name=name,
                     experiment=experiment, schedule=schedule)
    except ValueError as e:
        raise _fail(str(e)) from None
    console.print_json(json.dumps({"pipeline_id": sub.pipeline_id, "run_id": sub.run_id,
                                   "recurring_run_id": sub.recurring_run_id, "cron": sub.cron}))


@pipeline_app.command("step")
def step_cmd(
    step: Annotated[str, typer.Argument(help="pretrain or align.")],
    out: Annotated[Path, typer.Option(help="Output model folder.")],
    root: Annotated[Path, typer.Option(help="ROOT (production model, records).")],
    snapshot: Annotated[Path, typer.Option(help="The validate step's snapshot.")],
    codebook: Annotated[Path, typer.Option(help="The refreshed codebook.")],
    pretrained: Annotated[Path | None, typer.Option(help="align: the pretrained model.")] = None,
    reward: Annotated[Path | None, typer.Option(help="align: the reward model.")] = None,
    epochs: Annotated[float, typer.Option(help="pretrain: passes over the requests.")] = 1.0,
    max_steps: Annotated[int, typer.Option(help="pretrain: steps (0: from epochs).")] = 0,
    warm_start: Annotated[bool, typer.Option("--warm-start/--cold-start")] = True,
    time_budget: Annotated[float, typer.Option(help="Seconds (0: none).")] = 0.0,
    config: ConfigOpt = None, preset: PresetOpt = None, set_: SetOpt = None,
) -> None:
    """One training step in this process: what each TrainJob or PyTorchJob pod runs (DDP)."""
    from components.launch.training import StepOptions, run_local
    from onerec.distributed import init_from_env
    from onerec.stages import StageError

    cfg = _config(config, preset, set_, "small")
    inputs = {"snapshot": str(snapshot), "codebook": str(codebook)}
    if step == "align":
        if pretrained is None or reward is None:
            raise _fail("step align: --pretrained and --reward are required")
        inputs.update({"pretrained": str(pretrained), "reward": str(reward)})
    init_from_env()
    try:
        res = run_local(step, cfg, inputs, str(out),
                        StepOptions(root=str(root), warm_start=warm_start, epochs=epochs,
                                    max_steps=max_steps, time_budget_s=time_budget))
    except StageError as e:
        raise _fail(str(e)) from None
    console.print_json(json.dumps(res, default=str))


def register(app: typer.Typer) -> None:
    """Add the `pipeline` command group to the main CLI."""
    app.add_typer(pipeline_app, name="pipeline")

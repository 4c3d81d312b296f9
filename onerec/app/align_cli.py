"""`onerec align`: P-Score reward model + ECPO preference alignment from a pretrained checkpoint.

A self-contained command: `onerec/app/cli.py` calls `register(app)`. It runs
`onerec.alignment.run_alignment` and writes `OUT/reward_model/` (unless `--reward-model` reuses
one), `OUT/align/checkpoint/` (the pretraining checkpoint format, so `onerec export` and serving
load it unchanged) and `OUT/metrics.json`. Errors a user can fix (bad config, missing or
mismatched checkpoint, codebook or reward model) print one red line and exit 2.

A run killed in the middle (`kill -9`, a preempted node) is continued by running the same
command again: with `--resume` (the default) it picks up `OUT/align/checkpoint` and the reward
model it saved, says so in one line, and ends with the weights an uninterrupted run would have.
`--no-resume` starts over in the same folder.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from onerec.app.cli_options import ConfigOpt, PresetOpt, SetOpt, load_config

console = Console()
err_console = Console(stderr=True)


def _fail(msg: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {msg}", highlight=False)
    return typer.Exit(2)


def _fmt(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def align_command(
    checkpoint: Annotated[Path, typer.Option(help="Pretrained checkpoint folder "
                                                  "(e.g. runs/demo/pretrain/train/checkpoint).")],
    codebook: Annotated[Path, typer.Option(help="The codebook it was trained with.")],
    data_dir: Annotated[Path, typer.Option(help="KuaiRand-layout folder.")] =
        Path("data/kuairand-pure"),
    out: Annotated[Path, typer.Option(help="Run folder: reward_model/, align/, metrics.json.")] =
        Path("runs/align"),
    reward_model: Annotated[Path | None, typer.Option(
        help="Reuse this reward-model folder instead of training one.")] = None,
    rm_minutes: Annotated[float, typer.Option(help="Reward-model training budget.")] = 2.0,
    steps: Annotated[int | None, typer.Option(help="Alignment rounds [default: align.steps].")]
        = None,
    minutes: Annotated[float | None, typer.Option(help="Alignment wall-time budget.")] = None,
    grpo: Annotated[bool, typer.Option("--grpo", help="Plain GRPO (align.early_clip=false).")]
        = False,
    config: ConfigOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    resume: Annotated[bool, typer.Option(
        "--resume/--no-resume", help="Continue an interrupted run from OUT/align/checkpoint "
                                     "(same final weights as an uninterrupted run); "
                                     "--no-resume starts over.")] = True,
) -> None:
    """Train the P-Score reward model (per-task AUC and calibration on the held-out days), then
    align the generator with ECPO (early-clipped GRPO) warm-started from CHECKPOINT."""
    from onerec.alignment import run_alignment
    from onerec.checkpoint import CheckpointError
    from onerec.config import ConfigError
    from onerec.data.schema import DataError
    from onerec.io import atomic_write_text
    from onerec.reward import RewardModelError
    from onerec.tokenizer.codebook import CodebookError

    overrides = [*(set_ or []), *(["align.early_clip=false"] if grpo else [])]
    try:
        cfg = load_config(config, preset, overrides)
    except ConfigError as e:
        raise _fail(f"config: {e}") from None
    for name, path in (("--checkpoint", checkpoint), ("--codebook", codebook)):
        if not path.is_dir():
            raise _fail(f"{name}: {path} is not a folder")

    def log(rec: dict) -> None:
        if "message" in rec:
            console.print(rec["message"], highlight=False, markup=False)
        elif "pg_loss" in rec:
            console.print(f"round {rec['step']:>5}  P-Score {rec['pscore']:.4f}  legality "
                          f"{rec['legality']:.3f}  KL {rec['kl']:.4f}  grad {rec['grad_norm']:.3f}"
                          f"  early-clip {rec['early_clip_frac']:.3f}", highlight=False)
        else:
            console.print(f"reward model step {rec['step']:>5}  loss {rec['loss']:.4f}",
                          highlight=False)

    try:
        res = run_alignment(cfg, data_dir, checkpoint, codebook, out, reward_model=reward_model,
                            rm_time_budget_s=rm_minutes * 60, steps=steps,
                            time_budget_s=minutes * 60 if minutes else None, log=log,
                            resume=resume)
    except (CheckpointError, RewardModelError, CodebookError, DataError) as e:
        raise _fail(str(e)) from None
    heldout = res["reward_model"].get("heldout")
    if heldout:
        table = Table(title="P-Score reward model, held-out days")
        for c in ("task", "AUC", "ECE", "mean pred", "mean observed"):
            table.add_column(c, justify="left" if c == "task" else "right")
        for task, m in heldout.items():
            table.add_row(task, *(_fmt(m[k]) for k in ("auc", "ece", "mean_pred", "mean_obs")))
        console.print(table)
    atomic_write_text(out / "metrics.json", json.dumps(res, indent=2, default=_json_safe))
    console.print(f"{res['algorithm']}: {res['align_steps']} rounds in {res['align_s']:.0f} s; "
                  f"checkpoint {res['checkpoint']}  metrics {out / 'metrics.json'}")


def _json_safe(v: Any) -> Any:
    return float(v) if hasattr(v, "__float__") else str(v)


def register(app: typer.Typer) -> None:
    """Add the `align` command to the main CLI."""
    app.command("align")(align_command)

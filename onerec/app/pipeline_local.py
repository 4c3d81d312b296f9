"""N continuous-training cycles under kfp.local: what `onerec pipeline run --local` and
`onerec demo` both run (one code path, so the demo shows the pipeline as it is).

Cycle k runs the pipeline as of day `start + k - 1`; ROOT (`<out>/state`) carries the production
model from one cycle to the next. The report (`<out>/report.json|md`, `onerec.app.cycle_report`) is
written after the last cycle, or after the one that failed. kfp and `pipelines` are imported
inside `run_cycles`, so importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onerec.config import Config


@dataclass
class CycleOptions:
    """The knobs of a local run (the `onerec pipeline run --local` options)."""

    cycles: int = 2
    start: str = "2022-04-28"
    stages_csv: str = ""  # "" = every stage installed here
    # a safety cap on each training stage's wall time (alignment gets half of it); the steps
    # are decided by `epochs` / `max_steps` and the Config, so a busy machine trains the same
    # model as an idle one, only later
    train_minutes: float = 1.0
    epochs: float = 1.0  # pretraining passes over the cycle's new requests
    max_steps: int = 0  # pretraining steps per cycle (0: from `epochs`)
    eval_users: int = 500
    tolerance: float = 0.05
    popularity_floor: bool = True  # the gate also blocks a candidate significantly below it
    warm_start: bool = True
    fresh: bool = True
    canary_last: bool = False  # the last cycle publishes a canary and does not promote it


@dataclass
class CyclesRun:
    """What a local run did: per cycle its record summary and wall time, and the report."""

    state: Path
    run_ids: list[str] = field(default_factory=list)
    summaries: list[dict[str, Any]] = field(default_factory=list)
    wall_s: dict[str, float] = field(default_factory=dict)
    failed: str | None = None  # the failing cycle's error, if one failed
    report_json: Path | None = None
    report_md: Path | None = None


def run_cycles(cfg: Config, data_dir: Path, out: Path, opts: CycleOptions, *,
               on_cycle: Callable[[int, dict[str, Any], float], None] | None = None,
               on_start: Callable[[int, str], None] | None = None,
               kfp_log: Path | None = None) -> CyclesRun:
    """Run `opts.cycles` cycles on successive days; stop at the first that fails.

    `kfp_log`: write kfp.local's output (every step's streamed logs) to this file instead of
    the terminal. `on_start(i, until)` / `on_cycle(i, summary, wall_s)` report progress."""
    from onerec import stages
    from onerec.app.cycle_report import cycle_summary, write_report
    from pipelines.run import cycle_days, local_params, run_local

    stage_list = opts.stages_csv or ",".join(stages.default_stages())
    if opts.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    run = CyclesRun(state=out / "state")
    days = cycle_days(opts.start, opts.cycles)
    for i, until in enumerate(days, 1):
        run_id = f"cycle-{i}-{until}"
        run.run_ids.append(run_id)
        if on_start is not None:
            on_start(i, until)
        params = local_params(cfg, until=until, run_id=run_id, root=run.state, data_dir=data_dir,
                              stages_csv=stage_list, warm_start=opts.warm_start,
                              train_budget_s=opts.train_minutes * 60,
                              align_budget_s=opts.train_minutes * 30, max_steps=opts.max_steps,
                              epochs=opts.epochs,
                              gate_max_users=opts.eval_users, gate_tolerance=opts.tolerance,
                              gate_popularity_floor=opts.popularity_floor,
                              promote=not (opts.canary_last and i == len(days)))
        t0 = time.perf_counter()
        try:
            with redirected(kfp_log):
                run_local(params, out / "kfp")
        except RuntimeError as e:
            run.failed = str(e)
        run.wall_s[run_id] = round(time.perf_counter() - t0, 1)
        summary = cycle_summary(run.state, run_id)
        run.summaries.append(summary)
        if on_cycle is not None:
            on_cycle(i, summary, run.wall_s[run_id])
        if run.failed:
            run.failed = "; ".join(f"{s}: {e}" for s, e in summary["failed"].items()) or run.failed
            break
    extra = {"wall_s": run.wall_s, "stages": stage_list, "config_fingerprint": cfg.fingerprint()}
    run.report_json, run.report_md = write_report(run.state, run.run_ids, out, extra)
    return run


@contextlib.contextmanager
def redirected(path: Path | None) -> Iterator[None]:
    """stdout and stderr into `path` (appended, a line at a time) while kfp.local (or Feast)
    runs; a no-op for None.

    kfp.local leaves a root-logger handler on the stdout it saw, the file: it is removed when
    the file closes, else every later warning (GE routes them through logging) prints a
    "Logging error" traceback about a closed file."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    before = list(root.handlers)
    # line-buffered: `Follow` tails the file while a step runs, and a block buffer held a
    # step's progress lines back until 8 KB had gathered (the demo's pretrain bar sat at
    # step 50 of 464 for two minutes, then jumped to done)
    with path.open("a", buffering=1) as f, contextlib.redirect_stdout(f), \
            contextlib.redirect_stderr(f):
        try:
            yield
        finally:
            for h in [h for h in root.handlers if h not in before]:
                if getattr(h, "stream", None) is f:
                    root.removeHandler(h)


def cycle_line(summary: dict[str, Any], wall_s: float) -> str:
    """One line per cycle for a terminal."""
    c = summary
    cb = c["codebook"]
    cand = c["candidate"].get("ndcg@10", float("nan"))
    prod = (f" vs production {c['production']['ndcg@10']:.4f}" if c["production"] else "")
    return (f"{c['run_id']}: codebook {cb['mode']} (+{cb['n_new_items']} videos), "
            f"{'warm' if c['warm_start'] else 'cold'} start, {c['n_requests']} requests after "
            f"watermark {c['watermark_in_ms']}, {c['steps']} steps, watermark -> "
            f"{c['watermark_out_ms']}; gate {c['gate']} (ndcg@10 {cand:.4f}{prod}); published "
            f"{c['published'] or '-'}; {wall_s} s")

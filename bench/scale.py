"""Scale: what the pipeline needs as the data grows (issue #17, "Data at scale").

    python -m bench.scale [--only data,catalogue] [--factors 1,10,100] [--baseline-factors 1,10]
                          [--sizes 10000,100000,1000000,10000000] [--codebook-sizes 256,1024]

One function per section, each returning table rows; `main` prints them (`--only` picks
sections). Sections:

- ``data``: peak memory of the pipeline's data stage (`onerec.stages.validate`: the log read,
  the batch cut, the Great Expectations suites, the snapshot and reference written) against
  the size of the event log. The logs are the shipped KuaiRand sample replicated `factor`
  times with shifted user ids (replica r's users are r * USER_OFFSET + the original id, at the
  original times, so every replica is the same traffic from other people: the days, the item
  table and the batch windows are unchanged and only the log grows), written as parquet in
  row groups of `eventlog.ROW_GROUP_ROWS`. Each run is a fresh subprocess; its peak RSS is the
  kernel's `ru_maxrss` for that child (`os.wait4`). The stage runs as a first cycle (no
  production model), so the whole log before `until` is the validated batch: the worst case.
  The baseline is the stage as it was before #17, in the same run: the log read whole
  (`kuairand.read_tables`), the batch validated at once (`validation.validate_tables`); it is
  run on the smaller logs only by default (at 100x it needs tens of GB).

- ``catalogue``: the catalogue's size, 10k to 10M items at K = 256 and 1024: the RQ-Kmeans
  fit and its peak memory, a 1% refresh, the valid-prefix tables' bytes, the exported graph,
  beam-512 latency in ONNX Runtime and the reference, the gate's evaluation per 1,000 users
  (`bench.scale_catalogue`, whose docstring says how; each cell a fresh process too).

The fitted exponent is the slope of log(peak RSS) against log(log rows): 0 is flat, 1 is
linear. Peak RSS includes the interpreter and its imports (torch, pandas, GX: some 470 MB),
so the growth per million rows (a linear fit) is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess  # nosec B404 # argv lists only, no shell
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from onerec.data import eventlog, kuairand

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "kuairand-pure"
UNTIL = "2022-05-09"  # the day after the shipped log's last day: the whole log is the batch
USER_OFFSET = 1_000_000  # replica r's user ids: r * USER_OFFSET + id (KuaiRand's are < 30,000)
SECTIONS = ("data", "catalogue")
MODES = ("streamed", "in-memory")


# -- the logs ------------------------------------------------------------------------------------
def _replicas(events: pd.DataFrame, factor: int, out_rows: int) -> Iterator[pd.DataFrame]:
    """`events` (time-ordered) `factor` times over, user ids shifted per replica, in time order:
    consecutive source slices, each replicated and stably sorted on time_ms (replica 0 first
    among equal times), about `out_rows` rows at a time."""
    step = max(1, out_rows // factor)
    for start in range(0, len(events), step):
        part = events.iloc[start:start + step]
        copies = [part.assign(user_id=part["user_id"] + r * USER_OFFSET) for r in range(factor)]
        both = pd.concat(copies, ignore_index=True)
        yield both.take(np.argsort(both["time_ms"].to_numpy(), kind="stable"))


def build_log(factor: int, dest: Path, src: Path = SAMPLE,
              row_group_rows: int = eventlog.ROW_GROUP_ROWS) -> Path:
    """A data folder whose log is `src`'s `factor` times over (see the module docstring), with
    `src`'s item and user tables. Built once: a folder with a matching manifest is reused."""
    manifest = dest / "manifest.json"
    files = kuairand.log_files(src)
    want = {"factor": factor, "row_group_rows": row_group_rows, "user_offset": USER_OFFSET,
            "source_rows": eventlog.log_rows(files)}
    if manifest.is_file() and json.loads(manifest.read_text()) == want:
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for f in files:
        source = pd.read_parquet(f)  # one shipped file: 130k rows at most
        if not source["time_ms"].is_monotonic_increasing:
            raise ValueError(f"{f}: time_ms out of order; replicas would not be time-ordered")
        eventlog.write_log(_replicas(source, factor, row_group_rows), dest / f.name,
                           row_group_rows=row_group_rows)
    for name in (kuairand.ITEMS_FILE, kuairand.USERS_FILES[0]):
        shutil.copy(src / name, dest / name)
    (dest / "manifest.json").write_text(json.dumps(want))
    return dest


# -- one measured run ----------------------------------------------------------------------------
def _worker(mode: str, data_dir: str, until: str, out: str) -> dict[str, Any]:
    """The data stage, in this (fresh) process: `streamed` is `stages.validate` as it is;
    `in-memory` is what it did before #17 (the same windows, suites and outputs)."""
    from onerec import stages, validation
    from onerec.config import Config

    cfg = Config()
    t0 = time.perf_counter()
    if mode == "streamed":
        snap = stages.validate(cfg, data_dir, Path(out) / "snapshot", until=until,
                               root=Path(out) / "root")
        return {"batch_rows": snap["n_batch_events"], "fingerprint": snap["fingerprint"],
                "success": snap["validation_success"], "stage_s": time.perf_counter() - t0}
    import dataclasses
    import hashlib

    raw = kuairand.read_tables(data_dir)
    until_ms = stages.day_ms(until)
    batch = raw.events[raw.events["time_ms"] < until_ms].reset_index(drop=True)
    report = validation.validate_tables(dataclasses.replace(raw, events=batch), cfg,
                                        now_ms=until_ms, docs_dir=Path(out) / "data_docs")
    validation.write_report(report, Path(out) / "validation")
    validation.save_reference(validation.compute_reference(batch, raw.items, cfg.validation),
                              Path(out) / "reference.json")
    keys = batch[["user_id", "video_id", "time_ms"]].to_numpy(np.int64)
    return {"batch_rows": len(batch), "success": report.success,
            "fingerprint": hashlib.sha256(keys.tobytes()).hexdigest()[:16],
            "stage_s": time.perf_counter() - t0}


def measure(mode: str, data_dir: Path, until: str = UNTIL,
            timeout_s: float = 3600) -> dict[str, Any]:
    """Run the data stage in a fresh subprocess; its result, wall time and peak RSS (MB)."""
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    with tempfile.TemporaryDirectory(prefix="scale-run-", dir=data_dir.parent) as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "bench.scale", "--worker", mode, "--data", str(data_dir),
               "--until", until, "--result", str(result), "--out", tmp]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        t0 = time.perf_counter()
        with open(Path(tmp) / "log.txt", "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,  # nosec B603
                                    cwd=ROOT)  # this interpreter with our own module
            deadline = t0 + timeout_s
            while True:  # os.wait4: this child's own rusage (its peak RSS), not all children's
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    proc.kill()
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.05)
            proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not result.is_file():
            tail = (Path(tmp) / "log.txt").read_text()[-2000:]
            raise RuntimeError(f"{mode} on {data_dir} failed (exit {proc.returncode}):\n{tail}")
        out = json.loads(result.read_text())
    return {**out, "mode": mode, "wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


def _slope(x: Sequence[float], y: Sequence[float], log: bool) -> float | None:
    if len(set(x)) < 2:
        return None
    if log:
        x, y = np.log(x), np.log(y)
    return float(np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)[0])


def fit(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per mode: the log-log slope of peak RSS against log rows, and MB per million rows."""
    out = {}
    for mode in MODES:
        rs = [r for r in rows if r["mode"] == mode]
        if rs:
            x = [r["log_rows"] for r in rs]
            y = [r["peak_rss_mb"] for r in rs]
            mb = _slope([v / 1e6 for v in x], y, log=False)
            out[mode] = {"exponent": _slope(x, y, log=True), "mb_per_million_rows": mb}
    return out


# -- sections ------------------------------------------------------------------------------------
def data_rows(factors: Sequence[int], baseline_factors: Sequence[int], work: Path,
              log=print) -> list[dict[str, Any]]:
    """The data section: per log size, the streamed stage and (at `baseline_factors`) the
    in-memory baseline; one row each. Both must validate the same batch (same fingerprint)."""
    rows = []
    for factor in sorted(set(factors) | set(baseline_factors)):
        t0 = time.perf_counter()
        folder = build_log(factor, work / f"kuairand-x{factor}")
        files = kuairand.log_files(folder)
        n = eventlog.log_rows(files)
        mb = sum(f.stat().st_size for f in files) / 2**20
        log(f"x{factor}: {n:,} rows, {mb:.0f} MB of parquet (built in "
            f"{time.perf_counter() - t0:.0f} s)")
        fingerprints = set()
        for mode in MODES:
            if factor not in (factors if mode == "streamed" else baseline_factors):
                continue
            r = measure(mode, folder)
            r.update(factor=factor, log_rows=n, file_mb=mb, rows_per_s=n / r["wall_s"])
            fingerprints.add(r["fingerprint"])
            log(f"  {mode}: peak RSS {r['peak_rss_mb']:.0f} MB, {r['wall_s']:.1f} s, "
                f"{r['rows_per_s']:,.0f} rows/s, batch {r['batch_rows']:,} rows, "
                f"valid {r['success']}")
            rows.append(r)
        if len(fingerprints) > 1:
            raise RuntimeError(f"x{factor}: the streamed and in-memory stages validated "
                               f"different batches ({sorted(fingerprints)})")
    return rows


def data_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per run, then the fitted exponents."""
    lines = ["| reader | log | log rows | file MB | peak RSS MB | wall s | rows/s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in sorted(rows, key=lambda r: (MODES.index(r["mode"]), r["factor"])):
        lines.append(f"| {r['mode']} | x{r['factor']} | {r['log_rows']:,} | {r['file_mb']:.0f} "
                     f"| {r['peak_rss_mb']:,.0f} | {r['wall_s']:.1f} | {r['rows_per_s']:,.0f} |")
    lines.append("")
    for mode, f in fit(rows).items():
        if f["exponent"] is None:
            continue
        lines.append(f"- {mode}: peak RSS ~ rows^{f['exponent']:.3f} "
                     f"({f['mb_per_million_rows']:+.1f} MB per million rows)")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Peak RSS against log rows, both readers, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for mode, marker in zip(MODES, "os", strict=True):
        rs = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["log_rows"])
        if rs:
            ax.plot([r["log_rows"] for r in rs], [r["peak_rss_mb"] for r in rs],
                    marker=marker, label=mode)
    ax.set(xscale="log", yscale="log", xlabel="event-log rows",
           ylabel="peak RSS of the data stage (MB)",
           title="validate stage: peak memory against log size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    from onerec.io import atomic_path

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def _ints(text: str) -> list[int]:
    try:
        out = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in out):
        raise argparse.ArgumentTypeError(f"factors must be >= 1, got {text!r}")
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"comma-separated sections to run ({', '.join(SECTIONS)})")
    ap.add_argument("--factors", type=_ints, default=[1, 10, 100],
                    help="data: log sizes, as multiples of the shipped sample")
    ap.add_argument("--baseline-factors", type=_ints, default=[1, 10],
                    help="data: sizes at which the in-memory baseline runs too ('' for none)")
    ap.add_argument("--sizes", type=_ints, default=[10_000, 100_000, 1_000_000, 10_000_000],
                    help="catalogue: numbers of items")
    ap.add_argument("--codebook-sizes", type=_ints, default=[256, 1024],
                    help="catalogue: K, codes per level")
    ap.add_argument("--catalogue-plot", default=None,
                    help="catalogue: also plot the growth curves here (PNG)")
    ap.add_argument("--work", default="runs/bench-scale", help="where the logs are built")
    ap.add_argument("--plot", default=None, help="data: also plot peak RSS here (PNG)")
    ap.add_argument("--json", default=None, help="also write the results here")
    # one measured run (what `measure` starts): not for direct use
    ap.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--until", default=UNTIL, help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        res = _worker(args.worker, args.data, args.until, args.out)
        Path(args.result).write_text(json.dumps(res))
        return res
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not sections:
        ap.error(f"--only: unknown section(s) {unknown}; known: {', '.join(SECTIONS)}")
    load_before = tuple(round(x, 2) for x in os.getloadavg())
    t0 = time.perf_counter()
    print(f"load average {load_before}; {os.cpu_count()} CPUs", flush=True)
    results: dict[str, Any] = {}
    if "data" in sections:
        rows = data_rows(args.factors, args.baseline_factors, Path(args.work),
                         log=lambda m: print(m, flush=True))
        results["data"] = {"rows": rows, "fit": fit(rows)}
        print("\n" + data_table(rows) + "\n")
        if args.plot:
            print(f"plot: {plot(rows, Path(args.plot))}")
    if "catalogue" in sections:
        from bench import scale_catalogue

        cat = ["--sizes", *map(str, args.sizes), "--codebook-sizes", *map(str, args.codebook_sizes)]
        if args.catalogue_plot:
            cat += ["--plot", args.catalogue_plot]
        results["catalogue"] = {"rows": scale_catalogue.main(cat)}
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "argv": sys.argv, "load_before": load_before,
            "load_after": tuple(round(x, 2) for x in os.getloadavg()),
            "total_s": time.perf_counter() - t0}
    print(f"total {meta['total_s'] / 60:.1f} min; load average {meta['load_before']} -> "
          f"{meta['load_after']}")
    out = {"meta": meta, **results}
    if args.json:
        from onerec.io import atomic_write_text

        atomic_write_text(Path(args.json), json.dumps(out, indent=2, default=float) + "\n")
    return out


if __name__ == "__main__":
    main()

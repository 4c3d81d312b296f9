"""The continuous-training report: one row per cycle, from the records the stages left in ROOT.

Each stage writes ROOT/runs/<run_id>/<stage>.json (`onerec.stages.run_stage`), whatever ran it
(kfp.local, a cluster, a test), so the report needs no pipeline server: which stages ran or
were skipped, the data window and watermark each cycle trained on, the codebook refresh, the
gate's comparison, and what was published. The run pages the components wrote
(`onerec.run_pages`, ROOT/runs/<run_id>/pages/) are linked, their plots shown inline.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from onerec import registry, run_pages
from onerec.io import atomic_write_text
from onerec.stages import ALL_STAGES, ms_to_iso


def _result(records: dict[str, dict[str, Any]], stage: str) -> dict[str, Any]:
    return records.get(stage, {}).get("result") or {}


def cycle_summary(root: str | Path, run_id: str) -> dict[str, Any]:
    """What one cycle did, flattened for the report."""
    rec = registry.read_run(root, run_id)
    v, cb, pt = _result(rec, "validate"), _result(rec, "codebook"), _result(rec, "pretrain")
    gt, pb = _result(rec, "gate"), _result(rec, "publish")
    cand = (gt.get("candidate") or {}).get("metrics", {})
    prod = (gt.get("production") or {}).get("metrics", {})
    failed = {s: r["error"] for s, r in rec.items() if r.get("status") == "failed"}
    return {
        "run_id": run_id,
        "stages": {s: rec[s]["status"] if s in rec else "not reached" for s in ALL_STAGES},
        "failed": failed,
        "until": v.get("until"),
        "batch_events": v.get("n_batch_events"),
        "drift_checked": v.get("drift_checked"),
        "codebook": {k: cb.get(k) for k in ("mode", "n_items", "n_new_items", "version",
                                             "revision", "fingerprint")},
        "warm_start": pt.get("warm_start"),
        "init_version": pt.get("init_version"),
        "cold_reason": pt.get("cold_reason"),
        "watermark_in_ms": pt.get("watermark_in_ms"),
        "first_request_ms": pt.get("first_request_ms"),
        "watermark_out_ms": pt.get("watermark_ms"),
        "n_requests": pt.get("n_requests"),
        "steps": pt.get("steps"),
        "final_loss": pt.get("final_loss"),
        "items_carried": pt.get("items_carried"),
        "gate": gt.get("decision"),
        "gate_reasons": gt.get("reasons"),
        "heldout": gt.get("heldout"),
        "n_eval_users": (gt.get("candidate") or {}).get("n_users"),
        "candidate": cand,
        "production": prod or None,
        "production_version": gt.get("production_version"),
        "popularity": gt.get("popularity"),
        "published": pb.get("version"),
        "gitops": pb.get("state"),
        "wall_s": {s: r.get("wall_s") for s, r in rec.items()},
        "pages": run_pages.ledger_pages(root, run_id),
    }


def _ts(ms: int | None) -> str:
    return "-" if ms is None or ms < 0 else ms_to_iso(ms)


def _f(x: Any) -> str:
    return "-" if x is None else f"{x:.4f}"


# the plots a report shows inline, in pipeline order
PLOTS = ("codebook-utilisation.png", "pretrain-curves.png", "reward-auc-calibration.png",
         "align-curves.png")


def pages_markdown(cycles: list[dict[str, Any]], base: str | Path | None = None,
                   embed: Sequence[str] = PLOTS) -> list[str]:
    """Per cycle: a link to every run page and the plots named in `embed`, inline; paths
    relative to `base` (the report's folder) when given."""
    def rel(path: str) -> str:
        return os.path.relpath(path, base) if base is not None else path

    lines: list[str] = []
    for c in cycles:
        pages = c.get("pages") or {}
        if not pages:
            continue
        docs = [n for n in pages if not n.endswith(".png")]
        lines += [f"### {c['run_id']}", "",
                  "Pages: " + ", ".join(f"[{n}]({rel(pages[n])})" for n in docs) + ".", ""]
        lines += [f"![{c['run_id']} {n.removesuffix('.png')}]({rel(pages[n])})" for n in embed
                  if n in pages]
        lines.append("")
    return ["## Run pages (what each step shows in the Kubeflow UI)", "", *lines] if lines else []


def to_markdown(cycles: list[dict[str, Any]], base: str | Path | None = None) -> str:
    lines = ["# Continuous training: cycles", "",
             "| cycle | until | stages run | batch events | codebook | new videos | start | "
             "watermark in | first request | requests | steps | watermark out | gate | "
             "published |", "|" + " --- |" * 14]
    for c in cycles:
        ran = [s for s, st in c["stages"].items() if st == "ran"]
        cb = c["codebook"]
        start = ("warm from " + str(c["init_version"])) if c["warm_start"] else (
            f"cold ({c['cold_reason']})" if c["cold_reason"] else "-")
        lines.append(
            f"| {c['run_id']} | {c['until']} | {', '.join(ran)} | {c['batch_events']} | "
            f"{cb.get('mode')} v{cb.get('version')}.{cb.get('revision')} ({cb.get('n_items')}) | "
            f"{cb.get('n_new_items')} | {start} | {_ts(c['watermark_in_ms'])} | "
            f"{_ts(c['first_request_ms'])} | {c['n_requests']} | {c['steps']} | "
            f"{_ts(c['watermark_out_ms'])} | {c['gate']} | {c['published'] or '-'} |")
    lines += ["", "## Gate: held-out window, same users for every model", "",
              "| cycle | held-out | users | model | recall@10 | ndcg@10 | recall@5 | ndcg@5 | "
              "legality | coverage@10 |", "|" + " --- |" * 10]
    for c in cycles:
        held = " to ".join(c["heldout"] or []) or "-"
        rows = [("candidate", c["candidate"]), (f"production {c['production_version']}",
                                                 c["production"]), ("popularity", c["popularity"])]
        for name, m in rows:
            if not m:
                continue
            lines.append(f"| {c['run_id']} | {held} | {c['n_eval_users']} | {name} | "
                         f"{_f(m.get('recall@10'))} | {_f(m.get('ndcg@10'))} | "
                         f"{_f(m.get('recall@5'))} | {_f(m.get('ndcg@5'))} | "
                         f"{_f(m.get('legality'))} | {_f(m.get('coverage@10'))} |")
        for r in c["gate_reasons"] or []:
            lines.append(f"| {c['run_id']} | | | gate: {c['gate']} | {r} | | | | | |")
    lines += ["", "## Stages", "", "| cycle | " + " | ".join(ALL_STAGES) + " |",
              "|" + " --- |" * (len(ALL_STAGES) + 1)]
    for c in cycles:
        cells = []
        for s in ALL_STAGES:
            w = c["wall_s"].get(s)
            cells.append(c["stages"][s] + (f" ({w:.0f} s)" if w is not None else ""))
        lines.append(f"| {c['run_id']} | " + " | ".join(cells) + " |")
    for c in cycles:
        for s, e in c["failed"].items():
            lines.append(f"\n{c['run_id']}: **{s} failed**: {e}")
    pages = pages_markdown(cycles, base)
    if pages:
        lines += ["", *pages]
    return "\n".join(lines) + "\n"


def write_report(root: str | Path, run_ids: list[str], out_dir: str | Path,
                 extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """report.json and report.md for the given cycles, atomically."""
    cycles = [cycle_summary(root, r) for r in run_ids]
    out_dir = Path(out_dir)
    js = atomic_write_text(out_dir / "report.json",
                           json.dumps({"cycles": cycles, **(extra or {})}, indent=2) + "\n")
    md = atomic_write_text(out_dir / "report.md", to_markdown(cycles, out_dir))
    return js, md

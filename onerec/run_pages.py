"""Run pages: what a person opens on a pipeline step in the Kubeflow UI, one per stage.

Each KFP component writes, beside its `Metrics`, a Markdown or HTML output artifact (the UI
renders both: `dsl.Output[dsl.Markdown]`, `dsl.Output[dsl.HTML]`):

    validate  Markdown  suites pass/fail, failing expectations, where the report files are
    codebook  HTML      code utilisation per level, items per semantic ID (collisions)
    pretrain  HTML      loss, learning rate, samples/s, MFU against step
    reward    HTML      AUC per task, calibration (mean predicted vs observed per bin)
    align     HTML      reward, legality, KL, clip fraction against round
    gate      Markdown  candidate vs production vs popularity, paired tests, the decision, why
    publish   Markdown  the version, its storage URI, the GitOps commits and state

Design choices:
- Renderers are pure: a stage's summary (what `onerec.stages` returns) and, for the training
  stages, its history in, a `Page` (text and PNG bytes) out, so they are tested on made-up
  summaries in milliseconds. The few readers of artifact folders (`read_history`,
  `codebook_stats`) and `write` are the only functions that touch files.
- HTML pages embed their PNGs (base64): the UI shows the artifact file alone, without its
  neighbours. A series the summary lacks is named on the page, never an error: a page must not
  fail the step it describes.
- `write` puts the page at the artifact's path and a copy, with its PNGs as files, in the run's
  ledger (ROOT/runs/<run_id>/pages/), where the cycle and demo reports link and embed them
  whatever ran the step (kfp.local, a cluster, a test).
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onerec import plots
from onerec.io import atomic_write_bytes, atomic_write_text

PAGES = "pages"  # ROOT/runs/<run_id>/pages/
KINDS = {"validate": "md", "codebook": "html", "pretrain": "html", "reward": "html",
         "align": "html", "gate": "md", "publish": "md"}
PRETRAIN_SERIES = (("loss", "loss"), ("lr", "learning rate"), ("samples_per_s", "samples/s"),
                   ("mfu", "MFU"))
ALIGN_SERIES = (("reward", "reward (legal slates)"), ("legality", "legality"), ("kl", "KL"),
                ("clip_frac", "clip fraction"))


@dataclass
class Page:
    """One stage's run page: Markdown or HTML text, and the PNGs the HTML embeds."""

    stage: str
    kind: str  # "md" | "html"
    text: str
    pngs: dict[str, bytes] = field(default_factory=dict)  # name -> PNG (embedded in the HTML)


# -- small formatters ------------------------------------------------------------------------------
def _num(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return f"{v:,}" if isinstance(v, int) else f"{v:.{digits}f}"


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [[str(c).replace("|", "\\|").replace("\n", " ") for c in r] for r in rows]
    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header),
            *("| " + " | ".join(r) + " |" for r in cells)]


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def img_tag(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


_STYLE = ("body{font-family:sans-serif;font-size:14px;margin:16px;color:#222}"
          "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;"
          "padding:3px 8px;text-align:right}th{background:#f3f3f3}img{max-width:100%}"
          ".note{color:#8a5a00}")


def html_document(title: str, blocks: Sequence[str]) -> str:
    """A self-contained page (inline style, embedded images)."""
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>"
            f"{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
            f"<h2>{html.escape(title)}</h2>{''.join(blocks)}</body></html>\n")


def _p(text: str, note: bool = False) -> str:
    cls = ' class="note"' if note else ""
    return f"<p{cls}>{html.escape(text)}</p>"


def _missing_note(missing: Sequence[str], what: str) -> list[str]:
    return [_p(f"Not recorded in this {what}: {', '.join(missing)}.", note=True)] if missing \
        else []


def skipped(stage: str, reason: str) -> Page:
    """The page of a stage left out of the stage list (its input passed through)."""
    kind = KINDS[stage]
    text = f"Stage **{stage}** did not run: {reason}."
    if kind == "html":
        return Page(stage, kind, html_document(f"{stage}: skipped", [_p(text.replace("**", ""))]))
    return Page(stage, kind, f"# {stage}: skipped\n\n{text}\n")


# -- validate --------------------------------------------------------------------------------------
def validate_page(summary: dict[str, Any] | None, report: dict[str, Any],
                  report_uri: str, data_docs: bool = False) -> Page:
    """Suites pass/fail, failing expectations, and where the full report is. `summary` is the
    stage's (None when it stopped before writing a snapshot), `report` the validation report
    (`onerec.validation.ValidationReport.to_dict`), `report_uri` its folder, `data_docs`
    whether the GX Data Docs site was built beside it (`data_docs/index.html`)."""
    ok = bool(report.get("success"))
    lines = [f"# Data validation: {'PASSED' if ok else 'FAILED'}", ""]
    if summary:
        drift = ("checked" if summary.get("drift_checked")
                 else "not checked (no production model yet)")
        lines += [f"Cycle until **{summary.get('until')}**: {_num(summary.get('n_batch_events'))} "
                  f"new events after the production watermark validated; "
                  f"{_num(summary.get('n_train_events'))} events train, "
                  f"{_num(summary.get('n_holdout_events'))} are held out. Drift against the "
                  f"last accepted batch: {drift}.",
                  ""]
    else:
        lines += ["The batch could not be cut: no snapshot was written, nothing trains.", ""]
    rows = [(name, "skipped" if s.get("skipped") else ("pass" if s.get("success") else "**FAIL**"),
             s.get("evaluated", "-"), s.get("failed", "-"), _num(s.get("elapsed_s"), 2))
            for name, s in report.get("suites", {}).items()]
    lines += [*md_table(("suite", "result", "expectations", "failed", "seconds"), rows), ""]
    failures = report.get("failures", [])
    if failures:
        lines += [f"## Failing expectations ({len(failures)})", ""]
        rows = [(f.get("suite"), f.get("column"), f.get("expectation"), f.get("message"),
                 _num(f.get("unexpected_count")), ", ".join(map(str, (f.get("sample") or [])[:5])))
                for f in failures]
        lines += [*md_table(("suite", "column", "expectation", "what failed", "unexpected rows",
                             "sample"), rows), ""]
    else:
        lines += ["No expectation failed.", ""]
    lines += [f"Full report: `{report_uri}/summary.md` (Markdown) and `{report_uri}/report.json` "
              "(every expectation's result).", ""]
    if data_docs:
        lines += [f"Great Expectations Data Docs: [{report_uri}/data_docs/index.html]"
                  f"({report_uri}/data_docs/index.html) (each suite's expectations and its "
                  "validation result, with the unexpected values).", ""]
    return Page("validate", "md", "\n".join(lines))


def write_validation(snapshot_dir: str | Path, snapshot_uri: str, artifact_path: str | Path,
                     root: str | Path, run_id: str) -> Path | None:
    """The validate page from what the stage left in its snapshot folder (snapshot.json, the
    stage's summary, exists after the suites ran, failed or not; validation/report.json also
    after a broken log file); None when it stopped before validating anything."""
    folder = Path(snapshot_dir)
    report = folder / "validation" / "report.json"
    if not report.exists():
        return None
    snap = folder / "snapshot.json"
    summary = json.loads(snap.read_text()) if snap.exists() else None
    docs = (folder / "validation" / "data_docs" / "index.html").exists()
    return write(validate_page(summary, json.loads(report.read_text()),
                               f"{snapshot_uri}/validation", docs), artifact_path, root, run_id)


# -- codebook --------------------------------------------------------------------------------------
def codebook_stats(codebook_dir: str | Path) -> dict[str, Any]:
    """Utilisation and entropy per level of the codebook as saved, and the histogram of items
    per L-code semantic ID (1: no collision; m: m items told apart by the last token)."""
    import numpy as np

    from onerec.tokenizer import Codebook
    from onerec.tokenizer.metrics import code_metrics

    cb = Codebook.load(codebook_dir)
    codes = cb.codes
    m = code_metrics(codes, cb.codebook_size)
    _, per_id = np.unique(codes, axis=0, return_counts=True)
    sizes, n_ids = np.unique(per_id, return_counts=True)
    return {**m, "items_per_id": {int(s): int(n) for s, n in zip(sizes, n_ids, strict=True)}}


def codebook_png(stats: dict[str, Any]) -> bytes:
    fig, (a, b) = plots.figure(2)
    levels = [f"L{i + 1}" for i in range(len(stats["utilisation"]))]
    plots.bars(a, levels, stats["utilisation"], ylim=(0, 1.1), ylabel="share of K codes used",
               title=f"code utilisation per level (K={stats['codebook_size']})")
    hist = {int(k): int(v) for k, v in stats.get("items_per_id", {}).items()}
    if hist:
        plots.bars(b, [str(k) for k in sorted(hist)], [hist[k] for k in sorted(hist)],
                   title="semantic IDs by items sharing them", ylabel="semantic IDs",
                   color="tab:orange", fmt="{:,.0f}")
        b.set_xlabel("items per L-code ID (1 = no collision)")
        if max(hist.values()) > 20 * min(hist.values()):
            b.set_yscale("log")
    return plots.to_png(fig)


def codebook_page(summary: dict[str, Any], stats: dict[str, Any]) -> Page:
    png = codebook_png(stats)
    hist = stats.get("items_per_id", {})
    rows = [(f"L{i + 1}", _num(u, 3), _num(e, 3)) for i, (u, e) in
            enumerate(zip(stats["utilisation"], stats.get("entropy_normalised", []),
                          strict=False))]
    blocks = [_p(f"Mode: {summary.get('mode')} (v{summary.get('version')}."
                 f"{summary.get('revision')}), {_num(stats['n_items'])} items, "
                 f"{_num(summary.get('n_new_items'))} new this cycle; "
                 f"{_num(stats['n_semantic_ids'])} distinct L-code IDs, collision rate "
                 f"{_num(stats['collision_rate'])}, at most {stats['items_per_id_max']} items "
                 "share one."),
              img_tag(png, "code utilisation and collisions"),
              html_table(("level", "utilisation", "entropy / log2 K"), rows),
              html_table(("items per ID", "IDs"), sorted(hist.items()))]
    drift = summary.get("drift")
    if drift:
        blocks.append(_p(f"Drift of the new items against the codebook: "
                         f"{_num(drift.get('drift'))} (refit above "
                         f"{_num(drift.get('threshold'))}); utilisation ratio "
                         f"{_num(drift.get('utilisation_ratio'))}."))
    return Page("codebook", "html", html_document("codebook refresh", blocks), {"utilisation": png})


# -- training stages -------------------------------------------------------------------------------
def read_history(model_dir: str | Path) -> list[dict[str, Any]]:
    """The step records a training stage left in its model folder (history.json), [] when
    there are none (a model from before the file existed, a passed-through stage)."""
    path = Path(model_dir) / "history.json"
    return json.loads(path.read_text()) if path.exists() else []


def _curves_page(stage: str, title: str, history: Sequence[dict[str, Any]],
                 panels: Sequence[tuple[str, str]], facts: str, xlabel: str,
                 logy: Sequence[str] = ()) -> Page:
    png = plots.line_panels({"": history}, panels, xlabel=xlabel, logy=logy)
    missing = plots.missing_series(history, [k for k, _ in panels])
    labels = dict(panels)
    blocks = [_p(facts)]
    if png is None:
        blocks.append(_p(f"No {xlabel} records in this {stage} run's history: nothing to plot.",
                         note=True))
    else:
        blocks.append(img_tag(png, f"{stage} curves"))
    blocks += _missing_note([labels[k] for k in missing], "run's history")
    last = next((r for r in reversed(history) if any(k in r for k, _ in panels)), None)
    if last:
        blocks.append(html_table(("last " + xlabel, *(lb for _, lb in panels)),
                                 [(last.get("step"), *(_num(last.get(k)) for k, _ in panels))]))
    return Page(stage, "html", html_document(title, blocks), {"curves": png} if png else {})


def pretrain_page(summary: dict[str, Any], history: Sequence[dict[str, Any]]) -> Page:
    start = (f"warm start from {summary.get('init_version')}" if summary.get("warm_start")
             else f"cold start ({summary.get('cold_reason')})")
    facts = (f"{start}; {_num(summary.get('n_requests'))} requests, "
             f"{_num(summary.get('steps'))} of {_num(summary.get('planned_steps'))} planned "
             f"steps in {_num(summary.get('train_s'), 1)} s, final loss "
             f"{_num(summary.get('final_loss'))}, {_num(summary.get('params'))} parameters.")
    return _curves_page("pretrain", "pretraining", history, PRETRAIN_SERIES, facts, "step")


def align_page(summary: dict[str, Any], history: Sequence[dict[str, Any]]) -> Page:
    facts = (f"ECPO: {_num(summary.get('align_steps'))} rounds in "
             f"{_num(summary.get('align_s'), 1)} s; last round reward "
             f"{_num(summary.get('align_reward'))}, legality {_num(summary.get('align_legality'))}"
             f", KL {_num(summary.get('align_kl'))}.")
    return _curves_page("align", "alignment (ECPO)", history, ALIGN_SERIES, facts, "round")


# -- reward ----------------------------------------------------------------------------------------
def reward_png(metrics: dict[str, dict[str, Any]], calibration: dict[str, dict[str, list]]
               ) -> bytes:
    fig, (a, b) = plots.figure(2)
    tasks = list(metrics)
    plots.bars(a, tasks, [metrics[t].get("auc") for t in tasks], ylim=(0, 1.1), ylabel="AUC",
               title="held-out AUC per task")
    a.axhline(0.5, color="gray", lw=0.8, ls="--")
    a.tick_params(axis="x", labelrotation=30)
    b.plot([0, 1], [0, 1], color="gray", lw=0.8, ls="--", label="calibrated")
    for task, c in calibration.items():
        pts = [(p, o) for p, o, n in zip(c["pred"], c["obs"], c["count"], strict=True) if n]
        if pts:
            b.plot(*zip(*pts, strict=True), marker="o", ms=3, lw=1.2 if task == "pscore" else 0.8,
                   label=task)
    b.set(title="calibration (equal-width bins)", xlabel="mean predicted",
          ylabel="mean observed", xlim=(0, 1), ylim=(0, 1))
    b.legend(fontsize=6)
    b.grid(alpha=0.3)
    return plots.to_png(fig)


def reward_page(summary: dict[str, Any]) -> Page:
    metrics = summary.get("metrics") or {}
    calibration = summary.get("calibration") or {}
    blocks = [_p(f"{_num(summary.get('steps'))} steps in {_num(summary.get('train_s'), 1)} s on "
                 f"{_num(summary.get('n_train_impressions'))} impressions; evaluated on "
                 f"{_num(summary.get('n_heldout_impressions'))} held-out impressions.")]
    pngs: dict[str, bytes] = {}
    if metrics:
        pngs["auc-calibration"] = reward_png(metrics, calibration)
        blocks.append(img_tag(pngs["auc-calibration"], "reward model AUC and calibration"))
        blocks.append(html_table(("task", "AUC", "ECE", "mean predicted", "mean observed",
                                  "positives"),
                                 [(t, _num(m.get("auc")), _num(m.get("ece")),
                                   _num(m.get("mean_pred")), _num(m.get("mean_obs")),
                                   _num(m.get("positives"), 0)) for t, m in metrics.items()]))
    else:
        blocks.append(_p("No held-out impressions: no AUC and no calibration.", note=True))
    if metrics and not calibration:
        blocks.append(_p("No calibration bins in this summary (a reward model from before they "
                         "were recorded).", note=True))
    return Page("reward", "html", html_document("reward model (P-Score)", blocks), pngs)


# -- gate and publish ------------------------------------------------------------------------------
GATE_ROWS = ("recall@10", "ndcg@10", "recall@5", "ndcg@5", "legality", "coverage@10")


def gate_page(summary: dict[str, Any]) -> Page:
    cand = (summary.get("candidate") or {}).get("metrics", {})
    prod = (summary.get("production") or {}).get("metrics") or {}
    pop = summary.get("popularity") or {}
    compared = summary.get("compared") or {}
    tol = summary.get("tolerance", 0.0)
    version = summary.get("production_version") or "none"
    held = " to ".join(summary.get("heldout") or []) or "-"
    n = (summary.get("candidate") or {}).get("n_users")
    lines = [f"# Evaluation gate: **{summary.get('decision')}**", "",
             f"Held-out window {held}, the same {_num(n)} users for every model.", ""]
    rows = []
    for m in GATE_ROWS:
        if m not in cand:
            continue
        floor = compared.get(m, {}).get("floor")
        rows.append((m + (" (gated)" if m in compared else ""), _num(cand.get(m)),
                     _num(prod.get(m)), _num(pop.get(m)), _num(floor)))
    lines += [*md_table(("metric", "candidate", f"production {version}", "popularity",
                         f"floor (production - {tol:.0%})"), rows), ""]
    tests = []
    for m, row in compared.items():
        for vs, key in (("production floor", "vs_production"), ("popularity", "vs_popularity")):
            t = row.get(key)
            if t:
                diff = t.get("diff_to_floor", t.get("mean_diff"))
                tests.append((m, vs, f"{diff:+.4f}", _num(t.get("se")), f"{t['upper']:+.4f}",
                              "below" if t["upper"] < 0 else "not below",
                              _num(t.get("users_needed"))))
    if tests:
        lines += ["Paired per-user tests (candidate minus the reference; one-sided 5%: "
                  "significantly below when the upper bound is < 0):", ""]
        lines += [*md_table(("metric", "against", "mean difference", "se", "upper bound",
                             "significantly", "users needed"), tests), ""]
    lines += [f"## Decision: {summary.get('decision')}", "",
              *(f"- {r}" for r in summary.get("reasons") or []), ""]
    if summary.get("popularity_floor") is False:
        lines += ["(The popularity floor was off for this run.)", ""]
    return Page("gate", "md", "\n".join(lines))


def publish_page(summary: dict[str, Any]) -> Page:
    m = summary.get("metrics") or {}
    commits = summary.get("commits") or []
    how = ("held as the canary: production moves when the rollout promotes it"
           if summary.get("canary") else "promoted at once (no live traffic to A/B here)")
    lines = [f"# Published `{summary.get('version')}`", "",
             *md_table(("", ""), [
                 ("version", f"`{summary.get('version')}`"),
                 ("storage URI", f"`{summary.get('storage_uri')}`"),
                 ("cycle until", summary.get("until")),
                 ("watermark", summary.get("watermark_ms")),
                 ("rollout", how),
                 ("ndcg@10 / recall@10", f"{_num(m.get('ndcg@10'))} / {_num(m.get('recall@10'))}"),
                 ("GitOps repository", f"`{summary.get('gitops_repo')}`"),
                 ("GitOps commits", ", ".join(f"`{c[:10]}`" for c in commits) or "-"),
                 ("GitOps state", summary.get("state")),
                 ("published at", summary.get("published_at"))]), ""]
    return Page("publish", "md", "\n".join(lines))


# -- the demo's A/B --------------------------------------------------------------------------------
def ab_png(arms: dict[str, dict[str, float]], result: dict[str, Any] | None = None,
           metric: str = "reward") -> bytes:
    """The arms' per-user mean `metric` with 95% intervals (`onerec.ab.arm_intervals`) and, from
    the analysis (`ABResult.to_dict`), the canary-minus-stable difference with its interval."""
    names = [a for a in ("stable", "canary") if a in arms] + sorted(set(arms) - {"stable",
                                                                             "canary"})
    rows = [(f"{a} (n={arms[a]['users']:,})", arms[a]["mean"], arms[a]["low"], arms[a]["high"])
            for a in names]
    title = f"A/B: per-user mean {metric}, 95% intervals"
    if result and all(plots.finite(result.get(k)) for k in ("ci_low", "ci_high")):
        diff = result["mean_canary"] - result["mean_stable"]
        title += f"; decision {result['decision']} (p={result['p_value']:.3g})"
        fig, (a, b) = plots.figure(2, width=4.6, height=0.8 * len(rows) + 1.6)
        plots.intervals(a, *zip(*rows, strict=True), title="arms", xlabel=metric)
        plots.intervals(b, ["canary - stable"], [diff], [result["ci_low"]],
                        [result["ci_high"]], title="difference", xlabel=metric, zero_line=True)
    else:
        fig, (a,) = plots.figure(1, width=6, height=0.8 * len(rows) + 1.6)
        plots.intervals(a, *zip(*rows, strict=True), title="arms", xlabel=metric)
    fig.suptitle(title, fontsize=9)
    return plots.to_png(fig)


# -- writing ---------------------------------------------------------------------------------------
def pages_dir(root: str | Path, run_id: str) -> Path:
    from onerec import registry

    return Path(root) / registry.RUNS / run_id / PAGES


def write(page: Page, artifact_path: str | Path | None, root: str | Path, run_id: str
          ) -> Path:
    """The page at the KFP artifact's path (what the UI opens) and in the run's ledger with
    its PNGs (what reports link); each file atomically. Returns the ledger copy."""
    if artifact_path is not None:
        atomic_write_text(artifact_path, page.text)
    folder = pages_dir(root, run_id)
    for name, png in page.pngs.items():
        atomic_write_bytes(folder / f"{page.stage}-{name}.png", png)
    return atomic_write_text(folder / f"{page.stage}.{page.kind}", page.text)


def ledger_pages(root: str | Path, run_id: str) -> dict[str, str]:
    """file name -> path of the pages and PNGs a run's stages wrote (for reports)."""
    folder = pages_dir(root, run_id)
    if not folder.is_dir():
        return {}
    return {p.name: str(p) for p in sorted(folder.iterdir())
            if p.suffix in (".md", ".html", ".png") and not p.name.startswith(".")}

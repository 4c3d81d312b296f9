"""The continuous-training stages as plain functions: what each KFP component (and a laptop) runs.

One function per stage; each takes folders and the one Config, writes its artifact folder
atomically (`onerec.io.atomic_dir`) and returns a JSON-able summary. No kfp, no kubernetes
here: `components/` wraps these functions, `pipelines/` wires them, and a test runs a whole
cycle without Kubeflow.

    validate -> refresh_codebook -> pretrain -> train_reward -> align -> evaluate_gate
             -> export -> publish            (reward, align, export, publish: optional stages)

Time windows. A cycle runs as of the day `until` (YYYY-MM-DD, UTC midnight, exclusive): the
events before it exist. The last `holdout_days` before `until` are the held-out window on which
the gate compares the candidate with the production model, so both are measured on the same
users and the same later behaviour. Training sees events before that window only, and, when it
warm-starts from the production checkpoint, only requests newer than that checkpoint's
watermark (the newest request it trained on). Run the next cycle one day later and its training
window is this cycle's held-out day: every event is trained on once, after it was tested on.

Continuity of the item space. The codebook refresh encodes videos first seen since the last
cycle with the current centroids (existing semantic IDs unchanged), so the production weights
carry over: `transfer_weights` copies every tensor, maps item embeddings by video id and grows
the code tables where a level's vocabulary grew. A refit (drift) changes what the IDs mean, so
the candidate then starts from scratch on all events before the held-out window.

Model artifacts (pretrain, align) are folders with `checkpoint/` (`onerec.checkpoint`) and
`summary.json`, whose `watermark_ms` is what the next cycle resumes after.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd
import torch

from onerec import registry
from onerec.checkpoint import CKPT_NAME, build_model, load_model, tensors_digest
from onerec.config import Config, TokenizerConfig
from onerec.data import kuairand
from onerec.data.schema import DAY_MS, DataError, Dataset
from onerec.io import atomic_dir, load_torch_state
from onerec.items import ItemSpace
from onerec.model import OneRec
from onerec.progress import Reporter

CORE_STAGES = ("validate", "codebook", "pretrain", "gate")
OPTIONAL_STAGES = ("reward", "align", "export", "publish")
ALL_STAGES = ("validate", "codebook", "pretrain", "reward", "align", "gate", "export", "publish")
# the module each optional stage needs beyond the core library (they land separately)
STAGE_MODULES = {"reward": "onerec.reward", "align": "onerec.ecpo", "export": "onerec.export"}
Log = Callable[[dict[str, Any]], None]


class StageError(RuntimeError):
    """A stage cannot produce its artifact (bad data, nothing new to train on, a refusal)."""


class StageUnavailable(StageError):
    """A stage was asked for but the module it needs is not installed in this build."""


# -- stage lists ---------------------------------------------------------------------------------
def stage_available(stage: str) -> bool:
    """Whether the module `stage` needs can be imported here."""
    import importlib.util

    mod = STAGE_MODULES.get(stage)
    return mod is None or importlib.util.find_spec(mod) is not None


def default_stages() -> list[str]:
    """Every stage whose module is installed (reward and align go together)."""
    out = [s for s in ALL_STAGES if stage_available(s)]
    if "align" not in out and "reward" in out:
        out.remove("reward")
    return out


def parse_stages(text: str) -> list[str]:
    """'validate,codebook,...' -> the stage list, checked: core stages present, names known,
    align only with reward, and every asked-for stage importable (never silently skipped)."""
    stages = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in stages if s not in ALL_STAGES]
    if unknown:
        raise StageError(f"stages: unknown stage {unknown[0]!r}; known: {', '.join(ALL_STAGES)}")
    missing = [s for s in CORE_STAGES if s not in stages]
    if missing:
        raise StageError(f"stages: {missing[0]!r} cannot be left out (core: "
                         f"{', '.join(CORE_STAGES)})")
    if "align" in stages and "reward" not in stages:
        raise StageError("stages: align needs reward (the reward model it optimises)")
    for s in stages:
        if not stage_available(s):
            raise StageUnavailable(f"stages: {s!r} needs {STAGE_MODULES[s]}, which is not "
                                   "installed in this build; leave it out of the stage list")
    return [s for s in ALL_STAGES if s in stages]


# -- windows and snapshots -----------------------------------------------------------------------
def day_ms(day: str) -> int:
    """'2022-04-28' -> epoch ms of that UTC midnight."""
    try:
        d = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    except ValueError:
        raise StageError(f"until: expected a date YYYY-MM-DD, got {day!r}") from None
    return int(d.timestamp() * 1000)


def ms_to_iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class Snapshot:
    """The data a cycle sees: written by `validate`, read by every later stage."""

    data_dir: str
    until: str
    until_ms: int  # events before this exist
    holdout_start_ms: int  # [holdout_start_ms, until_ms) is the held-out window
    watermark_ms: int  # the production checkpoint's watermark (-1: no production model)
    production_version: str | None
    n_batch_events: int  # events after the watermark (validated)
    n_train_events: int  # events before the held-out window
    n_holdout_events: int
    fingerprint: str  # sha256 of the validated batch's (user, video, time) keys

    @classmethod
    def load(cls, folder: str | Path) -> Snapshot:
        d = json.loads((Path(folder) / "snapshot.json").read_text())
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})

    def events(self) -> pd.DataFrame:
        """Conformed events before `until`."""
        ds = kuairand.load(self.data_dir)
        return ds.events[ds.events["time_ms"] < self.until_ms].reset_index(drop=True)

    def dataset(self) -> Dataset:
        ds = kuairand.load(self.data_dir)
        return dataclasses.replace(
            ds, events=ds.events[ds.events["time_ms"] < self.until_ms].reset_index(drop=True))


def validate(cfg: Config, data_dir: str | Path, out: str | Path, *, until: str,
             holdout_days: int = 1, root: str | Path) -> dict[str, Any]:
    """Validate the events new since the production watermark (Great Expectations suites, drift
    against the last accepted batch) and write the cycle's snapshot. A failed suite writes its
    report and raises StageError: nothing trains on that batch, production keeps serving. A log
    file that cannot be read (truncated) or whose own schema drifted (a column renamed, dropped
    or retyped) stops it the same way, before the batch is cut, naming the file and column.

    The log is streamed (`onerec.logscan.scan_log`: parquet batch by batch, the suites on
    bounded chunks of the batch), so the stage's peak memory does not grow with the log."""
    from onerec import logscan, validation
    from onerec.data import eventlog

    if holdout_days < 1:
        raise StageError(f"holdout_days must be >= 1, got {holdout_days}")
    until_ms = day_ms(until)
    holdout_ms = until_ms - holdout_days * DAY_MS
    prod = registry.read_production(root)
    watermark = prod.watermark_ms if prod is not None else -1
    try:  # footers and the small tables only: the events are streamed below
        files = kuairand.log_files(data_dir)
        raw = kuairand.RawTables(events=pd.DataFrame(), items=kuairand.read_items(data_dir),
                                 users=kuairand.read_users(data_dir), log_files=files,
                                 log_schemas=eventlog.log_schemas(files))
    except DataError as e:  # a truncated or unreadable file: nothing can be validated
        _stop_validation(out, validation.failed_report(
            [validation.unreadable_failure(str(e))], data_dir=str(data_dir), until=until))
    schema_failures = validation.log_file_failures(raw)
    if schema_failures:  # a log file's columns drifted: the batch cannot even be cut
        _stop_validation(out, validation.failed_report(
            schema_failures, data_dir=str(data_dir), until=until,
            log_files=[f.name for f in raw.log_files]))
    if prod is not None and holdout_ms <= watermark:
        raise StageError(f"the held-out window starts at {ms_to_iso(holdout_ms)}, before the "
                         f"production watermark {ms_to_iso(watermark)}: run a later `until`")
    ref = validation.load_reference(prod.reference) if prod and prod.reference.exists() else None
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".data_docs-", dir=Path(out).parent,
                                     ignore_cleanup_errors=True) as docs:
        try:
            scan = logscan.scan_log(
                files, raw.items, raw.users, cfg, ref, until_ms=until_ms, watermark_ms=watermark,
                holdout_start_ms=holdout_ms, now_ms=until_ms, docs_dir=docs,
                source=f"{data_dir} batch until {until}")
        except DataError as e:  # a data page past a valid footer that cannot be read
            _stop_validation(out, validation.failed_report(
                [validation.unreadable_failure(str(e))], data_dir=str(data_dir), until=until))
        if scan.n_batch_events == 0:
            raise StageError(f"no events after the production watermark {ms_to_iso(watermark)} "
                             f"and before {until}: nothing new to train on")
        report = scan.report
        snap = Snapshot(
            data_dir=str(Path(data_dir).resolve()), until=until, until_ms=until_ms,
            holdout_start_ms=holdout_ms, watermark_ms=watermark,
            production_version=prod.version if prod else None,
            n_batch_events=scan.n_batch_events, n_train_events=scan.n_train_events,
            n_holdout_events=scan.n_holdout_events, fingerprint=scan.fingerprint)
        summary = {**dataclasses.asdict(snap), "validation_success": report.success,
                   "drift_checked": ref is not None,
                   "failures": [f.message for f in report.failures]}
        with atomic_dir(out) as tmp:
            validation.write_report(report, tmp / "validation")
            shutil.move(docs, tmp / "validation" / "data_docs")  # GX Data Docs: index.html
            validation.save_reference(scan.reference, tmp / "reference.json")
            (tmp / "snapshot.json").write_text(json.dumps(summary, indent=2))
    if not report.success:
        raise StageError(f"data validation failed ({len(report.failures)} failure(s)): "
                         f"{report.failures[0].message}")
    return summary


def _stop_validation(out: str | Path, report: Any) -> NoReturn:
    """Write the report of a batch that cannot be validated (no snapshot: no later stage can
    start from it) and stop the cycle; production and the GitOps tree are never reached."""
    from onerec import validation

    with atomic_dir(out) as tmp:
        validation.write_report(report, tmp / "validation")
    raise StageError(f"data validation failed ({len(report.failures)} failure(s)): "
                     f"{report.failures[0].message}")


# -- codebook -------------------------------------------------------------------------------------
def _seen_catalogue(snap: Snapshot) -> Any:
    """Videos in the pre-log histories or in events before the held-out window."""
    from onerec.tokenizer.embeddings import catalogue_from_kuairand

    ds = snap.dataset()
    train_ev = ds.events[ds.events["time_ms"] < snap.holdout_start_ms]
    seen = set(train_ev["video_id"].tolist())
    history = kuairand.read_history(snap.data_dir)
    if history is not None:
        for col in ("watch_seq", "long_watch_seq", "like_seq"):
            for seq in history[col]:
                seen.update(int(v) for v in seq)
    cat = catalogue_from_kuairand(dataclasses.replace(ds, events=train_ev))
    return cat.subset(np.asarray(sorted(seen), dtype=np.int64))


def refresh_codebook(cfg: Config, snapshot_dir: str | Path, out: str | Path, *,
                     root: str | Path) -> dict[str, Any]:
    """First cycle: fit the codebook on the videos seen so far. Later cycles: encode the videos
    first seen since then with the production codebook's centroids (existing IDs unchanged), or
    refit when drift says so (`onerec.tokenizer.build.refresh`)."""
    from onerec.tokenizer import Codebook, ItemEmbedder, fit_codebook
    from onerec.tokenizer.build import refresh

    snap = Snapshot.load(snapshot_dir)
    cat = _seen_catalogue(snap)
    prod = registry.read_production(root)
    t0 = time.perf_counter()
    info: dict[str, Any] = {}
    extra_json: dict[str, Any] = {}
    if prod is None:
        embedder = ItemEmbedder(cfg.tokenizer)
        emb = embedder.fit_transform(cat, progress=False)
        cb = fit_codebook(emb.vectors(), emb.item_ids, cfg.tokenizer,
                          config_fingerprint=cfg.fingerprint())
        info = {"mode": "fit", "n_new_items": len(cb.item_ids)}
    else:
        old = Codebook.load(prod.codebook)
        fitted = TokenizerConfig(**{k: v for k, v in old.settings.items()
                                    if k in TokenizerConfig.__dataclass_fields__})
        embedder = ItemEmbedder.load(fitted, prod.codebook)
        new_ids = cat.item_ids[~np.isin(cat.item_ids, old.item_ids)]
        emb_new = embedder.transform(cat, new_ids, progress=False)
        refit_embedder = ItemEmbedder(cfg.tokenizer)

        def refit_data() -> tuple[np.ndarray, np.ndarray]:
            emb = refit_embedder.fit_transform(cat, progress=False)
            return emb.item_ids, emb.vectors()

        res = refresh(old, emb_new.item_ids, emb_new.vectors(), cfg.tokenizer, refit_data,
                      config_fingerprint=cfg.fingerprint())
        cb = res.codebook
        if res.refit:
            embedder = refit_embedder
            extra_json["mapping"] = res.mapping
        mode = "refit" if res.refit else ("refresh" if len(res.new_item_ids) else "unchanged")
        info = {"mode": mode, "n_new_items": len(res.new_item_ids),
                "parent_fingerprint": old.fingerprint, "drift": res.drift.to_dict()}
    arrays, meta = embedder.to_state()
    cb.save(out, extra_arrays={"embedder": arrays}, extra_json={"embedder": meta, **extra_json},
            plot=False)
    summary = {**info, "n_items": len(cb.item_ids), "version": cb.version,
               "revision": cb.revision, "fingerprint": cb.fingerprint,
               "collision_rate": cb.metrics.get("collision_rate_after_refresh",
                                                cb.metrics.get("collision_rate")),
               "wall_s": round(time.perf_counter() - t0, 3)}
    (Path(out) / "refresh.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


# -- models ---------------------------------------------------------------------------------------
def load_space(codebook_dir: str | Path) -> ItemSpace:
    from onerec.tokenizer import Codebook

    return ItemSpace.from_codebook(Codebook.load(codebook_dir))


def transfer_weights(old: OneRec, old_item_ids: np.ndarray, new: OneRec,
                     new_item_ids: np.ndarray) -> dict[str, int]:
    """Copy `old`'s weights into `new`, whose catalogue grew (a codebook refresh).

    Item embeddings follow the video id (a new video keeps its fresh initialisation); code
    embeddings and output heads copy each level's old codes (a level's vocabulary only grows on
    a refresh: the disambiguation level); the transition memory's rows and successors follow
    the video id too (a video no longer in the catalogue drops out); everything else must match
    in shape.
    """
    src = old.state_dict()
    dst = new.state_dict()
    old_rows = {int(v): i + 1 for i, v in enumerate(np.asarray(old_item_ids).tolist())}
    pairs = [(i + 1, old_rows[int(v)]) for i, v in enumerate(np.asarray(new_item_ids).tolist())
             if int(v) in old_rows]
    carried = 0
    with torch.no_grad():
        for name, t in dst.items():
            if name in ("item_codes", "code_offsets"):
                continue  # the new codebook's, by construction
            if name in ("next_items", "next_counts", "out_counts"):
                continue  # `_transfer_transitions`, below: the three buffers move together
            s = src[name]
            if name == "item_emb.weight":
                to, fr = (torch.tensor(x, dtype=torch.long) for x in zip(*pairs, strict=True))
                t[to] = s[fr]
                t[0] = s[0]
                carried = len(pairs)
            elif name == "code_emb.weight":
                for lvl, k_old in enumerate(old.vocab_sizes):
                    o_off, n_off = int(old.code_offsets[lvl]), int(new.code_offsets[lvl])
                    t[n_off:n_off + k_old] = s[o_off:o_off + k_old]
            elif t.shape == s.shape:
                t.copy_(s)
            elif name.startswith("heads.") and t.shape[1:] == s.shape[1:] and t.shape[0] >= s.shape[0]:
                t[: s.shape[0]] = s
            else:
                raise StageError(f"warm start: {name} has shape {tuple(s.shape)} in production, "
                                 f"{tuple(t.shape)} in the candidate (another model Config?)")
    if "next_items" in dst:
        _transfer_transitions(src, dst, pairs)
    new.load_state_dict(dst)
    return {"items_carried": carried, "items_new": len(new_item_ids) - carried}


def _transfer_transitions(src: dict[str, torch.Tensor], dst: dict[str, torch.Tensor],
                          pairs: list[tuple[int, int]]) -> None:
    """The transition memory re-indexed to the new catalogue: row and successor indices follow
    the video id (`pairs`: new row, old row). A production model without the memory leaves the
    candidate's empty table (training fills it); a successor that left the catalogue is
    dropped from its row, and its count from the row's total stays (the chain's denominator
    counts every successor seen, kept or not)."""
    if "next_items" not in src:
        return
    if src["next_items"].shape[1] != dst["next_items"].shape[1]:
        raise StageError(f"warm start: model.transition_neighbors is "
                         f"{src['next_items'].shape[1]} in production, "
                         f"{dst['next_items'].shape[1]} in the candidate")
    to_new = torch.zeros(src["next_items"].shape[0], dtype=torch.long)
    to, fr = (torch.tensor(x, dtype=torch.long) for x in zip(*pairs, strict=True))
    to_new[fr] = to
    with torch.no_grad():
        succ = to_new[src["next_items"][fr]]  # 0: an empty slot or a video that left
        dst["next_items"].zero_()
        dst["next_counts"].zero_()
        dst["out_counts"].zero_()
        dst["next_items"][to] = succ
        dst["next_counts"][to] = torch.where(succ > 0, src["next_counts"][fr], 0.0)
        dst["out_counts"][to] = src["out_counts"][fr]


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def pretrain(cfg: Config, snapshot_dir: str | Path, codebook_dir: str | Path, out: str | Path, *,
             root: str | Path, warm_start: bool = True, epochs: float = 1.0,
             max_steps: int | None = None, time_budget_s: float | None = None,
             log: Log | None = None) -> dict[str, Any]:
    """Streaming pretraining for one cycle: warm-start from the production checkpoint and train
    on the requests after its watermark, or (first cycle, a refit, `warm_start=False`) from
    scratch on every request before the held-out window. Steps: `epochs` passes over those
    requests (or `max_steps`), cut by `time_budget_s`."""
    from onerec.stream import requests_from_events
    from onerec.train import train

    snap = Snapshot.load(snapshot_dir)
    space = load_space(codebook_dir)
    events = snap.events()
    events = events[events["time_ms"] < snap.holdout_start_ms].reset_index(drop=True)
    reqs = requests_from_events(events, space.index, cfg.data,
                                history=kuairand.read_history(snap.data_dir))
    prod = registry.read_production(root)
    init, cold_reason, watermark_in, transfer = None, None, -1, {}
    if not warm_start:
        cold_reason = "warm start off"
    elif prod is None:
        cold_reason = "no production model (first cycle)"
    else:
        prod_space = load_space(prod.codebook)
        cb_meta = json.loads((Path(codebook_dir) / "refresh.json").read_text())
        if cb_meta.get("mode") == "refit":
            cold_reason = "codebook refit: semantic IDs changed meaning"
        else:
            old = load_model(prod.checkpoint, prod_space.fingerprint).model
            init = build_model(cfg, space.codes, space.vocab_sizes)
            transfer = transfer_weights(old, prod_space.item_ids, init, space.item_ids)
            watermark_in = prod.watermark_ms
    keep = np.flatnonzero(reqs.time_ms > watermark_in)
    reqs = reqs.select(keep)
    if len(reqs) == 0:
        raise StageError(f"no training requests after the watermark {ms_to_iso(watermark_in)} "
                         f"and before the held-out window ({ms_to_iso(snap.holdout_start_ms)})")
    steps = max_steps or max(1, math.ceil(len(reqs) * epochs / cfg.train.batch_size))
    summary: dict[str, Any] = {
        "warm_start": init is not None, "cold_reason": cold_reason,
        "init_version": prod.version if init is not None and prod else None, **transfer,
        "watermark_in_ms": watermark_in, "n_requests": len(reqs), "n_targets": reqs.n_targets,
        "first_request_ms": int(reqs.time_ms.min()), "last_request_ms": int(reqs.time_ms.max()),
        "planned_steps": steps, "codebook_fingerprint": space.fingerprint}
    dest = Path(out) if _rank() == 0 else Path(out).with_name(f".{Path(out).name}.r{_rank()}")
    with atomic_dir(dest) as tmp, Reporter("pretrain", total=steps, budget_s=time_budget_s,
                                           batch_size=cfg.train.batch_size, log=log) as report:
        model, res = train(cfg, reqs, space.codes, space.vocab_sizes, tmp,
                           codebook_fingerprint=space.fingerprint, resume=False, max_steps=steps,
                           init_from=init, time_budget_s=time_budget_s, log=report)
        shutil.rmtree(tmp / "tb", ignore_errors=True)
        summary.update({"steps": res.steps, "final_loss": res.final_loss,
                        "budget_bound": res.budget_bound,
                        "train_s": round(res.wall_s, 3), "watermark_ms": res.watermark_ms,
                        "params": model.num_params()})
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
        (tmp / "history.json").write_text(json.dumps(res.history))  # the run page's curves
    if _rank() != 0:
        shutil.rmtree(dest, ignore_errors=True)
    return summary


def _require(stage: str) -> None:
    if not stage_available(stage):
        raise StageUnavailable(f"{stage}: needs {STAGE_MODULES[stage]}, not installed in this "
                               "build; leave the stage out of the stage list")


def _window_requests(snap: Snapshot, space: ItemSpace, cfg: Config, after_ms: int,
                     positive_only: bool = True) -> Any:
    from onerec.stream import requests_from_events

    events = snap.events()
    events = events[events["time_ms"] < snap.holdout_start_ms].reset_index(drop=True)
    reqs = requests_from_events(events, space.index, cfg.data, positive_only=positive_only,
                                history=kuairand.read_history(snap.data_dir))
    return reqs.select(np.flatnonzero(reqs.time_ms > after_ms))


def train_reward(cfg: Config, snapshot_dir: str | Path, codebook_dir: str | Path,
                 out: str | Path, *, time_budget_s: float | None = None,
                 log: Log | None = None) -> dict[str, Any]:
    """P-Score reward model (onerec.reward) on every impression before the held-out window,
    evaluated (AUC per task) on the held-out impressions."""
    _require("reward")
    from onerec import reward as rw

    snap = Snapshot.load(snapshot_dir)
    with Reporter("reward", total=cfg.reward.steps, budget_s=time_budget_s,
                  batch_size=cfg.reward.batch_size, log=log) as report:
        _, summary = rw.fit_p_score(cfg, snap.events(), load_space(codebook_dir),
                                    snap.holdout_start_ms, out,
                                    history=kuairand.read_history(snap.data_dir),
                                    time_budget_s=time_budget_s, log=report)
    (Path(out) / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_num))
    return summary


def align(cfg: Config, snapshot_dir: str | Path, codebook_dir: str | Path,
          pretrained_dir: str | Path, reward_dir: str | Path, out: str | Path, *,
          time_budget_s: float | None = None, log: Log | None = None) -> dict[str, Any]:
    """ECPO alignment (onerec.ecpo) of the pretrained candidate with the reward model, on the
    cycle's training requests. The output is a model folder like pretrain's (same watermark)."""
    _require("align")
    from onerec import ecpo
    from onerec import reward as rw

    snap = Snapshot.load(snapshot_dir)
    space = load_space(codebook_dir)
    pre = json.loads((Path(pretrained_dir) / "summary.json").read_text())
    model = load_model(Path(pretrained_dir) / CKPT_NAME, space.fingerprint).model
    reward_model, _, _ = rw.load_reward_model(reward_dir, space.fingerprint)
    reqs = _window_requests(snap, space, cfg, pre["watermark_in_ms"])
    with atomic_dir(out) as tmp, Reporter("align", total=cfg.align.steps, budget_s=time_budget_s,
                                          batch_size=cfg.align.batch_size, log=log) as report:
        model, res = ecpo.align(cfg, model, reward_model, reqs, space, tmp,
                                items_table=kuairand.load(snap.data_dir).items,
                                time_budget_s=time_budget_s, log=report)
        last = res.history[-1] if res.history else {}
        summary = {**pre, "aligned": True, "align_steps": res.steps,
                   "align_s": round(res.wall_s, 3),
                   **{f"align_{k}": last[k] for k in ("reward", "legality", "kl") if k in last}}
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_num))
        (tmp / "history.json").write_text(json.dumps(res.history, default=_json_num))
    return summary


def passthrough(model_dir: str | Path, out: str | Path, reason: str) -> dict[str, Any]:
    """A stage left out of the stage list: its output is its input, and says so."""
    with atomic_dir(out) as tmp:
        shutil.copytree(model_dir, tmp, dirs_exist_ok=True)
        summary = json.loads((tmp / "summary.json").read_text())
        summary.setdefault("skipped", []).append(reason)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
    return {"skipped": reason}


def _json_num(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


# -- evaluation gate -------------------------------------------------------------------------------
def heldout_users(snap: Snapshot, max_users: int | None) -> tuple[list[int], dict[int, list[int]]]:
    """The users the gate measures: those with a positive held-out event and behaviour before
    it, independent of any codebook, so candidate and production see the same users."""
    from onerec.evaluate import test_targets

    events = snap.events()
    before = events[events["time_ms"] < snap.holdout_start_ms]
    targets = test_targets(events[events["time_ms"] >= snap.holdout_start_ms])
    known = set(before["user_id"].tolist())
    history = kuairand.read_history(snap.data_dir)
    if history is not None:
        known |= set(history["user_id"].tolist())
    users = sorted(u for u in targets if u in known)
    if max_users is not None and len(users) > max_users:
        rng = np.random.default_rng(0)
        users = sorted(rng.choice(users, max_users, replace=False).tolist())
    return users, targets


def heldout_contexts(cfg: Config, snap: Snapshot, space: ItemSpace, users: list[int]) -> Any:
    """The Batch of `users`' contexts as they stood when the held-out window opened (history
    and every event before it): what `evaluate` generates from."""
    from onerec.stream import contexts_from_histories, requests_from_events

    events = snap.events()
    state: dict[int, tuple[list[int], list[int], list[int]]] = {}
    requests_from_events(events[events["time_ms"] < snap.holdout_start_ms], space.index,
                         cfg.data, history=kuairand.read_history(snap.data_dir),
                         final_state=state)
    empty: tuple[list[int], list[int], list[int]] = ([], [], [])
    return contexts_from_histories([state.get(u, empty)[0] for u in users], cfg.data,
                                   pos=[state.get(u, empty)[1] for u in users],
                                   long=[state.get(u, empty)[2] for u in users])


def evaluate(cfg: Config, snapshot_dir: str | Path, checkpoint: str | Path,
             codebook_dir: str | Path, *, max_users: int | None = None,
             name: str = "evaluate") -> dict[str, Any]:
    """Offline metrics of one model on the held-out window: Recall/NDCG@5,10 over each user's
    positive held-out videos (full ranking, constrained beam search), legality, coverage@10.
    `name`: the progress row's (users generated for, of all)."""
    space = load_space(codebook_dir)
    model = load_model(checkpoint, space.fingerprint).model
    return evaluate_model(cfg, Snapshot.load(snapshot_dir), model, space, max_users=max_users,
                          name=name)


def evaluate_model(cfg: Config, snap: Snapshot, model: OneRec, space: ItemSpace, *,
                   max_users: int | None = None, name: str = "evaluate") -> dict[str, Any]:
    """`evaluate` of a loaded model (a bench re-scoring one checkpoint at several settings)."""
    from onerec.evaluate import coverage, rank_metrics_multi
    from onerec.recommend import recommend

    users, targets = heldout_users(snap, max_users)
    if not users:
        raise StageError("the held-out window has no user with a positive event to measure")
    ctx = heldout_contexts(cfg, snap, space, users)
    t0 = time.perf_counter()
    with Reporter(name, total=len(users), unit="user", batch_size=1) as report:
        recs = recommend(model, space, ctx, beam_width=cfg.serve.beam_width, top_n=10,
                         log=report)
    metrics = rank_metrics_multi(recs.items, [targets[u] for u in users], ks=(5, 10))
    metrics["legality"] = recs.legality
    metrics["coverage@10"] = coverage(recs.items, len(space), 10)
    return {"metrics": {k: float(v) for k, v in metrics.items()}, "n_users": len(users),
            "users": users, "per_user": per_user_metrics(recs.items, [targets[u] for u in users]),
            "eval_s": round(time.perf_counter() - t0, 3)}


def per_user_metrics(ranked: list[list[int]], target_sets: list[list[int]]
                     ) -> dict[str, list[float]]:
    """Recall/NDCG@10 of each user on its own (`rank_metrics_multi` of one row): the values the
    gate's paired tests compare, users being the unit, not the pooled mean."""
    from onerec.evaluate import rank_metrics_multi

    rows = [rank_metrics_multi([r], [t], ks=(10,)) for r, t in zip(ranked, target_sets,
                                                                   strict=True)]
    return {k: [row[k] for row in rows] for k in ("recall@10", "ndcg@10")}


def evaluate_popularity(snapshot_dir: str | Path, *, max_users: int | None = None
                        ) -> dict[str, Any]:
    """The popularity baseline (most-liked/long-viewed videos before the window, the same list
    for everyone) on the users and targets `evaluate` measures: the floor the gate holds every
    candidate to, with its per-user values for the paired test."""
    from onerec.baselines import fit_popularity
    from onerec.evaluate import rank_metrics_multi

    snap = Snapshot.load(snapshot_dir)
    users, targets = heldout_users(snap, max_users)
    ev = snap.events()
    ev = ev[ev["time_ms"] < snap.holdout_start_ms]
    pos = ev[(ev["long_view"] == 1) | (ev["is_like"] == 1)]
    recs = fit_popularity([pos["video_id"].tolist()]).recommend(len(users), 10)
    target_sets = [targets[u] for u in users]
    metrics = rank_metrics_multi(recs, target_sets, ks=(5, 10))
    return {"metrics": {k: float(v) for k, v in metrics.items()}, "n_users": len(users),
            "users": users, "per_user": per_user_metrics(recs, target_sets)}


@dataclass
class GateResult:
    decision: str  # "promote" or "blocked"
    reasons: list[str]
    # metric -> candidate, production, floor, popularity, vs_production {...}, vs_popularity {...}
    compared: dict[str, dict[str, Any]]


def paired_test(a: Any, b: Any, *, z: float = 1.645) -> dict[str, Any]:
    """One-sided paired test of per-user values d_u = a_u - b_u (the same users): the mean
    difference, its standard error, the upper bound mean + z se (< 0: `a` significantly below
    `b`, one-sided 5% at z = 1.645) and the users a test needs to detect a difference of the
    observed size at 80% power (`onerec.power`)."""
    from onerec.power import paired_users_needed

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) == 0:
        raise ValueError(f"paired test: per-user values of different users {x.shape}, {y.shape}")
    d = x - y
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else 0.0
    return {"mean_diff": float(d.mean()), "se": se, "upper": float(d.mean()) + z * se,
            "n_users": len(d), "users_needed": paired_users_needed(x, y) if len(d) > 1 else None}


def gate(candidate: dict[str, float], production: dict[str, float] | None, *,
         popularity: dict[str, float] | None = None, tolerance: float = 0.05,
         metrics: tuple[str, ...] = ("ndcg@10", "recall@10"), min_legality: float = 0.99,
         per_user: dict[str, dict[str, Any]] | None = None, popularity_floor: bool = True,
         z: float = 1.645) -> GateResult:
    """Promote unless the candidate generates illegal IDs, is worse than production by more
    than `tolerance` (relative) on a gated metric, or (`popularity_floor`) is significantly
    below popularity on one. No production: the first model, held to the popularity floor only.

    `per_user`: "candidate", "production", "popularity" -> metric -> per-user values, all on the
    same users (users are the unit). With them, "worse beyond the tolerance" must also hold
    beyond noise: the paired difference to the floor, d_u = cand_u - (1 - tolerance) prod_u, is
    below 0 at one-sided 5% (mean + z se < 0). A small held-out window then does not block a
    candidate by chance, and a clearly worse one is still blocked (measured:
    tests/test_pipeline.py). The popularity floor is the same test with d_u = cand_u - pop_u
    and no tolerance: a model that cannot beat the same top 10 for everyone is not shipped,
    but one level with it within noise is. Without per-user values both are point comparisons."""
    if popularity_floor and popularity is None:
        raise ValueError("gate: popularity_floor needs the popularity metrics on the same users")
    per_user = per_user or {}
    cand_u, prod_u, pop_u = (per_user.get(k, {}) for k in ("candidate", "production",
                                                            "popularity"))
    reasons: list[str] = []
    compared: dict[str, dict[str, Any]] = {}
    if candidate.get("legality", 1.0) < min_legality:
        reasons.append(f"legality {candidate['legality']:.4f} < {min_legality}")
    for m in metrics:
        cand = float(candidate[m])
        row: dict[str, Any] = {"candidate": cand, "production": None, "floor": None,
                               "popularity": None}
        if production is not None:
            prod = float(production[m])
            floor = prod * (1.0 - tolerance)
            row.update({"production": prod, "floor": floor})
            worse, test = cand < floor, ""
            if m in cand_u and m in prod_u:
                raw = paired_test(cand_u[m], prod_u[m], z=z)
                vs = paired_test(cand_u[m], (1.0 - tolerance) * np.asarray(prod_u[m]), z=z)
                vs = {"mean_diff": raw["mean_diff"], "diff_to_floor": vs["mean_diff"],
                      "se": vs["se"], "upper": vs["upper"], "n_users": vs["n_users"],
                      "users_needed": raw["users_needed"]}  # to detect cand - prod as observed
                row["vs_production"] = vs
                worse = worse and vs["upper"] < 0
                test = (f"; paired per-user difference to the floor {vs['diff_to_floor']:+.4f}, "
                        f"one-sided 5% upper bound {vs['upper']:+.4f} < 0, n={vs['n_users']}")
            if worse:
                reasons.append(f"{m} {cand:.4f} < {floor:.4f} (production {prod:.4f} "
                               f"- {tolerance:.0%}){test}")
        if popularity is not None:
            pop = float(popularity[m])
            row["popularity"] = pop
            below, test = cand < pop, "point comparison, no per-user values"
            if m in cand_u and m in pop_u:
                vs = paired_test(cand_u[m], pop_u[m], z=z)
                row["vs_popularity"] = vs
                below = vs["upper"] < 0
                test = (f"paired per-user difference {vs['mean_diff']:+.4f}, one-sided 5% upper "
                        f"bound {vs['upper']:+.4f} < 0, n={vs['n_users']}")
            if popularity_floor and below:
                reasons.append(f"{m} {cand:.4f} significantly below popularity {pop:.4f} "
                               f"({test})")
        compared[m] = row
    if reasons:
        return GateResult("blocked", reasons, compared)
    why = ["no production model: first deployment" if production is None else
           f"not worse than production beyond {tolerance:.0%} on {', '.join(metrics)}"]
    if popularity_floor:
        why.append(f"not significantly below popularity on {', '.join(metrics)}")
    return GateResult("promote", why, compared)


def evaluate_gate(cfg: Config, snapshot_dir: str | Path, model_dir: str | Path,
                  codebook_dir: str | Path, out: str | Path, *, root: str | Path,
                  tolerance: float = 0.05, max_users: int | None = 1000,
                  popularity_floor: bool = True) -> dict[str, Any]:
    """Measure the candidate, the production model and popularity on the same held-out users,
    then gate. Returns (and writes to out/gate.json) the decision; the caller stops on
    "blocked"."""
    snap = Snapshot.load(snapshot_dir)
    cand = evaluate(cfg, snapshot_dir, Path(model_dir) / CKPT_NAME, codebook_dir,
                    max_users=max_users, name="evaluate-candidate")
    prod = registry.read_production(root)
    prod_eval = (evaluate(cfg, snapshot_dir, prod.checkpoint, prod.codebook, max_users=max_users,
                          name="evaluate-production") if prod is not None else None)
    pop = evaluate_popularity(snapshot_dir, max_users=max_users)
    evals = {"candidate": cand, "production": prod_eval, "popularity": pop}
    if any(e is not None and e["users"] != cand["users"] for e in evals.values()):
        raise StageError("gate: the models were not measured on the same held-out users")
    per_user = {k: e.pop("per_user") for k, e in evals.items() if e is not None}
    for e in evals.values():
        if e is not None:
            e.pop("users")
    result = gate(cand["metrics"], prod_eval["metrics"] if prod_eval else None,
                  popularity=pop["metrics"], tolerance=tolerance, per_user=per_user,
                  popularity_floor=popularity_floor)
    summary = {"decision": result.decision, "reasons": result.reasons,
               "compared": result.compared, "tolerance": tolerance,
               "popularity_floor": popularity_floor,
               "candidate": cand, "production": prod_eval,
               "production_version": prod.version if prod else None,
               "popularity": pop["metrics"],
               "heldout": [ms_to_iso(snap.holdout_start_ms), ms_to_iso(snap.until_ms)]}
    with atomic_dir(out) as tmp:
        (tmp / "gate.json").write_text(json.dumps(summary, indent=2))
    return summary


# -- export and publish ----------------------------------------------------------------------------
def export(cfg: Config, model_dir: str | Path, codebook_dir: str | Path, out: str | Path, *,
           reward_dir: str | Path | None = None, model_name: str = "onerec") -> dict[str, Any]:
    """The whole generation as one ONNX graph in a Triton model repository (onerec.export).

    The version carries the cycle's reward model (`reward_dir`, what ECPO aligned with) when
    `serve.rm_selection` is on, so serving re-ranks with RM selection, the behaviour model's
    winner; `reward_model` in the result says whether it does and why not."""
    _require("export")
    from onerec.export import export_version

    space = load_space(codebook_dir)
    model = load_model(Path(model_dir) / CKPT_NAME, space.fingerprint).model
    carried, why = _carried_reward(cfg, reward_dir)
    t0 = time.perf_counter()
    with atomic_dir(out) as tmp:
        version_dir = export_version(model, space, cfg, tmp, model_name=model_name, version=1,
                                     reward_model=carried)
        files = sorted(str(p.relative_to(tmp)) for p in version_dir.rglob("*") if p.is_file())
    return {"repository": str(out), "model_name": model_name, "files": files,
            "reward_model": {"carried": carried is not None, "why": why},
            "export_s": round(time.perf_counter() - t0, 3)}


def _carried_reward(cfg: Config, reward_dir: str | Path | None) -> tuple[Path | None, str]:
    """-> (the reward-model folder a version should carry or None, the reason)."""
    if reward_dir is None:
        return None, "no reward model given: served in beam order"
    if not cfg.serve.rm_selection:
        return None, "serve.rm_selection is off: served in beam order"
    from onerec.reward import holds_reward_model

    if not holds_reward_model(reward_dir):
        return None, "the reward stage did not run (no reward model): served in beam order"
    return Path(reward_dir), "RM selection with the cycle's reward model"


def model_version(model_dir: str | Path, until: str) -> str:
    """A version label: the cycle's day and a hash of the model's weights (not of the whole
    checkpoint, whose alignment history keeps wall times: the same weights trained on a busy
    machine and an idle one get the same label, so the A/B splits their users the same way).
    A state file without model weights is not a model to publish: StageError names it."""
    path = Path(model_dir) / CKPT_NAME / "state.pt"
    try:
        state = load_torch_state(path)
    except Exception as e:  # torn, truncated or foreign: torch raises many kinds
        raise StageError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise StageError(f"{path}: holds no model weights (a checkpoint's 'model' state dict)")
    return f"{until}-{tensors_digest(state['model'])[:8]}"


def publish(cfg: Config, snapshot_dir: str | Path, model_dir: str | Path,
            codebook_dir: str | Path, gate_dir: str | Path, out: str | Path, *,
            root: str | Path, export_dir: str | Path | None = None, env: str = "dev",
            storage_prefix: str = "", canary_percent: int = 10, promote: bool = False,
            gitops_repo: str | Path | None = None) -> dict[str, Any]:
    """Store the version under ROOT/models and commit it to the GitOps repository as a canary,
    held as the candidate in ROOT/canary: production (what the next cycle warm-starts from and
    the gate compares against) moves only when the rollout promotes it (`onerec rollout promote`,
    `registry.follow_rollout`); a rollback discards it. With `promote` (a laptop has no live
    traffic to A/B) it is promoted at once and becomes production here. Refuses a candidate the
    gate blocked."""
    from onerec import gitops

    snap = Snapshot.load(snapshot_dir)
    verdict = json.loads((Path(gate_dir) / "gate.json").read_text())
    if verdict["decision"] != "promote":
        raise StageError(f"publish: the gate blocked this candidate ({'; '.join(verdict['reasons'])})")
    summary = json.loads((Path(model_dir) / "summary.json").read_text())
    version = model_version(model_dir, snap.until)
    store = Path(root) / registry.MODELS / version
    with atomic_dir(store) as tmp:
        if export_dir is not None:
            shutil.copytree(export_dir, tmp, dirs_exist_ok=True)
        else:
            shutil.copytree(Path(model_dir) / CKPT_NAME, tmp / CKPT_NAME)
            shutil.copytree(codebook_dir, tmp / "codebook")
    prefix = storage_prefix.rstrip("/") or (Path(root) / registry.MODELS).resolve().as_uri()
    uri = f"{prefix}/{version}"
    repo = Path(gitops_repo) if gitops_repo else Path(root) / registry.GITOPS
    if not (repo / ".git").exists():
        gitops.init_repo(repo)
    m = verdict["candidate"]["metrics"]
    reason = (f"continuous training {snap.until}: gate {verdict['decision']} "
              f"(ndcg@10 {m['ndcg@10']:.4f}, recall@10 {m['recall@10']:.4f}; "
              f"{verdict['reasons'][0]})")
    commits = [gitops.publish(repo, env, version, uri, canary_percent, reason)]
    if promote:
        commits.append(gitops.promote(repo, env, "no live traffic to A/B locally; " + reason))
    meta = {"version": version, "storage_uri": uri, "watermark_ms": summary["watermark_ms"],
            "until": snap.until, "metrics": m, "published_at": ms_to_iso(int(time.time() * 1000)),
            "canary": not promote}
    write = registry.write_production if promote else registry.write_canary
    held = write(root, checkpoint=Path(model_dir) / CKPT_NAME, codebook=Path(codebook_dir),
                 meta=meta, reference=Path(snapshot_dir) / "reference.json")
    result = {**meta, "gitops_repo": str(repo), "commits": commits,
              "state": gitops.read_state(repo, env).describe(), "held_as": held.path.name}
    with atomic_dir(out) as tmp:
        (tmp / "publish.json").write_text(json.dumps(result, indent=2))
    return result


# -- bookkeeping ------------------------------------------------------------------------------------
def run_stage(stage: str, root: str | Path, run_id: str, fn: Callable[..., dict[str, Any]], /,
              *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Run one stage and record what happened in ROOT/runs/<run_id>/<stage>.json (also when it
    fails: a report should say which stage stopped the cycle and why)."""
    t0 = time.perf_counter()
    try:
        out = fn(*args, **kwargs)
    except Exception as e:
        registry.record(root, run_id, stage, {"status": "failed", "error": str(e),
                                              "wall_s": round(time.perf_counter() - t0, 3)})
        raise
    status = "skipped" if "skipped" in out and len(out) == 1 else "ran"
    registry.record(root, run_id, stage, {"status": status, "wall_s":
                                          round(time.perf_counter() - t0, 3), "result": out})
    return out

"""The continuous-training state follows the rollout: a canary is held as the candidate, promote
moves it into production, rollback discards it and the next cycle starts from the stable model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from onerec import gitops, registry, stages
from onerec.app.cli import app
from onerec.config import Config

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "kuairand-pure"
UNTIL = "2022-04-29"  # the next cycle: held-out day 04-28, training before it
STABLE_WM = stages.day_ms("2022-04-26") - 1  # the production model trained up to 04-25
CANARY_WM = stages.day_ms("2022-04-27") - 1  # the canary one day further


def _model(folder: Path, watermark_ms: int, payload: bytes) -> Path:
    """A model folder as pretrain writes it: a state file with model weights (`payload`'s
    bytes, so each model gets its own version label) and the summary the state reads."""
    (folder / "checkpoint").mkdir(parents=True)
    torch.save({"model": {"w": torch.tensor(list(payload), dtype=torch.uint8)}},
               folder / "checkpoint" / "state.pt")
    (folder / "summary.json").write_text(json.dumps({"watermark_ms": watermark_ms}))
    return folder


def _payload(checkpoint: Path) -> bytes:
    """The bytes `_model` stored as a checkpoint's weights: which model a folder holds."""
    return bytes(torch.load(checkpoint / "state.pt")["model"]["w"].tolist())


def _cycle_inputs(tmp: Path, until: str) -> dict[str, Path]:
    snap = tmp / "snapshot"
    snap.mkdir()
    fields = {"data_dir": str(DATA), "until": until, "until_ms": stages.day_ms(until),
              "holdout_start_ms": stages.day_ms(until) - stages.DAY_MS, "watermark_ms": -1,
              "production_version": None, "n_batch_events": 1, "n_train_events": 1,
              "n_holdout_events": 1, "fingerprint": "x"}
    (snap / "snapshot.json").write_text(json.dumps(fields))
    gate = tmp / "gate"
    gate.mkdir()
    (gate / "gate.json").write_text(json.dumps({
        "decision": "promote", "reasons": ["not worse"],
        "candidate": {"metrics": {"ndcg@10": 0.1, "recall@10": 0.2}}}))
    codebook = tmp / "codebook"
    codebook.mkdir()
    (codebook / "codebook.json").write_text("{}")
    return {"snapshot_dir": snap, "gate_dir": gate, "codebook_dir": codebook}


def _publish(tmp: Path, root: Path, name: str, watermark_ms: int, until: str,
             promote: bool) -> dict:
    work = tmp / name
    work.mkdir()
    model = _model(work / "model", watermark_ms, name.encode())
    return stages.publish(Config.from_preset("tiny"), model_dir=model, out=work / "out",
                          root=root, promote=promote, **_cycle_inputs(work, until))


@pytest.fixture()
def canary_state(tmp_path: Path) -> tuple[Path, dict, dict]:
    """ROOT with a promoted production model and a newer version published as a canary."""
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    root = tmp_path / "state"
    stable = _publish(tmp_path, root, "v1", STABLE_WM, "2022-04-26", promote=True)
    canary = _publish(tmp_path, root, "v2", CANARY_WM, "2022-04-27", promote=False)
    return root, stable, canary


def _next_cycle_watermark(root: Path, out: Path) -> int:
    """What the next cycle starts from: validate's watermark (pretrain reads the same model)."""
    return stages.validate(Config.from_preset("tiny"), DATA, out, until=UNTIL,
                           root=root)["watermark_ms"]


def test_publish_as_canary_holds_the_candidate_and_leaves_production(canary_state):
    root, stable, canary = canary_state
    assert stable["held_as"] == "production" and canary["held_as"] == "canary"
    prod, cand = registry.read_production(root), registry.read_canary(root)
    assert prod.version == stable["version"] and prod.watermark_ms == STABLE_WM
    assert cand.version == canary["version"] and cand.watermark_ms == CANARY_WM
    assert _payload(cand.checkpoint) == b"v2"
    assert _payload(prod.checkpoint) == b"v1"
    state = gitops.read_state(root / registry.GITOPS, "dev")
    assert state.stable.version == prod.version and state.canary.version == cand.version


def test_rollback_discards_the_candidate_and_the_next_cycle_starts_from_stable(canary_state,
                                                                               tmp_path):
    root, stable, _ = canary_state
    res = CliRunner().invoke(app, ["rollout", "rollback", "dev", "--repo",
                                   str(root / registry.GITOPS)])
    assert res.exit_code == 0, res.output
    assert "discarded" in " ".join(res.output.split())
    assert registry.read_canary(root) is None and not (root / registry.CANARY).exists()
    assert registry.read_production(root).version == stable["version"]
    assert _next_cycle_watermark(root, tmp_path / "snap") == STABLE_WM


def test_promote_makes_the_candidate_production_and_keeps_the_previous(canary_state, tmp_path):
    root, stable, canary = canary_state
    res = CliRunner().invoke(app, ["rollout", "promote", "dev", "--repo",
                                   str(root / registry.GITOPS), "--root", str(root)])
    assert res.exit_code == 0, res.output
    prod = registry.read_production(root)
    assert prod.version == canary["version"] and registry.read_canary(root) is None
    assert _payload(prod.checkpoint) == b"v2"
    assert registry.read_model(root, registry.PREVIOUS).version == stable["version"]
    assert _next_cycle_watermark(root, tmp_path / "snap") == CANARY_WM


def test_sync_follows_a_rollback_made_outside_the_cli(canary_state):
    root, _, _ = canary_state
    repo = root / registry.GITOPS
    gitops.rollback(repo, "dev", "by hand")
    assert registry.read_canary(root) is not None  # the state does not know yet
    res = CliRunner().invoke(app, ["rollout", "sync", "dev", "--repo", str(repo)])
    assert res.exit_code == 0, res.output
    assert registry.read_canary(root) is None
    res = CliRunner().invoke(app, ["rollout", "sync", "dev", "--repo", str(repo)])
    assert res.exit_code == 0 and "in step" in " ".join(res.output.split())


def test_follow_rollout_decides_by_the_trees_versions(tmp_path):
    ck, cb = _model(tmp_path / "m", 5, b"w") / "checkpoint", tmp_path / "m"
    registry.write_production(tmp_path, checkpoint=ck, codebook=cb,
                              meta={"version": "a", "watermark_ms": 1})
    registry.write_canary(tmp_path, checkpoint=ck, codebook=cb,
                          meta={"version": "b", "watermark_ms": 2})
    assert registry.follow_rollout(tmp_path, "a", "b") is None  # still the canary
    assert registry.read_canary(tmp_path).version == "b"
    assert registry.follow_rollout(tmp_path, "b", None) == "promoted"
    assert registry.read_production(tmp_path).version == "b"
    assert registry.read_model(tmp_path, registry.PREVIOUS).version == "a"
    registry.write_canary(tmp_path, checkpoint=ck, codebook=cb,
                          meta={"version": "c", "watermark_ms": 3})
    assert registry.follow_rollout(tmp_path, "b", "d") == "discarded"  # replaced by hand
    assert registry.follow_rollout(tmp_path, "b", None) is None  # nothing left to move
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_failed_production_write_leaves_the_old_model(tmp_path):
    ck, cb = _model(tmp_path / "m", 5, b"w") / "checkpoint", tmp_path / "m"
    root = tmp_path / "root"
    registry.write_production(root, checkpoint=ck, codebook=cb,
                              meta={"version": "a", "watermark_ms": 1})
    with pytest.raises(FileNotFoundError):
        registry.write_production(root, checkpoint=tmp_path / "missing", codebook=cb,
                                  meta={"version": "b", "watermark_ms": 2})
    assert registry.read_production(root).version == "a"
    assert registry.read_model(root, registry.PREVIOUS) is None
    assert [p.name for p in root.iterdir()] == [registry.PRODUCTION]

"""Rollout steps make the expected commits and patch files, and refuse what they should."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from onerec import gitops
from onerec.app.cli import app

ROOT = Path(__file__).resolve().parents[1]
URI = "s3://onerec-models/prod/v2"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout


def changed_files(repo: Path) -> list[str]:
    return sorted(git(repo, "show", "--name-only", "--format=", "HEAD").split())


def n_commits(repo: Path) -> int:
    return int(git(repo, "rev-list", "--count", "HEAD"))


def patch(repo: Path, env: str, name: str) -> dict:
    return yaml.safe_load((repo / "k8s/overlays" / env / name).read_text())


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    return gitops.init_repo(tmp_path / "gitops", ROOT / "k8s")


def test_init_repo_copies_k8s_in_one_commit(repo):
    assert n_commits(repo) == 1 and git(repo, "status", "--porcelain") == ""
    assert (repo / "k8s/overlays/prod/canary.yaml").is_file()
    state = gitops.read_state(repo, "prod")
    assert state.canary is None and state.stable.version == "v1"


def test_publish_writes_only_the_canary_patch(repo):
    sha = gitops.publish(repo, "prod", "v2", URI, 10)
    assert git(repo, "rev-parse", "HEAD").strip() == sha and n_commits(repo) == 2
    assert changed_files(repo) == ["k8s/overlays/prod/canary.yaml"]
    doc = patch(repo, "prod", "canary.yaml")
    assert doc["spec"]["predictor"] == {"canaryTrafficPercent": 10, "model": {"storageUri": URI}}
    assert doc["metadata"]["annotations"] == {gitops.CANARY_KEY: "v2"}
    subject, body = git(repo, "log", "-1", "--format=%s"), git(repo, "log", "-1", "--format=%b")
    assert subject.strip() == "prod: canary v2 at 10% (stable v1)"
    assert URI in body and "k8s/overlays/prod/canary.yaml" in body
    state = gitops.read_state(repo, "prod")
    assert (state.canary, state.canary_percent) == (gitops.ModelVersion("v2", URI), 10)


def test_ramp_changes_the_percentage_in_one_file(repo):
    gitops.publish(repo, "prod", "v2", URI, 5)
    gitops.ramp(repo, "prod", 50, reason="A/B healthy at 5%")
    assert changed_files(repo) == ["k8s/overlays/prod/canary.yaml"]
    assert patch(repo, "prod", "canary.yaml")["spec"]["predictor"]["canaryTrafficPercent"] == 50
    assert "A/B healthy at 5%" in git(repo, "log", "-1", "--format=%B")


def test_promote_moves_the_canary_into_stable_in_one_commit(repo):
    gitops.publish(repo, "prod", "v2", URI, 10)
    gitops.promote(repo, "prod", reason="A/B: promote")
    assert n_commits(repo) == 3
    assert changed_files(repo) == ["k8s/overlays/prod/canary.yaml",
                                   "k8s/overlays/prod/model-version.yaml"]
    stable = patch(repo, "prod", "model-version.yaml")
    assert stable["spec"]["predictor"]["model"]["storageUri"] == URI
    assert stable["metadata"]["annotations"][gitops.VERSION_KEY] == "v2"
    canary = patch(repo, "prod", "canary.yaml")
    assert "spec" not in canary and canary["metadata"]["annotations"][gitops.CANARY_KEY] == ""
    msg = git(repo, "log", "-1", "--format=%B")
    assert msg.startswith("prod: promote v2 to stable (was v1)") and "A/B: promote" in msg
    assert gitops.read_state(repo, "prod") == gitops.RolloutState(
        "prod", gitops.ModelVersion("v2", URI), None, 0)
    assert gitops.read_state(repo, "dev").stable.version == "v1"  # other envs untouched


def test_rollback_removes_the_canary_and_keeps_stable(repo):
    before = (repo / "k8s/overlays/prod/model-version.yaml").read_text()
    canary_before = (repo / "k8s/overlays/prod/canary.yaml").read_text()
    gitops.publish(repo, "prod", "v2", URI, 10)
    gitops.rollback(repo, "prod")
    assert changed_files(repo) == ["k8s/overlays/prod/canary.yaml"]
    assert (repo / "k8s/overlays/prod/model-version.yaml").read_text() == before
    assert (repo / "k8s/overlays/prod/canary.yaml").read_text() == canary_before
    assert git(repo, "log", "-1", "--format=%s").strip() == \
        "prod: roll back canary v2 (stable stays v1)"
    assert gitops.log(repo, "prod", 2) and "roll back" in gitops.log(repo, "prod", 1)[0]


def test_refusals_name_the_problem_and_commit_nothing(repo):
    with pytest.raises(gitops.GitOpsError, match="unknown environment 'staging'"):
        gitops.publish(repo, "staging", "v2", URI, 10)
    with pytest.raises(gitops.GitOpsError, match="nothing to promote"):
        gitops.promote(repo, "prod")
    with pytest.raises(gitops.GitOpsError, match="nothing to roll back"):
        gitops.rollback(repo, "prod")
    with pytest.raises(gitops.GitOpsError, match=r"0\.\.99"):
        gitops.publish(repo, "prod", "v2", URI, 100)
    with pytest.raises(gitops.GitOpsError, match="version"):
        gitops.publish(repo, "prod", "v 2", URI, 10)
    with pytest.raises(gitops.GitOpsError, match="storage_uri"):
        gitops.publish(repo, "prod", "v2", "models/v2", 10)
    with pytest.raises(gitops.GitOpsError, match="stable version already"):
        gitops.publish(repo, "prod", "v1", "s3://onerec-models/prod/v1", 10)
    gitops.publish(repo, "prod", "v2", URI, 10)
    with pytest.raises(gitops.GitOpsError, match="promote or roll back the running canary"):
        gitops.publish(repo, "prod", "v3", "s3://onerec-models/prod/v3", 10)
    assert n_commits(repo) == 2


def test_dirty_tree_is_refused(repo):
    gitops.publish(repo, "prod", "v2", URI, 10)
    (repo / "k8s/overlays/prod/kustomization.yaml").write_text("# edited by hand\n")
    with pytest.raises(gitops.GitOpsError, match="uncommitted changes"):
        gitops.promote(repo, "prod")
    assert n_commits(repo) == 2


def test_missing_patch_file_is_refused(repo):
    git(repo, "rm", "-q", "k8s/overlays/dev/canary.yaml")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "drop")
    with pytest.raises(gitops.GitOpsError, match=r"missing patch file .*canary\.yaml"):
        gitops.publish(repo, "dev", "v2", "s3://m/dev/v2", 10)


def test_the_rendered_overlay_follows_the_rollout(repo):
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed")

    def predictor() -> dict:
        out = subprocess.run(["kubectl", "kustomize", str(repo / "k8s/overlays/prod")],
                             check=True, capture_output=True, text=True).stdout
        isvc = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "InferenceService")
        return isvc["spec"]["predictor"]

    gitops.publish(repo, "prod", "v2", URI, 10)
    p = predictor()
    assert p["canaryTrafficPercent"] == 10 and p["model"]["storageUri"] == URI
    assert p["model"]["modelFormat"]["name"] == "tensorrt"  # other patches still apply
    gitops.promote(repo, "prod")
    p = predictor()
    assert "canaryTrafficPercent" not in p and p["model"]["storageUri"] == URI


def test_cli_publish_status_and_refusal(repo):
    runner = CliRunner()
    r = runner.invoke(app, ["rollout", "publish", "dev", "v2", "s3://m/dev/v2",
                            "--canary-percent", "20", "--repo", str(repo)])
    assert r.exit_code == 0, r.output
    assert gitops.read_state(repo, "dev").canary_percent == 20
    r = runner.invoke(app, ["rollout", "status", "--repo", str(repo)])
    assert r.exit_code == 0 and "dev" in r.output and "prod" in r.output
    r = runner.invoke(app, ["rollout", "promote", "prod", "--repo", str(repo)])
    assert r.exit_code == 2
    r = runner.invoke(app, ["rollout", "rollback", "dev", "--repo", str(repo)])
    assert r.exit_code == 0 and gitops.read_state(repo, "dev").canary is None

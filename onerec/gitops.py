"""GitOps rollout: a model version reaches a cluster as a commit, never as an API call.

Argo CD syncs `k8s/overlays/<env>/` into the cluster. Two small patch files per environment hold
everything a rollout changes, so each step is a one-file (at most two-file) commit that reads
well in `git log` and reverts cleanly:

- `model-version.yaml`: the stable version (InferenceService predictor `storageUri` and the
  `onerec.io/model-version` annotation);
- `canary.yaml`: the canary, if any (its `storageUri`, `canaryTrafficPercent`, and the
  `onerec.io/canary-version` annotation), applied after the stable patch so its storageUri wins;
  with no canary it only sets an empty annotation. KServe sends `canaryTrafficPercent` % of
  requests to the newest revision and the rest to the last fully rolled-out one.

The steps: `publish` (new canary), `ramp` (change its share), `promote` (canary becomes stable,
no canary), `rollback` (drop the canary; traffic returns to the stable version). Each refuses a
dirty work tree, an unknown environment, a missing patch file and a step that makes no sense in
the current state (promote with no canary, publish over a running canary), with an error that
says which and what to do. Plain `git` through subprocess: no kubernetes, no GitPython; pushing
to the remote Argo CD watches is left to the caller (`git push`), so a local run stays local.
"""

from __future__ import annotations

import re
import shutil
import subprocess  # nosec B404 # argv lists only, no shell
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

OVERLAYS = Path("k8s/overlays")
STABLE_FILE = "model-version.yaml"
CANARY_FILE = "canary.yaml"
ISVC_NAME = "onerec"
VERSION_KEY = "onerec.io/model-version"
CANARY_KEY = "onerec.io/canary-version"
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_URI_RE = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$")
_AUTHOR = ["-c", "user.name=onerec-rollout", "-c", "user.email=rollout@onerec.invalid"]


class GitOpsError(RuntimeError):
    """A rollout step refused: the message names the environment, the file or the state."""


@dataclass(frozen=True)
class ModelVersion:
    version: str  # a label for people and commit messages, e.g. v12 or 2026-10-03-a1b2c3
    storage_uri: str  # the Triton model repository of this version (s3://, gs://, pvc://, ...)


@dataclass(frozen=True)
class RolloutState:
    env: str
    stable: ModelVersion
    canary: ModelVersion | None
    canary_percent: int  # 0 when there is no canary

    def describe(self) -> str:
        if self.canary is None:
            return f"{self.env}: stable {self.stable.version}, no canary"
        return (f"{self.env}: stable {self.stable.version}, canary {self.canary.version} at "
                f"{self.canary_percent}%")


# -- patch files ------------------------------------------------------------------------------------
def _isvc_patch(annotations: dict[str, str], predictor: dict[str, Any] | None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": ISVC_NAME, "annotations": annotations},
    }
    if predictor is not None:
        doc["spec"] = {"predictor": predictor}
    return doc


def stable_patch(env: str, stable: ModelVersion) -> str:
    """The text of `model-version.yaml`."""
    header = (f"# {env}: the stable model version: all traffic that no canary takes.\n"
              f"# Written by `onerec rollout promote {env}` (onerec/gitops.py); a promotion "
              "changes only this file.\n")
    doc = _isvc_patch({VERSION_KEY: stable.version},
                      {"model": {"storageUri": stable.storage_uri}})
    return header + yaml.safe_dump(doc, sort_keys=False)


def canary_patch(env: str, canary: ModelVersion | None, percent: int) -> str:
    """The text of `canary.yaml` (a no-op patch but for an empty annotation when no canary)."""
    if canary is None:
        header = (f"# {env}: no canary: every request goes to the stable version "
                  f"(model-version.yaml).\n# `onerec rollout publish {env} VERSION URI` starts "
                  "one here.\n")
        return header + yaml.safe_dump(_isvc_patch({CANARY_KEY: ""}, None), sort_keys=False)
    header = (f"# {env}: the canary: canaryTrafficPercent % of requests, the rest on the stable "
              f"version.\n# Written by `onerec rollout publish|ramp|promote|rollback {env}` "
              "(onerec/gitops.py).\n")
    doc = _isvc_patch({CANARY_KEY: canary.version},
                      {"canaryTrafficPercent": percent,
                       "model": {"storageUri": canary.storage_uri}})
    return header + yaml.safe_dump(doc, sort_keys=False)


def _env_dir(repo_dir: Path, env: str) -> Path:
    overlays = repo_dir / OVERLAYS
    if not overlays.is_dir():
        raise GitOpsError(f"{repo_dir}: no {OVERLAYS}/ here; is this the GitOps repository?")
    envs = sorted(p.name for p in overlays.iterdir() if p.is_dir())
    if env not in envs:
        raise GitOpsError(f"unknown environment {env!r}; {OVERLAYS} has {', '.join(envs)}")
    return overlays / env


def _load_patch(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise GitOpsError(f"missing patch file {path}: every environment needs {STABLE_FILE} "
                          f"and {CANARY_FILE} (see k8s/overlays/dev/)")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise GitOpsError(f"{path}: not YAML ({e})") from None
    if not isinstance(doc, dict) or doc.get("kind") != "InferenceService":
        raise GitOpsError(f"{path}: expected an InferenceService patch")
    return doc


def read_state(repo_dir: str | Path, env: str) -> RolloutState:
    """The environment's stable version and canary, as its two patch files say."""
    d = _env_dir(Path(repo_dir), env)
    stable_doc, canary_doc = _load_patch(d / STABLE_FILE), _load_patch(d / CANARY_FILE)
    try:
        stable = ModelVersion(stable_doc["metadata"]["annotations"][VERSION_KEY],
                              stable_doc["spec"]["predictor"]["model"]["storageUri"])
    except (KeyError, TypeError):
        raise GitOpsError(f"{d / STABLE_FILE}: needs metadata.annotations.{VERSION_KEY} and "
                          "spec.predictor.model.storageUri") from None
    version = (canary_doc.get("metadata", {}).get("annotations") or {}).get(CANARY_KEY) or ""
    if not version:
        return RolloutState(env, stable, None, 0)
    try:
        predictor = canary_doc["spec"]["predictor"]
        canary = ModelVersion(version, predictor["model"]["storageUri"])
        percent = int(predictor["canaryTrafficPercent"])
    except (KeyError, TypeError, ValueError):
        raise GitOpsError(f"{d / CANARY_FILE}: a canary needs spec.predictor.canaryTrafficPercent "
                          "and spec.predictor.model.storageUri") from None
    return RolloutState(env, stable, canary, percent)


# -- git ----------------------------------------------------------------------------------------------
def _git(repo_dir: Path, *args: str) -> str:
    try:
        out = subprocess.run(["git", "-C", str(repo_dir), *args], check=True,
                             capture_output=True, text=True)  # nosec B603 B607
    except FileNotFoundError:
        raise GitOpsError("git is not installed") from None
    except subprocess.CalledProcessError as e:
        raise GitOpsError(f"git {' '.join(args)} failed: {e.stderr.strip() or e.stdout.strip()}"
                          ) from None
    return out.stdout


def _require_clean(repo_dir: Path) -> None:
    dirty = _git(repo_dir, "status", "--porcelain").strip()
    if dirty:
        first = dirty.splitlines()[0]
        raise GitOpsError(f"{repo_dir}: work tree has uncommitted changes ({first} ...); commit "
                          "or stash them first, a rollout commit must contain only the rollout")


def _commit(repo_dir: Path, files: dict[Path, str], message: str) -> str:
    for path, text in files.items():
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    rel = [str(p.relative_to(repo_dir)) for p in files]
    _git(repo_dir, "add", "--", *rel)
    has_identity = subprocess.run(["git", "-C", str(repo_dir), "config", "user.email"],
                                  capture_output=True).returncode == 0  # nosec B603 B607
    _git(repo_dir, *([] if has_identity else _AUTHOR), "commit", "-q", "-m", message, "--", *rel)
    return _git(repo_dir, "rev-parse", "HEAD").strip()


def _check_version(version: str, storage_uri: str) -> None:
    if not _VERSION_RE.match(version):
        raise GitOpsError(f"version {version!r}: use letters, digits, '.', '_' or '-' "
                          "(at most 63 characters)")
    if not _URI_RE.match(storage_uri):
        raise GitOpsError(f"storage_uri {storage_uri!r}: expected a URI such as "
                          "s3://bucket/onerec/v12 or pvc://models/v12")


def _check_percent(percent: int) -> None:
    if not isinstance(percent, int) or not 0 <= percent <= 99:
        raise GitOpsError(f"canary_percent {percent!r}: must be an integer in 0..99 (100 is "
                          "`promote`; 0 deploys the canary without traffic)")


def _body(reason: str | None, files: list[str]) -> str:
    lines = ([reason.strip(), ""] if reason else []) + [f"changed: {', '.join(files)}"]
    return "\n".join(lines)


# -- steps ----------------------------------------------------------------------------------------------
def publish(repo_dir: str | Path, env: str, version: str, storage_uri: str,
            canary_percent: int, reason: str | None = None) -> str:
    """Start a canary of `version` at `canary_percent` % in `env`; returns the commit sha."""
    repo = Path(repo_dir)
    _check_version(version, storage_uri)
    _check_percent(canary_percent)
    state = read_state(repo, env)
    _require_clean(repo)
    if state.canary is not None:
        raise GitOpsError(f"{state.describe()}: promote or roll back the running canary before "
                          f"publishing {version}")
    if version == state.stable.version or storage_uri == state.stable.storage_uri:
        raise GitOpsError(f"{env}: {version} ({storage_uri}) is the stable version already")
    path = _env_dir(repo, env) / CANARY_FILE
    new = ModelVersion(version, storage_uri)
    msg = (f"{env}: canary {version} at {canary_percent}% (stable {state.stable.version})\n\n"
           f"canary: {storage_uri}\nstable: {state.stable.storage_uri}\n"
           + _body(reason, [str(path.relative_to(repo))]))
    return _commit(repo, {path: canary_patch(env, new, canary_percent)}, msg)


def ramp(repo_dir: str | Path, env: str, canary_percent: int, reason: str | None = None) -> str:
    """Change the running canary's share of traffic (one-file commit)."""
    repo = Path(repo_dir)
    _check_percent(canary_percent)
    state = read_state(repo, env)
    _require_clean(repo)
    if state.canary is None:
        raise GitOpsError(f"{state.describe()}: nothing to ramp; publish a canary first")
    if canary_percent == state.canary_percent:
        raise GitOpsError(f"{state.describe()}: already at {canary_percent}%")
    path = _env_dir(repo, env) / CANARY_FILE
    msg = (f"{env}: canary {state.canary.version} {state.canary_percent}% -> {canary_percent}%\n\n"
           + _body(reason, [str(path.relative_to(repo))]))
    return _commit(repo, {path: canary_patch(env, state.canary, canary_percent)}, msg)


def promote(repo_dir: str | Path, env: str, reason: str | None = None) -> str:
    """The canary becomes the stable version and the canary is cleared (one commit)."""
    repo = Path(repo_dir)
    state = read_state(repo, env)
    _require_clean(repo)
    if state.canary is None:
        raise GitOpsError(f"{state.describe()}: nothing to promote")
    d = _env_dir(repo, env)
    files = {d / STABLE_FILE: stable_patch(env, state.canary),
             d / CANARY_FILE: canary_patch(env, None, 0)}
    msg = (f"{env}: promote {state.canary.version} to stable (was {state.stable.version})\n\n"
           f"stable: {state.canary.storage_uri}\ncanary: none (was {state.canary_percent}%)\n"
           + _body(reason, [str(p.relative_to(repo)) for p in files]))
    return _commit(repo, files, msg)


def rollback(repo_dir: str | Path, env: str, reason: str | None = None) -> str:
    """Drop the canary: all traffic returns to the stable version (one-file commit)."""
    repo = Path(repo_dir)
    state = read_state(repo, env)
    _require_clean(repo)
    if state.canary is None:
        raise GitOpsError(f"{state.describe()}: nothing to roll back")
    path = _env_dir(repo, env) / CANARY_FILE
    msg = (f"{env}: roll back canary {state.canary.version} (stable stays "
           f"{state.stable.version})\n\nremoved: {state.canary.storage_uri} at "
           f"{state.canary_percent}%\n" + _body(reason, [str(path.relative_to(repo))]))
    return _commit(repo, {path: canary_patch(env, None, 0)}, msg)


def init_repo(path: str | Path, source: str | Path | None = None) -> Path:
    """A local GitOps repository for the demo: a copy of `k8s/` with one initial commit.

    Argo CD would watch this repository's remote; locally, `kubectl kustomize
    PATH/k8s/overlays/dev` shows what a sync would apply.
    """
    dst = Path(path)
    src = Path(source) if source else Path(__file__).resolve().parents[1] / "k8s"
    if not (src / "overlays").is_dir():
        raise GitOpsError(f"{src}: not a k8s/ tree with overlays/")
    if dst.exists() and any(dst.iterdir()):
        raise GitOpsError(f"{dst} exists and is not empty; choose a new folder")
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dst / "k8s", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _git(dst, "init", "-q", "-b", "main")
    _git(dst, "add", "k8s")
    _git(dst, *_AUTHOR, "commit", "-q", "-m", "GitOps tree from the OneRec k8s/ manifests")
    return dst


def log(repo_dir: str | Path, env: str, n: int = 10) -> list[str]:
    """The last `n` commit subjects that touched `env`'s overlay (the rollout history)."""
    repo = Path(repo_dir)
    d = _env_dir(repo, env)
    out = _git(repo, "log", f"-{n}", "--format=%h %s", "--", str(d.relative_to(repo)))
    return out.splitlines()

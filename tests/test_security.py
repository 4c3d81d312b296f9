"""The security checks of `make security` stay honest (docs/security.md).

The scanners themselves run in `make security`; these tests check what would let a finding slip
through: a scanner that exits 0 on a finding, a tree checkov never sees, a blanket `# nosec`, an
accepted finding or skip missing from docs/security.md, a literal secret in a manifest.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_k8s import K8S, TREES, load_module, render

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "security.md").read_text()
TOOLS = ROOT / ".venv-tools" / "bin"
BANDIT_SRC = re.search(r"^BANDIT_SRC\s*:=\s*(.+)$", (ROOT / "Makefile").read_text(),
                       re.M).group(1).split()
NOSEC = re.compile(r"#\s*nosec\b([^#\n]*)")


def _render_all():
    return load_module("render_all.py")


def _doc_rows(*words: str) -> list[str]:
    return [line for line in DOC.splitlines() if line.startswith("|")
            and all(w in line for w in words)]


# -- coverage and narrowness ---------------------------------------------------------------------
def test_checkov_scans_every_tree_that_is_applied():
    trees = _render_all().TREES
    assert trees == TREES  # the trees tests/test_k8s.py validates
    applied = {str(p.parent.relative_to(K8S)) for p in K8S.rglob("kustomization.yaml")}
    # base is only applied through the overlays; components are patches, never applied alone
    assert applied - {"base"} - {t for t in applied if t.startswith("components/")} == set(trees)


def test_the_custom_resources_pods_reach_checkov():
    pods = {p["metadata"]["name"]: p for p in _render_all().pods(render("overlays/prod"))}
    assert set(pods) == {"inferenceservice-onerec-predictor", "inferenceservice-onerec-transformer"}
    predictor = pods["inferenceservice-onerec-predictor"]["spec"]
    c = predictor["containers"][0]
    assert c["image"].startswith("nvcr.io/nvidia/tritonserver:")  # the runtime's container ...
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"  # ... under the model's settings
    assert "storageUri" not in c and predictor["securityContext"]["runAsNonRoot"] is True
    job = _render_all().pods(render("base/training"))
    assert [p["metadata"]["name"] for p in job] == ["pytorchjob-onerec-pretrain-master"]
    assert job[0]["metadata"]["annotations"]  # the job's checkov skips travel with its pods
    nodes = _render_all().pods(render("base/trainjob"))
    assert sorted(p["metadata"]["name"] for p in nodes) == [
        "trainjob-onerec-align-manual-node", "trainjob-onerec-pretrain-manual-node"]
    for p in nodes:
        c = p["spec"]["containers"][0]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert p["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        skips = {v.split("=")[0] for k, v in p["metadata"]["annotations"].items()
                 if k.startswith("checkov.io/skip")}  # what the TrainJob API cannot set, too
        assert skips == {"CKV_K8S_8", "CKV_K8S_9", "CKV_K8S_38", "CKV_K8S_15"}


def test_every_nosec_names_its_tests_and_is_listed_in_the_docs():
    found = []
    for d in BANDIT_SRC:
        for f in sorted((ROOT / d).rglob("*.py")):
            rel = str(f.relative_to(ROOT))
            for n, line in enumerate(f.read_text().splitlines(), 1):
                if m := NOSEC.search(line):
                    ids = re.findall(r"B\d{3}", m.group(1))
                    assert ids, f"{rel}:{n}: a bare `# nosec` hides every test; name them"
                    found += [(rel, i) for i in ids]
    assert found
    missing = [(rel, i) for rel, i in found if not _doc_rows(f"`{rel}`", i)]
    assert not missing, "accepted bandit findings missing from docs/security.md"


def test_every_checkov_skip_is_listed_in_the_docs():
    cfg = yaml.safe_load((ROOT / ".checkov.yaml").read_text())
    skips = set(cfg["skip-check"])
    for tree in TREES:
        for d in render(tree):
            for _, key, value in _walk(d):
                if key.startswith("checkov.io/skip"):
                    skips.add(value.split("=")[0])
    assert {"CKV_K8S_43", "CKV_K8S_8", "CKV_K8S_9"} <= skips
    assert not [s for s in skips if not _doc_rows(s)]


# -- no secrets ------------------------------------------------------------------------------------
SECRETISH = re.compile(r"passw(or)?d|secret|token|api[_-]?key|access[_-]?key|credential|"
                       r"private[_-]?key", re.I)
SECRET_IN_TEXT = [re.compile(r"(requirepass|passw(or)?d)[\s:=]+\S", re.I),  # --requirepass x
                  re.compile(r"(secret|token)\s*[:=]\s*\S", re.I),  # token: x in a config
                  re.compile(r"://[^/\s:@]+:[^/\s@]+@")]  # user:password@ in a URL


def _walk(obj: Any, path: str = ""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield f"{path}.{k}", str(k), v
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{path}[{i}]")


@pytest.mark.parametrize("tree", TREES)
def test_no_manifest_holds_a_literal_secret(tree):
    for d in render(tree):
        where = f"{tree}: {d['kind']}/{d['metadata']['name']}"
        # credentials come from the cluster (the object store's through the service account)
        assert d["kind"] != "Secret", where
        for path, key, value in _walk(d):
            if isinstance(value, str) and value and SECRETISH.search(key):
                raise AssertionError(f"{where}{path}: a literal value under a secret-like key")
            if isinstance(value, list) and key == "env":
                bad = [e["name"] for e in value if SECRETISH.search(e["name"]) and "value" in e]
                assert not bad, f"{where}{path}: use valueFrom.secretKeyRef for {bad}"
            texts = [value] if isinstance(value, str) else (
                [v for v in value if isinstance(v, str)] if isinstance(value, list) else [])
            for s in texts:  # args, env values, embedded config files
                assert not any(p.search(s) for p in SECRET_IN_TEXT), f"{where}{path}: {s!r}"


def test_the_secret_checks_catch_what_they_are_for():
    assert SECRETISH.search("REDIS_PASSWORD") and SECRETISH.search("aws_access_key_id")
    assert SECRET_IN_TEXT[0].search("--requirepass hunter2")  # pragma: allowlist secret
    assert SECRET_IN_TEXT[1].search("auth:\n  token: abc123")  # pragma: allowlist secret
    assert SECRET_IN_TEXT[2].search("https://me:hunter2@git.example.com/x.git")  # pragma: allowlist secret
    assert not any(p.search("https://github.com/onerec-k8s/onerec.git") for p in SECRET_IN_TEXT)


# -- the scanners fail on a finding ----------------------------------------------------------------
def test_bandit_fails_on_a_finding(tmp_path):
    pytest.importorskip("bandit", reason="bandit comes with the dev extra")
    bad = tmp_path / "bad.py"
    bad.write_text('import pickle\n\npassword = "hunter2"\n\n\ndef load(b):\n'  # pragma: allowlist secret
                   '    return pickle.loads(b)\n')
    run = subprocess.run([sys.executable, "-m", "bandit", "-q", "-c", str(ROOT / "pyproject.toml"),
                          str(bad)], capture_output=True, text=True)
    assert run.returncode == 1, run.stdout + run.stderr
    assert {"B105", "B301", "B403"} <= set(re.findall(r"\[(B\d{3}):", run.stdout))


@pytest.mark.skipif(not (TOOLS / "checkov").exists(), reason="no .venv-tools (`make security`)")
def test_checkov_and_detect_secrets_fail_on_a_finding(tmp_path):
    (tmp_path / "pod.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad", "namespace": "onerec"},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.37"}]}}))
    run = subprocess.run([str(TOOLS / "checkov"), "--config-file", str(ROOT / ".checkov.yaml"),
                          "-d", str(tmp_path)], capture_output=True, text=True)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "CKV_K8S_22" in run.stdout  # read-only root filesystem, among others
    key = tmp_path / "notes.txt"
    key.write_text('aws_access_key_id = "AKIA' + "Z3MSJV4WWNKWW5FG" + '"\n')
    run = subprocess.run([str(TOOLS / "detect-secrets-hook"), str(key)],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "AWS Access Key" in run.stdout, run.stdout + run.stderr

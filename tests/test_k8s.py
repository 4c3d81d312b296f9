"""The kustomize tree renders, validates, and keeps its security and rollout promises.

Renders with `kubectl kustomize` (skipped when kubectl is missing); custom resources are checked
against the CRD schemas in ../shared/crds (skipped when absent), strictly: a field the schema
does not know fails, as the API server's strict field validation would; core objects go through
kubernetes-validate.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
CRDS = Path(__file__).resolve().parents[2] / "shared" / "crds"
K8S_VERSION = "1.30.0"
ENVS = ("dev", "prod")
TREES = ("overlays/dev", "overlays/prod", "base/training", "overlays/dev/training",
         "base/trainjob", "overlays/dev/trainjob", "argocd")
CRD_FILES = {
    ("serving.kserve.io", "InferenceService"): "serving.kserve.io_inferenceservices.yaml",
    # a namespaced ServingRuntime has the ClusterServingRuntime's spec (KServe's ServingRuntimeSpec)
    ("serving.kserve.io", "ServingRuntime"): "serving.kserve.io_clusterservingruntimes.yaml",
    ("serving.kserve.io", "ClusterServingRuntime"): "serving.kserve.io_clusterservingruntimes.yaml",
    ("argoproj.io", "Application"): "argoproj.io_applications.yaml",
    ("trainer.kubeflow.org", "TrainJob"): "trainer.kubeflow.org_trainjobs.yaml",
    ("trainer.kubeflow.org", "ClusterTrainingRuntime"):
        "trainer.kubeflow.org_clustertrainingruntimes.yaml",
}
NOT_CORE = {"InferenceService", "ServingRuntime", "Application", "AppProject", "PyTorchJob",
            "TrainJob"}


@cache
def _render(tree: str) -> tuple[dict[str, Any], ...]:
    out = subprocess.run(["kubectl", "kustomize", str(K8S / tree)], check=True,
                         capture_output=True, text=True).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d)


def render(tree: str) -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed")
    return list(_render(tree))


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@cache
def load_module(relpath: str) -> Any:
    """A script of k8s/ (not a package) as a module: render.py, render_all.py."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(Path(relpath).stem, K8S / relpath)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def shared_crd(name: str) -> dict[str, Any]:
    """A file of ../shared/crds (skipped when absent)."""
    if not CRDS.is_dir():
        pytest.skip("../shared/crds not available")
    return yaml.safe_load((CRDS / name).read_text())


@cache
def _schema(group: str, kind: str, version: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / CRD_FILES[(group, kind)]).read_text())
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return v["schema"]["openAPIV3Schema"]
    raise AssertionError(f"{kind}: no {version} in {CRD_FILES[(group, kind)]}")


def crd_schema(doc: dict[str, Any]) -> dict[str, Any]:
    if not CRDS.is_dir():
        pytest.skip("../shared/crds not available")
    group, version = doc["apiVersion"].split("/")
    return _schema(group, doc["kind"], version)


def unknown_fields(obj: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Keys the schema does not declare (where it declares properties and no free-form maps)."""
    if isinstance(obj, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        bad: list[str] = []
        for k, v in obj.items():
            if props is not None and k in props:
                bad += unknown_fields(v, props[k], f"{path}.{k}")
            elif isinstance(extra, dict):
                bad += unknown_fields(v, extra, f"{path}.{k}")
            elif props is not None and not extra and not schema.get(
                    "x-kubernetes-preserve-unknown-fields") and path != ".metadata":
                bad.append(f"{path}.{k}")
        return bad
    if isinstance(obj, list) and isinstance(schema.get("items"), dict):
        return [e for i, v in enumerate(obj) for e in unknown_fields(v, schema["items"], f"{path}[{i}]")]
    return []


def check_custom_resource(doc: dict[str, Any]) -> None:
    schema = crd_schema(doc)
    jsonschema.Draft7Validator(schema).validate(doc)
    assert unknown_fields(doc, schema) == [], f"{doc['kind']}: fields the CRD does not know"


# -- rendering and schemas ----------------------------------------------------------------------
@pytest.mark.parametrize("tree", TREES)
def test_every_tree_renders(tree):
    docs = render(tree)
    assert docs and all({"apiVersion", "kind", "metadata"} <= d.keys() for d in docs)


@pytest.mark.parametrize("env", ENVS)
def test_custom_resources_validate_against_the_crds(env):
    docs = render(f"overlays/{env}")
    checked = [d["kind"] for d in docs if (d["apiVersion"].split("/")[0], d["kind"]) in
               {k for k in CRD_FILES}]
    assert sorted(checked) == ["InferenceService", "ServingRuntime"]
    for d in docs:
        if d["kind"] in {"InferenceService", "ServingRuntime"}:
            check_custom_resource(d)


def test_argocd_applications_validate_against_the_crd():
    docs = render("argocd")
    apps = [d for d in docs if d["kind"] == "Application"]
    assert sorted(a["metadata"]["name"] for a in apps) == ["onerec-dev", "onerec-prod"]
    project = one(docs, "AppProject", "onerec")
    for app in apps:
        check_custom_resource(app)
        assert (K8S.parent / app["spec"]["source"]["path"] / "kustomization.yaml").is_file()
        assert app["spec"]["project"] == project["metadata"]["name"]
        assert app["spec"]["destination"]["namespace"] == "onerec"
    assert project["spec"]["destinations"] == [{"server": "https://kubernetes.default.svc",
                                                "namespace": "onerec"}]


def test_the_strict_check_catches_a_misspelt_field():
    isvc = one(render("overlays/dev"), "InferenceService")
    bad = {**isvc, "spec": {**isvc["spec"], "predictor": {**isvc["spec"]["predictor"],
                                                          "canaryTraficPercent": 10}}}
    assert unknown_fields(bad, crd_schema(bad)) == [".spec.predictor.canaryTraficPercent"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(crd_schema(bad)).validate(
            {**isvc, "spec": {"predictor": {"canaryTrafficPercent": "ten"}}})


@pytest.mark.parametrize("tree", ["overlays/dev", "overlays/prod", "base/training",
                                  "base/trainjob"])
def test_core_objects_validate_with_kubernetes_validate(tree):
    core = [d for d in render(tree) if d["kind"] not in NOT_CORE]
    assert core
    for d in core:
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)


def test_training_job_is_the_pipelines_job_and_its_pods_validate():
    mod = load_module("base/training/render.py")
    checked_in = yaml.safe_load((K8S / "base/training/pytorchjob.yaml").read_text())
    assert checked_in == mod.render(), "run k8s/base/training/render.py"
    job = one(render("base/training"), "PyTorchJob")
    cm = one(render("base/training"), "ConfigMap")
    volumes = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": cm["metadata"]["name"]}} in volumes
    from onerec.config import Config

    assert Config.from_dict(yaml.safe_load(cm["data"]["config.yaml"])).preset == "base"
    dev_job = one(render("overlays/dev/training"), "PyTorchJob")
    for j in (job, dev_job):
        tpl = j["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": "check", **tpl["metadata"]}, "spec": tpl["spec"]}, K8S_VERSION, strict=True)
    dev_c = dev_job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in dev_c["resources"]["limits"]


def test_trainjobs_are_the_pipelines_jobs_and_validate_against_the_crd():
    mod = load_module("base/trainjob/render.py")
    checked_in = list(yaml.safe_load_all((K8S / "base/trainjob/trainjobs.yaml").read_text()))
    assert checked_in == mod.render(), "run k8s/base/trainjob/render.py"
    from components import DEFAULT_IMAGE
    from onerec.config import Config

    for tree in ("base/trainjob", "overlays/dev/trainjob"):
        docs = render(tree)
        jobs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "TrainJob"}
        assert sorted(jobs) == ["onerec-align-manual", "onerec-pretrain-manual"]
        for name, job in jobs.items():
            check_custom_resource(job)
            assert job["spec"]["trainer"]["image"] == DEFAULT_IMAGE  # kustomizeconfig.yaml
            pod, _ = load_module("render_all.py").trainjob_pod_spec(job)
            cm = one(docs, "ConfigMap", f"{name}-config")
            assert {"name": "config", "configMap": {"name": cm["metadata"]["name"]}} in pod["volumes"]
            preset = "small" if "dev" in tree else "base"
            assert Config.from_dict(yaml.safe_load(cm["data"]["config.yaml"])).preset == preset
            kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": "check"}, "spec": pod}, K8S_VERSION, strict=True)
            gpu = "nvidia.com/gpu" in job["spec"]["trainer"]["resourcesPerNode"]["limits"]
            assert gpu is ("dev" not in tree) and ("nodeSelector" in pod) is gpu


# -- security -------------------------------------------------------------------------------------
def pod_specs(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
    """(where, pod-level spec, containers) of every pod a rendered object makes."""
    kind, name = doc["kind"], doc["metadata"]["name"]
    if kind in {"Deployment", "StatefulSet", "Job", "DaemonSet"}:
        pod = doc["spec"]["template"]["spec"]
        return [(f"{kind}/{name}", pod, pod["containers"] + pod.get("initContainers", []))]
    if kind == "PyTorchJob":
        return [(f"{kind}/{name}/{r}", s["template"]["spec"], s["template"]["spec"]["containers"])
                for r, s in doc["spec"]["pytorchReplicaSpecs"].items()]
    if kind == "TrainJob":  # the node pod Trainer makes (k8s/render_all.py, also for checkov)
        pod, _ = load_module("render_all.py").trainjob_pod_spec(doc)
        return [(f"{kind}/{name}/node", pod, pod["containers"])]
    if kind == "InferenceService":
        pred, trans = doc["spec"]["predictor"], doc["spec"]["transformer"]
        return [(f"{kind}/{name}/predictor", pred, [pred["model"]]),
                (f"{kind}/{name}/transformer", trans, trans["containers"])]
    if kind == "ServingRuntime":
        return [(f"{kind}/{name}", doc["spec"], doc["spec"]["containers"])]
    return []


@pytest.mark.parametrize("tree", ["overlays/dev", "overlays/prod", "base/training",
                                  "overlays/dev/training", "base/trainjob",
                                  "overlays/dev/trainjob"])
def test_every_container_has_resources_and_a_restricted_security_context(tree):
    pods = [p for d in render(tree) for p in pod_specs(d)]
    assert len(pods) >= (1 if "train" in tree else 5)
    for where, pod, containers in pods:
        pod_sc = pod.get("securityContext", {})
        for c in containers:
            at = f"{where}:{c.get('name', 'model')}"
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(part, {})), f"{at}: {part}"
            sc = c.get("securityContext", {})
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, at
            assert sc.get("runAsUser", pod_sc.get("runAsUser", 1)) != 0, at
            assert sc.get("allowPrivilegeEscalation") is False, at
            assert sc.get("readOnlyRootFilesystem") is True, at
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], at
        if where.split("/")[0] != "ServingRuntime":  # the runtime's pod is the predictor's
            assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where


def test_rbac_is_namespaced_and_least_privilege():
    docs = render("overlays/prod")
    assert not [d for d in docs if d["kind"] in {"ClusterRole", "ClusterRoleBinding"}]
    role = one(docs, "Role", "onerec-pipeline-runner")
    rules = {(g, r): set(rule["verbs"]) for rule in role["rules"]
             for g in rule["apiGroups"] for r in rule["resources"]}
    assert all("*" not in v and "*" not in k for k, v in rules.items())
    assert "create" in rules[("kubeflow.org", "pytorchjobs")]
    assert "create" in rules[("trainer.kubeflow.org", "trainjobs")]
    isvc = rules[("serving.kserve.io", "inferenceservices")]
    assert "patch" in isvc and not isvc & {"create", "delete", "update"}
    binding = one(docs, "RoleBinding", "onerec-pipeline-runner")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "onerec-pipeline-runner"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "onerec-pipeline",
                                    "namespace": "onerec"}]
    # only the pipeline runner gets an API token
    for sa in (d for d in docs if d["kind"] == "ServiceAccount"):
        assert sa.get("automountServiceAccountToken", True) is (sa["metadata"]["name"] ==
                                                                "onerec-pipeline")


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        present = e["key"] in labels
        if e["operator"] == "Exists" and not present:
            return False
        if e["operator"] == "In" and labels.get(e["key"]) not in e["values"]:
            return False
    return True


def _peer_allows(rules: list[dict[str, Any]], key: str, other: dict[str, str], port: int) -> bool:
    for rule in rules:
        peers = [p for p in rule.get(key, []) if "podSelector" in p and "namespaceSelector" not in p]
        ports = [p["port"] for p in rule.get("ports", [])]
        if any(_selects(p["podSelector"], other) for p in peers) and (not ports or port in ports):
            return True
    return False


def allowed(policies: list[dict[str, Any]], src: dict[str, str], dst: dict[str, str],
            port: int) -> bool:
    """Same-namespace pod-to-pod traffic under the policies (NetworkPolicy semantics)."""
    def side(pod: dict[str, str], kind: str, key: str, other: dict[str, str]) -> bool:
        mine = [p for p in policies if kind in p["spec"]["policyTypes"]
                and _selects(p["spec"]["podSelector"], pod)]
        return not mine or any(_peer_allows(p["spec"].get(kind.lower(), []), key, other, port)
                               for p in mine)

    return side(src, "Egress", "to", dst) and side(dst, "Ingress", "from", src)


def test_network_policies_allow_exactly_the_serving_paths():
    pols = [d for d in render("overlays/prod") if d["kind"] == "NetworkPolicy"]
    deny = one(pols, "NetworkPolicy", "default-deny")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    isvc = {"serving.kserve.io/inferenceservice": "onerec"}
    transformer, predictor = {**isvc, "component": "transformer"}, {**isvc, "component": "predictor"}
    feast = {"app.kubernetes.io/name": "feast-feature-server"}
    redis = {"app.kubernetes.io/name": "redis"}
    trainer = {"training.kubeflow.org/job-name": "onerec-pretrain"}
    node = {"jobset.sigs.k8s.io/jobset-name": "onerec-pretrain-c1",  # a TrainJob's pod
            "trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}
    assert allowed(pols, transformer, predictor, 8080)
    assert allowed(pols, transformer, predictor, 9000)
    assert allowed(pols, transformer, feast, 6566)
    assert allowed(pols, feast, redis, 6379)
    assert allowed(pols, trainer, trainer, 23456)
    assert allowed(pols, node, node, 29400)  # torchrun's rendezvous on node 0
    assert not allowed(pols, transformer, redis, 6379)
    assert not allowed(pols, predictor, feast, 6566)
    assert not allowed(pols, predictor, transformer, 8080)
    assert not allowed(pols, redis, feast, 6566)
    assert not allowed(pols, trainer, predictor, 8080)
    assert not allowed(pols, node, predictor, 8080)
    assert not allowed(pols, node, redis, 6379)
    assert not allowed(pols, {"app": "stranger"}, transformer, 8080)


# -- environments and images ------------------------------------------------------------------------
def test_prod_serves_a_tensorrt_plan_on_gpu_and_dev_onnx_on_cpu():
    prod = one(render("overlays/prod"), "InferenceService")["spec"]["predictor"]
    dev = one(render("overlays/dev"), "InferenceService")["spec"]["predictor"]
    assert prod["model"]["modelFormat"]["name"] == "tensorrt"
    assert prod["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert prod["nodeSelector"] == {"onerec.io/pool": "gpu"}
    assert prod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert dev["model"]["modelFormat"]["name"] == "onnx"
    assert "nvidia.com/gpu" not in str(render("overlays/dev"))
    runtime = one(render("overlays/prod"), "ServingRuntime")
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert {dev["model"]["modelFormat"]["name"], prod["model"]["modelFormat"]["name"]} <= formats
    assert prod["model"]["runtime"] == runtime["metadata"]["name"]


@pytest.mark.parametrize("env", ENVS)
def test_model_version_and_canary_each_sit_in_one_patch_file(env):
    kust = yaml.safe_load((K8S / "overlays" / env / "kustomization.yaml").read_text())
    paths = [p["path"] for p in kust["patches"]]
    assert paths[-2:] == ["model-version.yaml", "canary.yaml"]  # the canary's storageUri wins
    stable = yaml.safe_load((K8S / "overlays" / env / "model-version.yaml").read_text())
    isvc = one(render(f"overlays/{env}"), "InferenceService")
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == \
        stable["spec"]["predictor"]["model"]["storageUri"]
    assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]  # shipped without a canary
    env0 = isvc["spec"]["transformer"]["containers"][0]["env"][0]
    assert env0["name"] == "STORAGE_URI" and f"/{env}/" in env0["value"]


def test_images_come_from_one_registry_and_tag_shared_with_make_and_the_pipeline():
    from components import DEFAULT_IMAGE

    make = (ROOT / "Makefile").read_text()
    registry = re.search(r"^IMAGE_REGISTRY \?= (\S+)", make, re.M).group(1)
    tag = re.search(r"^IMAGE_TAG +\?= (\S+)", make, re.M).group(1)
    images = {c["image"] for tree in ("overlays/dev", "overlays/prod", "base/training",
                                      "base/trainjob")
              for d in render(tree) for _, _, cs in pod_specs(d) for c in cs if "image" in c}
    ours = {i for i in images if "/onerec-" in i}
    assert ours == {f"{registry}/onerec-{n}:{tag}" for n in ("train", "serving", "feast")}
    assert f"{registry}/onerec-train:{tag}" == DEFAULT_IMAGE
    assert all(re.fullmatch(r"[\w./-]+:[\w.-]+", i) for i in images), images  # all pinned
    for name in ("train", "serving", "feast"):
        assert f"docker/{name}.Dockerfile" in make
        assert (ROOT / "docker" / f"{name}.Dockerfile").is_file()


def test_feast_store_config_points_at_the_redis_service_and_the_mounted_registry():
    docs = render("overlays/prod")
    store = yaml.safe_load((ROOT / "feature_repo/production/feature_store.yaml").read_text())
    host, port = store["online_store"]["connection_string"].split(":")
    svc = one(docs, "Service", "redis")
    assert host == f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc.cluster.local"
    assert int(port) == svc["spec"]["ports"][0]["port"]
    server = one(docs, "Deployment", "feast-feature-server")["spec"]["template"]["spec"]
    mounts = {m["mountPath"] for m in server["containers"][0]["volumeMounts"]}
    assert str(Path(store["registry"]).parent) in mounts
    client = yaml.safe_load(one(docs, "ConfigMap", "onerec-feast-client")["data"]
                            ["feature_store.yaml"])
    assert client["online_store"]["path"].endswith(":6566")
    assert client["project"] == store["project"]


def test_training_volume_claim_exists_for_the_job():
    from components.launch.jobs import JobSpec

    claims = {d["metadata"]["name"] for d in render("overlays/prod")
              if d["kind"] == "PersistentVolumeClaim"}
    assert JobSpec().data_pvc in claims
    sas = {d["metadata"]["name"] for d in render("overlays/prod") if d["kind"] == "ServiceAccount"}
    assert JobSpec().service_account in sas

"""Render every kustomize tree into one folder for checkov (`make security`).

checkov checks core workloads (Deployment, StatefulSet, Pod, ...) but not custom resources, so
the pods KServe, Kubeflow Trainer and the Training Operator make from ours are written out as
plain Pods too: the InferenceService predictor (its ServingRuntime container under the
predictor's pod settings, as KServe merges them), the transformer, each PyTorchJob replica, and
each TrainJob's node pod (`trainjob_pod_spec`). Their containers then get the same checks as
the Feast Deployment and the Redis StatefulSet.

    python k8s/render_all.py OUT_DIR      (needs kubectl; tests/test_k8s.py renders the same trees)
"""

from __future__ import annotations

import subprocess  # nosec B404 # kubectl with fixed args
import sys
from pathlib import Path
from typing import Any

import yaml

K8S = Path(__file__).resolve().parent
TREES = ("overlays/dev", "overlays/prod", "base/training", "overlays/dev/training",
         "base/trainjob", "overlays/dev/trainjob", "argocd")
# PodSpec fields that InferenceService components and replica templates pass to their pods
POD_FIELDS = {"serviceAccountName", "automountServiceAccountToken", "securityContext", "volumes",
              "nodeSelector", "tolerations", "affinity", "imagePullSecrets", "priorityClassName",
              "hostNetwork", "hostPID", "hostIPC", "runtimeClassName", "initContainers",
              "containers", "restartPolicy", "terminationGracePeriodSeconds", "dnsPolicy",
              "enableServiceLinks", "shareProcessNamespace", "topologySpreadConstraints"}
KSERVE_ONLY = {"modelFormat", "runtime", "protocolVersion", "storageUri"}  # not Container fields
TRAINER_NODE = "node"  # the torch-distributed runtime's replicated job and its container


def render(tree: str) -> list[dict[str, Any]]:
    out = subprocess.run(["kubectl", "kustomize", str(K8S / tree)],
                         check=True, capture_output=True, text=True).stdout  # nosec B603 B607
    return [d for d in yaml.safe_load_all(out) if d]


def _pod(owner: dict[str, Any], part: str, spec: dict[str, Any],
         annotations: dict[str, str]) -> dict[str, Any]:
    meta = owner["metadata"]
    skips = {k: v for k, v in annotations.items() if k.startswith("checkov.io/")}  # skips only
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{owner['kind'].lower()}-{meta['name']}-{part}",
                         "namespace": meta.get("namespace", "default"),
                         "labels": meta.get("labels", {}), "annotations": skips},
            "spec": {k: v for k, v in spec.items() if k in POD_FIELDS}}


def trainjob_pod_spec(job: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(pod spec, pod annotations) of a TrainJob's node pod, as Trainer makes it on the
    `torch-distributed` runtime: the runtime's `node` container (it sets only a name and an
    image; tests/test_k8s.py checks the upstream runtime) with `spec.trainer`'s image, command,
    args, env and resources, under the pod template of the job's runtime patches."""
    trainer = job["spec"].get("trainer", {})
    template: dict[str, Any] = {}
    for patch in job["spec"].get("runtimePatches", []):
        for rj in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
            if rj["name"] == TRAINER_NODE:
                template = rj["template"]["spec"]["template"]
    spec = dict(template.get("spec", {}))
    patched = {c["name"]: c for c in spec.pop("containers", [])}.get(TRAINER_NODE, {})
    node = {"name": TRAINER_NODE, **{k: trainer[k] for k in ("image", "command", "args")
                                     if k in trainer}}
    if "resourcesPerNode" in trainer:
        node["resources"] = trainer["resourcesPerNode"]
    env = trainer.get("env", []) + patched.get("env", [])
    node.update({k: v for k, v in patched.items() if k not in {"name", "env"}})
    if env:
        node["env"] = env
    return {**spec, "containers": [node]}, template.get("metadata", {}).get("annotations", {})


def pods(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pods the custom resources in `docs` make, as Pod objects."""
    runtimes = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServingRuntime"}
    out = []
    for d in docs:
        if d["kind"] == "InferenceService":
            pred, trans = d["spec"]["predictor"], d["spec"]["transformer"]
            model = pred["model"]
            runtime = runtimes[model["runtime"]]["spec"]["containers"][0]
            merged = {**runtime, **{k: v for k, v in model.items() if k not in KSERVE_ONLY}}
            notes = d["metadata"].get("annotations", {})  # KServe passes them to the pods
            out.append(_pod(d, "predictor", {**pred, "containers": [merged]}, notes))
            out.append(_pod(d, "transformer", trans, notes))
        elif d["kind"] == "PyTorchJob":
            for replica, s in d["spec"]["pytorchReplicaSpecs"].items():
                tpl = s["template"]
                out.append(_pod(d, replica.lower(), tpl["spec"],
                                tpl.get("metadata", {}).get("annotations", {})))
        elif d["kind"] == "TrainJob":
            out.append(_pod(d, TRAINER_NODE, *trainjob_pod_spec(d)))
    return out


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for tree in TREES:
        docs = render(tree)
        name = tree.replace("/", "-")
        (out / f"{name}.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
        if made := pods(docs):
            (out / f"{name}-pods.yaml").write_text(yaml.safe_dump_all(made, sort_keys=False))


if __name__ == "__main__":
    main(sys.argv[1])

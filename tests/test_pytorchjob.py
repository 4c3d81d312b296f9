from __future__ import annotations

import kubernetes_validate
import pytest
import yaml
from kubeflow.training import models as m

from components.launch.pytorchjob import (
    JobSpec,
    TrainingClientLauncher,
    build_pytorchjob,
    config_map,
    to_manifest,
)
from onerec.config import Config

K8S_VERSION = "1.30.0"


@pytest.fixture()
def cfg():
    return Config.from_preset("base")


def test_pytorchjob_is_built_from_the_sdk_models_and_the_config(cfg):
    job = build_pytorchjob(cfg, JobSpec(workers=3, gpus_per_node=8))
    assert isinstance(job, m.KubeflowOrgV1PyTorchJob)
    doc = to_manifest(job)
    assert doc["apiVersion"] == "kubeflow.org/v1" and doc["kind"] == "PyTorchJob"
    specs = doc["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1 and specs["Worker"]["replicas"] == 3
    assert doc["spec"]["nprocPerNode"] == "8"
    container = specs["Master"]["template"]["spec"]["containers"][0]
    assert container["name"] == "pytorch"
    assert container["command"][-2:] == ["--config", "/etc/onerec/config.yaml"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    # 8 GPUs a pod: torchrun starts one process per GPU, ranked from the pod's RANK
    cmd = container["command"]
    assert cmd[0] == "torchrun" and cmd[cmd.index("--no-python") + 1] == "onerec"
    assert {"--nnodes=4", "--nproc-per-node=8", "--node-rank=$(RANK)",
            "--master-addr=$(MASTER_ADDR)", "--master-port=$(MASTER_PORT)"} <= set(cmd)
    assert doc["metadata"]["labels"]["onerec.io/config-fingerprint"] == cfg.fingerprint()


def test_single_node_cpu_job_has_no_worker_and_no_gpu(cfg):
    doc = to_manifest(build_pytorchjob(cfg, JobSpec(workers=0, gpus_per_node=0)))
    assert set(doc["spec"]["pytorchReplicaSpecs"]) == {"Master"}
    container = doc["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert container["command"][0] == "onerec"  # one process: the CLI itself, no torchrun


def test_config_map_carries_the_config_that_loads_back(cfg, tmp_path):
    doc = to_manifest(config_map(cfg, JobSpec()))
    (tmp_path / "c.yaml").write_text(doc["data"]["config.yaml"])
    assert Config.from_file(tmp_path / "c.yaml") == cfg
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_replica_pod_spec_validates_as_a_kubernetes_pod(cfg):
    doc = to_manifest(build_pytorchjob(cfg, JobSpec(workers=1)))
    for replica in doc["spec"]["pytorchReplicaSpecs"].values():
        tpl = replica["template"]
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "check", **tpl["metadata"]}, "spec": tpl["spec"]}
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
        sc = tpl["spec"]["containers"][0]["securityContext"]
        assert sc["runAsNonRoot"] and not sc["allowPrivilegeEscalation"]


def test_manifest_is_plain_yaml(cfg):
    text = yaml.safe_dump(to_manifest(build_pytorchjob(cfg)))
    assert yaml.safe_load(text)["kind"] == "PyTorchJob"


def test_launcher_sends_config_map_then_job():
    sent = []

    class FakeCore:  # stands in for the Kubernetes API server, which cannot exist here
        def create_namespaced_config_map(self, namespace, body):
            sent.append(("configmap", namespace, body.metadata.name))

    class FakeTraining:
        def create_job(self, job, namespace):
            sent.append(("pytorchjob", namespace, job.metadata.name))

    spec = JobSpec(name="pretrain-42", namespace="ml")
    name = TrainingClientLauncher(FakeTraining(), FakeCore()).launch(Config.from_preset("tiny"),
                                                                     spec)
    assert name == "pretrain-42"
    assert sent == [("configmap", "ml", "pretrain-42-config"), ("pytorchjob", "ml", "pretrain-42")]

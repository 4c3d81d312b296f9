"""The TrainJob (Kubeflow Trainer v2) of the pretrain and align steps: what we would send to a
cluster, checked against the upstream CRD and runtime (../shared/crds, skipped when absent),
and sent through the Trainer SDK to a fake of the Kubernetes API (no cluster exists here).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes import client as k8s

from components.launch.jobs import JobSpec, to_manifest
from components.launch.training import StepOptions, preview_job, run_step
from components.launch.trainjob import (
    RUNTIME,
    TrainerClientLauncher,
    build_trainjob,
    trainjob_manifest,
)
from onerec import stages
from onerec.config import Config, ConfigError
from tests.test_k8s import K8S_VERSION, check_custom_resource, load_module, shared_crd

STEPS = ("pretrain", "align")
# what the torch plugin sets for torchrun; a TrainJob that sets one itself is rejected
TORCHRUN_RESERVED = {"PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR",
                     "PET_MASTER_PORT"}


@pytest.fixture(scope="module")
def cfg() -> Config:
    return Config.from_preset("base")


def _job(cfg: Config, step: str, spec: JobSpec | None = None,
         launcher: str = "trainjob") -> dict[str, Any]:
    return preview_job(step, cfg, StepOptions(root="/mnt/onerec", max_steps=500),
                       "cycle-2022-05-01", spec or JobSpec(workers=1, gpus_per_node=8),
                       launcher=launcher)


def _node_pod(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    return load_module("render_all.py").trainjob_pod_spec(doc)


# -- the object and the upstream schemas --------------------------------------------------------
@pytest.mark.parametrize("step", STEPS)
def test_trainjob_validates_against_the_upstream_crd(cfg, step):
    doc = _job(cfg, step)
    assert doc["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and doc["kind"] == "TrainJob"
    assert doc["metadata"]["name"] == f"onerec-{step}-cycle-2022-05-01"
    check_custom_resource(doc)  # jsonschema, strictly: a field the CRD does not know fails
    # the CRD's CEL rules, which jsonschema does not evaluate
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    assert len(doc["metadata"]["name"]) <= 63
    assert doc["spec"]["trainer"]["numProcPerNode"] >= 1


def test_runtime_ref_names_the_torch_distributed_runtime_trainer_installs(cfg):
    runtime = shared_crd("trainer-torch-distributed-runtime.yaml")
    check_custom_resource(runtime)
    ref = _job(cfg, "pretrain")["spec"]["runtimeRef"]
    assert ref == {"apiGroup": "trainer.kubeflow.org", "kind": runtime["kind"],
                   "name": runtime["metadata"]["name"]} and ref["name"] == RUNTIME
    assert "torch" in runtime["spec"]["mlPolicy"]  # the torch plugin: PET_* env for torchrun
    # the runtime patch targets its `node` job and container, and the node pod that
    # k8s/render_all.py writes for checkov is faithful: the runtime's container sets only these
    (node,) = [j for j in runtime["spec"]["template"]["spec"]["replicatedJobs"]
               if j["name"] == "node"]
    (container,) = node["template"]["spec"]["template"]["spec"]["containers"]
    assert set(container) == {"name", "image"} and container["name"] == "node"
    assert set(node["template"]["spec"]["template"]["spec"]) == {"containers"}


@pytest.mark.parametrize("step", STEPS)
def test_gpus_limits_node_pool_and_rendezvous(cfg, step):
    doc = _job(cfg, step, JobSpec(workers=3, gpus_per_node=8))
    trainer = doc["spec"]["trainer"]
    assert trainer["numNodes"] == 4 and trainer["numProcPerNode"] == 8  # one process per GPU
    assert trainer["resourcesPerNode"]["limits"] == {"cpu": "8", "memory": "64Gi",
                                                     "nvidia.com/gpu": "8"}
    assert trainer["resourcesPerNode"]["requests"] == trainer["resourcesPerNode"]["limits"]
    # torchrun reads the torch plugin's PET_* env and starts numProcPerNode copies of the
    # same `onerec pipeline step` command, with RANK/WORLD_SIZE for init_from_env
    cmd = trainer["command"]
    assert cmd[:6] == ["torchrun", "--no-python", "onerec", "pipeline", "step", step]
    assert cmd[-2:] == ["--config", "/etc/onerec/config.yaml"]
    assert f"/mnt/onerec/jobs/onerec-{step}-cycle-2022-05-01/in/snapshot" in cmd
    assert not {e["name"] for e in trainer["env"]} & TORCHRUN_RESERVED
    pod, _ = _node_pod(doc)
    assert pod["nodeSelector"] == {"onerec.io/pool": "gpu"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                   "effect": "NoSchedule"}]


def test_a_cpu_job_asks_for_no_gpu_and_runs_one_process_per_node(cfg):
    doc = _job(cfg, "pretrain", JobSpec(gpus_per_node=0))
    trainer = doc["spec"]["trainer"]
    assert trainer["numNodes"] == 1 and trainer["numProcPerNode"] == 1
    assert "nvidia.com/gpu" not in trainer["resourcesPerNode"]["limits"]
    assert "tolerations" not in _node_pod(doc)[0]
    check_custom_resource(doc)


@pytest.mark.parametrize("step", STEPS)
def test_node_pod_is_restricted_and_mounts_the_config(cfg, step):
    doc = _job(cfg, step)
    pod, annotations = _node_pod(doc)
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "check", "annotations": annotations}, "spec": pod}, K8S_VERSION, strict=True)
    assert pod["securityContext"] == {"fsGroup": 10001, "runAsGroup": 10001, "runAsNonRoot": True,
                                      "runAsUser": 10001,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    (c,) = pod["containers"]
    assert c["securityContext"] == {"allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]},
                                    "readOnlyRootFilesystem": True, "runAsNonRoot": True}
    assert pod["serviceAccountName"] == "onerec-trainer"  # automountServiceAccountToken: false
    assert {"name": "config", "configMap": {"name": f"{doc['metadata']['name']}-config"}} in \
        pod["volumes"]
    assert {"name": "config", "mountPath": "/etc/onerec", "readOnly": True} in c["volumeMounts"]
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/etc/onerec", "/mnt/onerec",
                                                           "/dev/shm", "/tmp"}
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env == {"ONEREC_CONFIG_FINGERPRINT": cfg.fingerprint(), "HOME": "/tmp"}
    assert doc["metadata"]["labels"]["onerec.io/config-fingerprint"] == cfg.fingerprint()


def test_the_trainer_service_account_mounts_no_token():
    """The TrainJob API has no pod-level automountServiceAccountToken: the account's holds."""
    accounts = list(yaml.safe_load_all(
        (Path(__file__).resolve().parents[1] / "k8s/base/security/service-accounts.yaml")
        .read_text()))
    (trainer,) = [a for a in accounts if a["metadata"]["name"] == JobSpec().service_account]
    assert trainer["automountServiceAccountToken"] is False


def test_the_sdk_model_keeps_every_field(cfg):
    """build_trainjob goes through kubeflow_trainer_api's typed models and loses nothing."""
    from kubeflow_trainer_api import models as tm

    spec = JobSpec(workers=1, gpus_per_node=2)
    job = build_trainjob(cfg, spec)
    assert isinstance(job, tm.TrainerV1alpha1TrainJob)
    assert to_manifest(job) == trainjob_manifest(cfg, spec)
    assert yaml.safe_load(yaml.safe_dump(to_manifest(job)))["kind"] == "TrainJob"


def test_the_trainjob_command_parses_with_the_cli(cfg):
    from typer.testing import CliRunner

    from onerec.app.cli import app

    cmd = _job(cfg, "align")["spec"]["trainer"]["command"]
    assert cmd[:2] == ["torchrun", "--no-python"]
    for flag in ("--pretrained", "--reward", "--snapshot", "--codebook", "--out", "--root"):
        assert flag in cmd
    res = CliRunner().invoke(app, [*cmd[3:5], "--help"])
    assert res.exit_code == 0 and "pretrained" in res.output


def test_selecting_pytorchjob_still_builds_a_valid_pytorchjob(cfg):
    doc = _job(cfg, "pretrain", JobSpec(workers=1, gpus_per_node=4), launcher="pytorchjob")
    assert doc["apiVersion"] == "kubeflow.org/v1" and doc["kind"] == "PyTorchJob"
    assert doc["spec"]["nprocPerNode"] == "4"
    trainjob = _job(cfg, "pretrain", JobSpec(workers=1, gpus_per_node=4))
    for replica in doc["spec"]["pytorchReplicaSpecs"].values():
        tpl = replica["template"]
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": "check", **tpl["metadata"]}, "spec": tpl["spec"]}, K8S_VERSION, strict=True)
        (c,) = tpl["spec"]["containers"]
        # the same pod either way: command (torchrun aside), resources, security
        cli = c["command"][c["command"].index("--no-python") + 1:]  # 4 GPUs: under torchrun
        assert c["command"][0] == "torchrun" and cli == trainjob["spec"]["trainer"]["command"][2:]
        assert c["resources"] == trainjob["spec"]["trainer"]["resourcesPerNode"]
        assert c["securityContext"] == _node_pod(trainjob)[0]["containers"][0]["securityContext"]


# -- bad settings ------------------------------------------------------------------------------------
@pytest.mark.parametrize("field,value", [("gpus_per_node", -1), ("workers", -2),
                                         ("gpus_per_node", "8")])
def test_bad_job_settings_name_the_field(field, value):
    with pytest.raises(ConfigError, match=rf"^{field}: must be an integer >= 0"):
        JobSpec(**{field: value})


def test_an_unknown_launcher_is_refused_naming_the_setting(cfg, tmp_path):
    with pytest.raises(stages.StageError, match=r"^launcher: must be one of \['local', "
                                                r"'trainjob', 'pytorchjob'\], got 'slurm'"):
        run_step("pretrain", cfg, {}, str(tmp_path / "out"), StepOptions(root=str(tmp_path)),
                 launcher="slurm")
    with pytest.raises(stages.StageError, match=r"^launcher: "):
        preview_job("pretrain", cfg, StepOptions(root="/r"), "x", launcher="TrainJob")
    assert not (tmp_path / "jobs").exists()  # nothing staged


# -- submission through the Trainer SDK, to a fake Kubernetes API ------------------------------------
class _Async:
    """What the API client returns for `async_req=True`."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def get(self, timeout: float | None = None) -> Any:
        return self.value


class FakeKubernetesAPI:
    """Stands in for the API server (the CoreV1Api and CustomObjectsApi calls made through the
    Trainer SDK's backend), which cannot exist here: it keeps what is created, and reports a
    TrainJob with the terminal condition `condition` (None: still running) once `finish` (the
    pods' work) has run."""

    def __init__(self, condition: str | None = "Complete", finish: Any = None) -> None:
        self.sent: list[tuple[str, str, str]] = []
        self.objects: dict[str, dict[str, Any]] = {}
        self.condition, self.finish = condition, finish

    @staticmethod
    def _reply(value: Any, kw: dict[str, Any]) -> Any:
        return _Async(value) if kw.get("async_req") else value

    def create_namespaced_config_map(self, namespace: str, body: Any, **kw: Any) -> Any:
        self.sent.append(("configmap", namespace, body.metadata.name))
        self.objects[body.metadata.name] = to_manifest(body)
        return self._reply(body, kw)

    def create_namespaced_custom_object(self, group: str, version: str, namespace: str,
                                        plural: str, body: dict[str, Any], **kw: Any) -> Any:
        self.sent.append((f"{group}/{version}/{plural}", namespace, body["metadata"]["name"]))
        self.objects[body["metadata"]["name"]] = copy.deepcopy(body)
        return self._reply(body, kw)

    def get_namespaced_custom_object(self, group: str, version: str, namespace: str,
                                     plural: str, name: str, **kw: Any) -> Any:
        self.sent.append(("get", namespace, name))
        if self.finish is not None:
            self.finish(self.objects[name])
            self.finish = None
        job = copy.deepcopy(self.objects[name])
        job["metadata"]["creationTimestamp"] = "2026-12-03T10:00:00Z"
        job["status"] = {"conditions": [{
            "type": "Created", "status": "True", "reason": "JobSetCreated", "message": "",
            "lastTransitionTime": "2026-12-03T10:00:00Z"}]}
        if self.condition:
            job["status"]["conditions"].append({
                "type": self.condition, "status": "True", "reason": f"JobSet{self.condition}",
                "message": "node-0: exit code 1" if self.condition == "Failed" else "",
                "lastTransitionTime": "2026-12-03T11:00:00Z"})
        return self._reply(job, kw)


def _trainer_client(api: FakeKubernetesAPI, namespace: str) -> Any:
    """The real TrainerClient and Kubernetes backend, on the fake API."""
    from kubeflow.common.types import KubernetesBackendConfig
    from kubeflow.trainer import TrainerClient

    client = TrainerClient(KubernetesBackendConfig(namespace=namespace,
                                                   client_configuration=k8s.Configuration()))
    client.backend.core_api = api
    client.backend.custom_api = api
    return client


def test_launcher_sends_the_config_map_then_the_trainjob_and_waits_for_complete():
    api = FakeKubernetesAPI()
    launcher = TrainerClientLauncher(_trainer_client(api, "ml"))
    cfg = Config.from_preset("tiny")
    spec = JobSpec(name="onerec-pretrain-42", namespace="ml")
    assert launcher.launch(cfg, spec) == "onerec-pretrain-42"
    assert api.sent == [("configmap", "ml", "onerec-pretrain-42-config"),
                        ("trainer.kubeflow.org/v1alpha1/trainjobs", "ml", "onerec-pretrain-42")]
    assert api.objects["onerec-pretrain-42"] == trainjob_manifest(cfg, spec)
    sent_config = api.objects["onerec-pretrain-42-config"]["data"]["config.yaml"]
    assert Config.from_dict(yaml.safe_load(sent_config)) == cfg  # the Config that loads back
    launcher.wait("onerec-pretrain-42", "ml", timeout_s=60)
    assert api.sent[-1] == ("get", "ml", "onerec-pretrain-42")


def test_a_failed_trainjob_fails_the_wait_with_its_reason():
    api = FakeKubernetesAPI(condition="Failed")
    launcher = TrainerClientLauncher(_trainer_client(api, "ml"))
    launcher.launch(Config.from_preset("tiny"), JobSpec(name="onerec-align-1", namespace="ml"))
    with pytest.raises(RuntimeError, match=r"^TrainJob ml/onerec-align-1 failed: JobSetFailed: "
                                           r"node-0: exit code 1$"):
        launcher.wait("onerec-align-1", "ml", timeout_s=60)


def test_a_trainjob_that_does_not_finish_times_out():
    api = FakeKubernetesAPI(condition=None)
    launcher = TrainerClientLauncher(_trainer_client(api, "ml"), poll_s=0.01)
    launcher.launch(Config.from_preset("tiny"), JobSpec(name="onerec-align-2", namespace="ml"))
    with pytest.raises(TimeoutError, match="onerec-align-2: not Complete after 0 s"):
        launcher.wait("onerec-align-2", "ml", timeout_s=0)


def test_trainjob_launcher_stages_inputs_launches_waits_and_collects(tmp_path):
    (tmp_path / "snap").mkdir()
    (tmp_path / "snap" / "snapshot.json").write_text("{}")
    (tmp_path / "cb").mkdir()

    def finish(job: dict[str, Any]) -> None:  # the node pods' work: write the output folder
        cmd = job["spec"]["trainer"]["command"]
        out = Path(cmd[cmd.index("--out") + 1])
        out.mkdir(parents=True)
        (out / "summary.json").write_text(json.dumps({"watermark_ms": 7}))

    api = FakeKubernetesAPI(finish=finish)
    res = run_step("pretrain", Config.from_preset("tiny"),
                   {"snapshot": str(tmp_path / "snap"), "codebook": str(tmp_path / "cb")},
                   str(tmp_path / "model"), StepOptions(root=str(tmp_path / "root")),
                   launcher="trainjob", run_id="c1", spec=JobSpec(namespace="ml"),
                   client=_trainer_client(api, "ml"), wait_timeout_s=60)
    name = "onerec-pretrain-c1"
    assert [s[0] for s in api.sent[:2]] == ["configmap", "trainer.kubeflow.org/v1alpha1/trainjobs"]
    assert ("get", "ml", name) in api.sent
    assert (tmp_path / "root" / "jobs" / name / "in" / "snapshot" / "snapshot.json").exists()
    assert res == {"watermark_ms": 7}
    assert json.loads((tmp_path / "model" / "summary.json").read_text()) == res

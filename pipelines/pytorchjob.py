"""PyTorchJob for pretraining and alignment, built with the kubeflow-training SDK models.

The job is derived from the one Config: the Config travels as a ConfigMap mounted at
/etc/onerec/config.yaml, the command is the same `onerec` CLI a laptop runs, and the Training
Operator sets RANK/WORLD_SIZE/MASTER_ADDR so `onerec.distributed.init_from_env` starts DDP
(nccl on GPU nodes). Replicas: one Master plus `workers` Workers, each with `gpus_per_node`
GPUs and torchrun's `nproc_per_node` equal to it.

Everything that talks to a cluster sits behind `JobLauncher.launch`: tests check the objects
we would send, the real path calls `kubeflow.training.TrainingClient().create_job`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from kubeflow.training import constants
from kubeflow.training import models as m
from kubernetes import client as k8s

from onerec.config import Config

CONFIG_MOUNT = "/etc/onerec"
# paths in the pod, not on this machine: the writable scratch (an emptyDir: the root filesystem
# is read-only) and shared memory for DataLoader workers
TMP_MOUNT = "/tmp"  # nosec B108 # a pod mount path
SHM_MOUNT = "/dev/shm"  # nosec B108 # a pod mount path
UID = 10001  # the image's user (docker/train.Dockerfile): non-root, a high uid apart from hosts'
# checkov (`make security`) reads these: a batch job serves nothing, so there is no endpoint for
# readiness or liveness probes (the Training Operator restarts failed replicas)
CHECKOV_SKIPS = {"checkov.io/skip1": "CKV_K8S_8=batch job: no server to probe for liveness",
                 "checkov.io/skip2": "CKV_K8S_9=batch job: no server to probe for readiness"}
DEFAULT_IMAGE = "ghcr.io/onerec-k8s/onerec-train:0.1.0"


@dataclass
class JobSpec:
    """Cluster-side settings of a training job (not hyperparameters: those are in Config)."""

    name: str = "onerec-pretrain"
    namespace: str = "onerec"
    image: str = DEFAULT_IMAGE
    command: list[str] = field(default_factory=lambda: ["onerec", "pretrain"])
    workers: int = 0  # Worker replicas beside the Master
    gpus_per_node: int = 1  # nvidia.com/gpu per replica (0: CPU job)
    cpu: str = "8"
    memory: str = "64Gi"
    node_selector: dict[str, str] = field(default_factory=lambda: {"onerec.io/pool": "gpu"})
    service_account: str = "onerec-trainer"
    data_pvc: str = "onerec-data"  # PVC with data, codebooks and checkpoints, at /mnt/onerec
    backoff_limit: int = 3
    ttl_seconds_after_finished: int = 86_400


def config_map(cfg: Config, spec: JobSpec) -> k8s.V1ConfigMap:
    return k8s.V1ConfigMap(
        api_version="v1", kind="ConfigMap",
        metadata=k8s.V1ObjectMeta(name=f"{spec.name}-config", namespace=spec.namespace,
                                  labels={"app.kubernetes.io/part-of": "onerec",
                                          "onerec.io/config-fingerprint": cfg.fingerprint()}),
        data={"config.yaml": cfg.to_yaml()})


def _container(cfg: Config, spec: JobSpec) -> k8s.V1Container:
    limits = {"cpu": spec.cpu, "memory": spec.memory}
    if spec.gpus_per_node:
        limits["nvidia.com/gpu"] = str(spec.gpus_per_node)
    return k8s.V1Container(
        name=constants.PYTORCHJOB_CONTAINER,  # the operator looks for "pytorch"
        image=spec.image,
        image_pull_policy="Always",  # each pod start re-checks the registry's credentials
        command=[*spec.command, "--config", f"{CONFIG_MOUNT}/config.yaml"],
        env=[k8s.V1EnvVar(name="ONEREC_CONFIG_FINGERPRINT", value=cfg.fingerprint()),
             k8s.V1EnvVar(name="HOME", value=TMP_MOUNT)],  # caches go to the writable /tmp
        resources=k8s.V1ResourceRequirements(requests=dict(limits), limits=limits),
        volume_mounts=[k8s.V1VolumeMount(name="config", mount_path=CONFIG_MOUNT, read_only=True),
                       k8s.V1VolumeMount(name="data", mount_path="/mnt/onerec"),
                       k8s.V1VolumeMount(name="dshm", mount_path=SHM_MOUNT),
                       k8s.V1VolumeMount(name="tmp", mount_path=TMP_MOUNT)],
        # the namespace enforces Pod Security "restricted" (k8s/base/namespace.yaml)
        security_context=k8s.V1SecurityContext(
            run_as_non_root=True, allow_privilege_escalation=False,
            read_only_root_filesystem=True, capabilities=k8s.V1Capabilities(drop=["ALL"])),
    )


def _replica(cfg: Config, spec: JobSpec, replicas: int) -> m.KubeflowOrgV1ReplicaSpec:
    pod = k8s.V1PodSpec(
        containers=[_container(cfg, spec)],
        service_account_name=spec.service_account,
        automount_service_account_token=False,  # training never calls the Kubernetes API
        node_selector=spec.node_selector or None,
        tolerations=([k8s.V1Toleration(key="nvidia.com/gpu", operator="Exists",
                                       effect="NoSchedule")] if spec.gpus_per_node else None),
        volumes=[
            k8s.V1Volume(name="config", config_map=k8s.V1ConfigMapVolumeSource(
                name=f"{spec.name}-config")),
            k8s.V1Volume(name="data", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
                claim_name=spec.data_pvc)),
            k8s.V1Volume(name="dshm", empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory")),
            k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource()),
        ],
        security_context=k8s.V1PodSecurityContext(
            run_as_non_root=True, run_as_user=UID, run_as_group=UID, fs_group=UID,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault")),
    )
    return m.KubeflowOrgV1ReplicaSpec(
        replicas=replicas, restart_policy="OnFailure",
        template=k8s.V1PodTemplateSpec(
            metadata=k8s.V1ObjectMeta(labels={"app.kubernetes.io/part-of": "onerec"},
                                      annotations={"sidecar.istio.io/inject": "false",
                                                   **CHECKOV_SKIPS}),
            spec=pod))


def build_pytorchjob(cfg: Config, spec: JobSpec | None = None) -> m.KubeflowOrgV1PyTorchJob:
    spec = spec or JobSpec()
    replicas = {"Master": _replica(cfg, spec, 1)}
    if spec.workers > 0:
        replicas["Worker"] = _replica(cfg, spec, spec.workers)
    return m.KubeflowOrgV1PyTorchJob(
        api_version=constants.API_VERSION, kind=constants.PYTORCHJOB_KIND,
        metadata=k8s.V1ObjectMeta(name=spec.name, namespace=spec.namespace,
                                  labels={"app.kubernetes.io/part-of": "onerec",
                                          "onerec.io/config-fingerprint": cfg.fingerprint()}),
        spec=m.KubeflowOrgV1PyTorchJobSpec(
            nproc_per_node=str(max(1, spec.gpus_per_node)),
            pytorch_replica_specs=replicas,
            run_policy=m.KubeflowOrgV1RunPolicy(
                backoff_limit=spec.backoff_limit, clean_pod_policy="None",
                ttl_seconds_after_finished=spec.ttl_seconds_after_finished)))


def to_manifest(obj: Any) -> dict[str, Any]:
    """The JSON/YAML form the API server receives."""
    return k8s.ApiClient().sanitize_for_serialization(obj)


class JobLauncher(Protocol):
    def launch(self, cfg: Config, spec: JobSpec) -> str: ...


class TrainingClientLauncher:
    """The real path: create the ConfigMap, then the PyTorchJob, through the cluster API."""

    def __init__(self, training_client: Any = None, core_api: Any = None) -> None:
        self._training_client = training_client
        self._core_api = core_api

    def launch(self, cfg: Config, spec: JobSpec) -> str:
        if self._training_client is None:
            from kubeflow.training import TrainingClient

            self._training_client = TrainingClient(namespace=spec.namespace)
        if self._core_api is None:
            from kubernetes import config as kube_config

            kube_config.load_config()
            self._core_api = k8s.CoreV1Api()
        self._core_api.create_namespaced_config_map(spec.namespace, config_map(cfg, spec))
        self._training_client.create_job(job=build_pytorchjob(cfg, spec),
                                         namespace=spec.namespace)
        return spec.name

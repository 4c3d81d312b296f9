"""What every cluster training job shares, whichever operator runs it (TrainJob or PyTorchJob).

A training job is derived from the one Config: the Config travels as a ConfigMap mounted at
/etc/onerec/config.yaml, the command is the same `onerec` CLI a laptop runs, and the pods run
under Pod Security "restricted" (non-root uid 10001, read-only root filesystem, no privilege
escalation, all capabilities dropped, RuntimeDefault seccomp) on the GPU pool. These pieces are
built once here, as kubernetes-client objects, so `components.launch.trainjob` (Kubeflow
Trainer v2) and `components.launch.pytorchjob` (Training Operator v1) cannot drift apart in what
they ask of a node.

`JobSpec` holds the cluster-side settings (not hyperparameters: those are in Config) and rejects
a bad value with an error naming the field, before anything reaches a cluster. `JobLauncher` is
the small interface the pipeline calls: create the job, wait for its terminal condition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml
from kubernetes import client as k8s

from components import DEFAULT_IMAGE
from onerec.config import Config, ConfigError

CONFIG_MOUNT = "/etc/onerec"
DATA_MOUNT = "/mnt/onerec"
# paths in the pod, not on this machine: the writable scratch (an emptyDir: the root filesystem
# is read-only) and shared memory for DataLoader workers
TMP_MOUNT = "/tmp"  # nosec B108 # a pod mount path
SHM_MOUNT = "/dev/shm"  # nosec B108 # a pod mount path
UID = 10001  # the image's user (docker/train.Dockerfile): non-root, a high uid apart from hosts'
GPU_RESOURCE = "nvidia.com/gpu"
PART_OF = {"app.kubernetes.io/part-of": "onerec"}
FINGERPRINT_LABEL = "onerec.io/config-fingerprint"
FINGERPRINT_ENV = "ONEREC_CONFIG_FINGERPRINT"
# checkov (`make security`) reads these: a batch job serves nothing, so there is no endpoint for
# readiness or liveness probes (the operator restarts failed pods)
CHECKOV_SKIPS = {"checkov.io/skip1": "CKV_K8S_8=batch job: no server to probe for liveness",
                 "checkov.io/skip2": "CKV_K8S_9=batch job: no server to probe for readiness"}
# how a training step runs: in the component's process, or as a job of one of the two operators
LAUNCHERS = ("local", "trainjob", "pytorchjob")
CLUSTER_LAUNCHER = "trainjob"  # Kubeflow Trainer v2; "pytorchjob" for Training Operator v1


@dataclass
class JobSpec:
    """Cluster-side settings of a training job (not hyperparameters: those are in Config)."""

    name: str = "onerec-pretrain"
    namespace: str = "onerec"
    image: str = DEFAULT_IMAGE
    command: list[str] = field(default_factory=lambda: ["onerec", "pretrain"])
    workers: int = 0  # nodes beside the first (PyTorchJob: Worker replicas beside the Master)
    gpus_per_node: int = 1  # nvidia.com/gpu per node, and processes per node (0: a CPU job)
    cpu: str = "8"
    memory: str = "64Gi"
    node_selector: dict[str, str] = field(default_factory=lambda: {"onerec.io/pool": "gpu"})
    service_account: str = "onerec-trainer"
    data_pvc: str = "onerec-data"  # PVC with data, codebooks and checkpoints, at /mnt/onerec
    backoff_limit: int = 3  # PyTorchJob only (a TrainJob's runtime owns its failure policy)
    ttl_seconds_after_finished: int = 86_400  # PyTorchJob only

    def __post_init__(self) -> None:
        for key in ("workers", "gpus_per_node", "backoff_limit", "ttl_seconds_after_finished"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{key}: must be an integer >= 0, got {value!r}")
        for key in ("name", "namespace", "image", "cpu", "memory"):
            if not getattr(self, key):
                raise ConfigError(f"{key}: must not be empty")
        if not self.command:
            raise ConfigError("command: must not be empty")

    @property
    def num_nodes(self) -> int:
        return 1 + self.workers

    @property
    def procs_per_node(self) -> int:
        """DDP processes per node: one per GPU, one on a CPU node."""
        return max(1, self.gpus_per_node)


def config_map(cfg: Config, spec: JobSpec) -> k8s.V1ConfigMap:
    return k8s.V1ConfigMap(
        api_version="v1", kind="ConfigMap",
        metadata=k8s.V1ObjectMeta(name=f"{spec.name}-config", namespace=spec.namespace,
                                  labels={**PART_OF, FINGERPRINT_LABEL: cfg.fingerprint()}),
        data={"config.yaml": cfg.to_yaml()})


def job_metadata(cfg: Config, spec: JobSpec) -> k8s.V1ObjectMeta:
    return k8s.V1ObjectMeta(name=spec.name, namespace=spec.namespace,
                            labels={**PART_OF, FINGERPRINT_LABEL: cfg.fingerprint()})


def pod_metadata(extra_skips: dict[str, str] | None = None) -> k8s.V1ObjectMeta:
    return k8s.V1ObjectMeta(labels=dict(PART_OF),
                            annotations={"sidecar.istio.io/inject": "false", **CHECKOV_SKIPS,
                                         **(extra_skips or {})})


def command(spec: JobSpec) -> list[str]:
    return [*spec.command, "--config", f"{CONFIG_MOUNT}/config.yaml"]


def env(cfg: Config) -> list[k8s.V1EnvVar]:
    return [k8s.V1EnvVar(name=FINGERPRINT_ENV, value=cfg.fingerprint()),
            k8s.V1EnvVar(name="HOME", value=TMP_MOUNT)]  # caches go to the writable /tmp


def resources(spec: JobSpec) -> k8s.V1ResourceRequirements:
    limits = {"cpu": spec.cpu, "memory": spec.memory}
    if spec.gpus_per_node:
        limits[GPU_RESOURCE] = str(spec.gpus_per_node)
    return k8s.V1ResourceRequirements(requests=dict(limits), limits=limits)


def volume_mounts() -> list[k8s.V1VolumeMount]:
    return [k8s.V1VolumeMount(name="config", mount_path=CONFIG_MOUNT, read_only=True),
            k8s.V1VolumeMount(name="data", mount_path=DATA_MOUNT),
            k8s.V1VolumeMount(name="dshm", mount_path=SHM_MOUNT),
            k8s.V1VolumeMount(name="tmp", mount_path=TMP_MOUNT)]


def volumes(spec: JobSpec) -> list[k8s.V1Volume]:
    return [
        k8s.V1Volume(name="config", config_map=k8s.V1ConfigMapVolumeSource(
            name=f"{spec.name}-config")),
        k8s.V1Volume(name="data", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
            claim_name=spec.data_pvc)),
        k8s.V1Volume(name="dshm", empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory")),
        k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource()),
    ]


def container_security() -> k8s.V1SecurityContext:
    # the namespace enforces Pod Security "restricted" (k8s/base/namespace.yaml)
    return k8s.V1SecurityContext(
        run_as_non_root=True, allow_privilege_escalation=False,
        read_only_root_filesystem=True, capabilities=k8s.V1Capabilities(drop=["ALL"]))


def pod_security() -> k8s.V1PodSecurityContext:
    return k8s.V1PodSecurityContext(
        run_as_non_root=True, run_as_user=UID, run_as_group=UID, fs_group=UID,
        seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"))


def tolerations(spec: JobSpec) -> list[k8s.V1Toleration] | None:
    if not spec.gpus_per_node:
        return None
    return [k8s.V1Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")]


def to_manifest(obj: Any) -> dict[str, Any]:
    """The JSON/YAML form the API server receives (kubernetes-client or Trainer API models)."""
    if hasattr(obj, "to_dict") and hasattr(obj, "model_dump"):  # a kubeflow_trainer_api model
        return obj.to_dict()
    return k8s.ApiClient().sanitize_for_serialization(obj)


def without_fingerprints(obj: Any) -> Any:
    """A manifest without its Config fingerprint (label and env var), for checked-in files that
    must not go stale when a Config default changes; the pipeline's jobs carry theirs."""
    if isinstance(obj, list):
        kept = [without_fingerprints(v) for v in obj
                if not (isinstance(v, dict) and v.get("name") == FINGERPRINT_ENV)]
        return kept
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k == FINGERPRINT_LABEL:
                continue
            v = without_fingerprints(v)
            if k == "env" and v == []:
                continue
            out[k] = v
        return out
    return obj


def write_manifests(path: Path, source: str, how: str, docs: list[dict[str, Any]]) -> None:
    """The checked-in form of jobs for a manual run (k8s/base/*/render.py): a header saying
    where they come from and how to apply them, then the documents."""
    header = (f"# Generated by {path.parent.relative_to(path.parents[3])}/render.py from "
              f"{source}; do not edit.\n# {how}\n")
    path.write_text(header + yaml.safe_dump_all(docs, sort_keys=False))


class JobLauncher(Protocol):
    """Creates a training job on a cluster and waits for it; tests pass fakes of the API."""

    def launch(self, cfg: Config, spec: JobSpec) -> str: ...

    def wait(self, name: str, namespace: str, timeout_s: int) -> None: ...

"""TrainJob (Kubeflow Trainer v2, trainer.kubeflow.org/v1alpha1) for pretraining and alignment:
the default cluster launcher. Clusters still on the Training Operator v1 use
`components.launch.pytorchjob`.

The job runs on the `torch-distributed` ClusterTrainingRuntime that Trainer installs, and asks
of it what the PyTorchJob asks of its replicas (`components.launch.jobs`): the Config as a
ConfigMap at /etc/onerec/config.yaml, the GPU pool, and Pod Security "restricted". Where each
piece goes:

- `spec.trainer`: image, command, env, `numNodes` (1 + workers), `numProcPerNode`
  (gpus_per_node, 1 on CPU) and `resourcesPerNode` (cpu, memory, nvidia.com/gpu).
- `spec.runtimePatches` (one entry, manager `onerec.io/pipelines`): the pod template of the
  runtime's `node` job: labels and annotations, service account, node selector, GPU toleration,
  volumes, pod and container security contexts, volume mounts.

DDP: Trainer's torch plugin exports PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK,
PET_MASTER_ADDR and PET_MASTER_PORT, which torchrun reads as its defaults; so the command is
`torchrun --no-python onerec pipeline step ...`, and torchrun starts `numProcPerNode` copies of
the same `onerec` command with RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR set, as
`onerec.distributed.init_from_env` expects.

What the TrainJob API cannot say, and what covers it instead (docs/security.md): the pod-level
`automountServiceAccountToken` (the `onerec-trainer` ServiceAccount sets it to false, and pods
inherit it) and `imagePullPolicy` (the runtime's; kubelet's default for a tagged image).

The objects are the `kubeflow_trainer_api` models (the Trainer SDK's); submission goes through
the SDK's `TrainerClient` and its Kubernetes backend (`TrainerClientLauncher`, which says why
it does not call `train` and `wait_for_job_status`).
"""

from __future__ import annotations

import time
from typing import Any

from kubeflow_trainer_api import models as tm

from components.launch import jobs
from components.launch.jobs import JobSpec, config_map, to_manifest
from onerec.config import Config

API_VERSION = "trainer.kubeflow.org/v1alpha1"
KIND = "TrainJob"
RUNTIME = "torch-distributed"  # the ClusterTrainingRuntime Trainer installs (torch_distributed.yaml)
RUNTIME_JOB = "node"  # the runtime's replicated job and its trainer container
PATCH_MANAGER = "onerec.io/pipelines"
TORCHRUN = ["torchrun", "--no-python"]  # PET_* env from the torch plugin: nnodes, nproc, rank
# checkov skips for what the TrainJob API cannot set (the reasons: docs/security.md)
TRAINJOB_SKIPS = {
    "checkov.io/skip3": "CKV_K8S_38=TrainJob cannot set the pod's automountServiceAccountToken; "
                        "its ServiceAccount onerec-trainer sets false",
    "checkov.io/skip4": "CKV_K8S_15=TrainJob cannot set imagePullPolicy; "
                        "the image is pinned by tag"}


def _patch(spec: JobSpec) -> dict[str, Any]:
    """The runtime patch: the `node` pod template as the restricted namespace needs it."""
    pod = {
        "serviceAccountName": spec.service_account,
        "nodeSelector": spec.node_selector or None,
        "tolerations": jobs.tolerations(spec),
        "volumes": jobs.volumes(spec),
        "securityContext": jobs.pod_security(),
        "containers": [{"name": RUNTIME_JOB, "securityContext": jobs.container_security(),
                        "volumeMounts": jobs.volume_mounts()}],
    }
    pod = {k: v for k, v in pod.items() if v is not None}  # a CPU job: no selector, toleration
    template = {"metadata": jobs.pod_metadata(TRAINJOB_SKIPS), "spec": pod}
    return {"manager": PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {
        "replicatedJobs": [{"name": RUNTIME_JOB,
                            "template": {"spec": {"template": template}}}]}}}}


def trainjob_manifest(cfg: Config, spec: JobSpec) -> dict[str, Any]:
    """The TrainJob as the API server receives it (plain dict)."""
    trainer = {
        "image": spec.image,
        "command": [*TORCHRUN, *jobs.command(spec)],
        "env": jobs.env(cfg),
        "numNodes": spec.num_nodes,
        "numProcPerNode": spec.procs_per_node,
        "resourcesPerNode": jobs.resources(spec),
    }
    doc = {"apiVersion": API_VERSION, "kind": KIND, "metadata": jobs.job_metadata(cfg, spec),
           "spec": {"runtimeRef": {"apiGroup": "trainer.kubeflow.org",
                                   "kind": "ClusterTrainingRuntime", "name": RUNTIME},
                    "trainer": trainer, "runtimePatches": [_patch(spec)]}}
    return to_manifest(doc)  # kubernetes-client objects inside -> their JSON form, Nones dropped


def build_trainjob(cfg: Config, spec: JobSpec | None = None) -> tm.TrainerV1alpha1TrainJob:
    """The TrainJob as the Trainer SDK's API model (typed; tests check that the round trip
    through the model keeps every field of `trainjob_manifest`)."""
    return tm.TrainerV1alpha1TrainJob.from_dict(trainjob_manifest(cfg, spec or JobSpec()))


def terminal_condition(job: tm.TrainerV1alpha1TrainJob) -> Any:
    """The TrainJob's Complete or Failed condition when one is True, else None."""
    for cond in (job.status.conditions or []) if job.status else []:
        if cond.type in ("Complete", "Failed") and cond.status == "True":
            return cond
    return None


class TrainerClientLauncher:
    """The Trainer v2 path, through the Trainer SDK's Kubernetes backend (`TrainerClient`, in
    the pod's service account when none is given): create the ConfigMap, then the TrainJob; wait
    on the TrainJob's conditions (Complete, or an error naming the Failed condition's reason).

    The job is created with the backend's API client rather than `TrainerClient.train` (kubeflow
    0.5.0): its `CustomTrainerContainer` cannot set `numProcPerNode` (the torch plugin would
    then start one process per CPU of the limit on a CPU node), and `train` reads the
    ClusterTrainingRuntime first. The wait reads the TrainJob's conditions itself rather than
    `wait_for_job_status`, which reads that cluster-scoped runtime on every poll: the pipeline's
    Role is namespaced (k8s/base/security/rbac.yaml) and may touch TrainJobs, ConfigMaps and
    pods only.
    """

    def __init__(self, trainer_client: Any = None, *, poll_s: float = 10.0) -> None:
        self._trainer_client = trainer_client
        self._poll_s = poll_s

    def _backend(self, namespace: str) -> Any:
        if self._trainer_client is None:
            from kubeflow.common.types import KubernetesBackendConfig
            from kubeflow.trainer import TrainerClient

            self._trainer_client = TrainerClient(KubernetesBackendConfig(namespace=namespace))
        return self._trainer_client.backend

    def launch(self, cfg: Config, spec: JobSpec) -> str:
        from kubeflow.trainer.constants import constants as c

        backend = self._backend(spec.namespace)
        backend.core_api.create_namespaced_config_map(spec.namespace, config_map(cfg, spec))
        backend.custom_api.create_namespaced_custom_object(
            c.GROUP, c.VERSION, spec.namespace, c.TRAINJOB_PLURAL,
            to_manifest(build_trainjob(cfg, spec)))
        return spec.name

    def wait(self, name: str, namespace: str, timeout_s: int) -> None:
        from kubeflow.trainer.constants import constants as c

        api = self._backend(namespace).custom_api
        deadline = time.monotonic() + timeout_s
        while True:
            job = tm.TrainerV1alpha1TrainJob.from_dict(api.get_namespaced_custom_object(
                c.GROUP, c.VERSION, namespace, c.TRAINJOB_PLURAL, name))
            cond = terminal_condition(job)
            if cond is not None and cond.type == c.TRAINJOB_COMPLETE:
                return
            if cond is not None:
                raise RuntimeError(f"TrainJob {namespace}/{name} failed: {cond.reason}: "
                                   f"{cond.message}")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"TrainJob {namespace}/{name}: not Complete after "
                                   f"{timeout_s} s")
            time.sleep(self._poll_s)

"""PyTorchJob (Training Operator v1, kubeflow.org/v1) for pretraining and alignment, built with
the kubeflow-training SDK models: the launcher for clusters still on the Training Operator.
Kubeflow Trainer v2 clusters use `components.launch.trainjob` (the default).

The pod is `components.launch.jobs`' (Config as a ConfigMap, the `onerec` CLI, restricted
security, GPU pool); the Training Operator sets RANK/WORLD_SIZE/MASTER_ADDR so
`onerec.distributed.init_from_env` starts DDP (nccl on GPU nodes). Replicas: one Master plus
`workers` Workers, each with `gpus_per_node` GPUs and `nprocPerNode` equal to it; a pod with
several GPUs runs the CLI under torchrun, one process per GPU (`command`).

Everything that talks to a cluster sits behind `JobLauncher`: tests check the objects we would
send, the real path calls `kubeflow.training.TrainingClient().create_job`.
"""

from __future__ import annotations

from typing import Any

from kubeflow.training import constants
from kubeflow.training import models as m
from kubernetes import client as k8s

from components.launch import jobs
from components.launch.jobs import (  # re-exported: the names this module has always offered
    CHECKOV_SKIPS,
    CONFIG_MOUNT,
    DEFAULT_IMAGE,
    UID,
    JobLauncher,
    JobSpec,
    config_map,
    to_manifest,
)
from onerec.config import Config

__all__ = ["CHECKOV_SKIPS", "CONFIG_MOUNT", "DEFAULT_IMAGE", "UID", "JobLauncher", "JobSpec",
           "TrainingClientLauncher", "build_pytorchjob", "config_map", "to_manifest"]
KIND = constants.PYTORCHJOB_KIND


def command(spec: JobSpec) -> list[str]:
    """The replica's command. One process per pod runs the CLI itself (the operator's RANK /
    WORLD_SIZE / MASTER_ADDR start DDP); with several GPUs a pod runs torchrun, which starts one
    process per GPU and gives each its global rank, from the pod's rank ($(RANK), which
    Kubernetes expands from the operator's env) and the master's address: the same rendezvous
    the TrainJob path gets from Trainer's PET_* variables."""
    if spec.procs_per_node == 1:
        return jobs.command(spec)
    return ["torchrun", f"--nnodes={1 + spec.workers}", f"--nproc-per-node={spec.procs_per_node}",
            "--node-rank=$(RANK)", "--master-addr=$(MASTER_ADDR)", "--master-port=$(MASTER_PORT)",
            "--no-python", *jobs.command(spec)]


def _container(cfg: Config, spec: JobSpec) -> k8s.V1Container:
    return k8s.V1Container(
        name=constants.PYTORCHJOB_CONTAINER,  # the operator looks for "pytorch"
        image=spec.image,
        image_pull_policy="Always",  # each pod start re-checks the registry's credentials
        command=command(spec), env=jobs.env(cfg), resources=jobs.resources(spec),
        volume_mounts=jobs.volume_mounts(), security_context=jobs.container_security())


def _replica(cfg: Config, spec: JobSpec, replicas: int) -> m.KubeflowOrgV1ReplicaSpec:
    pod = k8s.V1PodSpec(
        containers=[_container(cfg, spec)],
        service_account_name=spec.service_account,
        automount_service_account_token=False,  # training never calls the Kubernetes API
        node_selector=spec.node_selector or None,
        tolerations=jobs.tolerations(spec),
        volumes=jobs.volumes(spec),
        security_context=jobs.pod_security(),
    )
    return m.KubeflowOrgV1ReplicaSpec(
        replicas=replicas, restart_policy="OnFailure",
        template=k8s.V1PodTemplateSpec(metadata=jobs.pod_metadata(), spec=pod))


def build_pytorchjob(cfg: Config, spec: JobSpec | None = None) -> m.KubeflowOrgV1PyTorchJob:
    spec = spec or JobSpec()
    replicas = {"Master": _replica(cfg, spec, 1)}
    if spec.workers > 0:
        replicas["Worker"] = _replica(cfg, spec, spec.workers)
    return m.KubeflowOrgV1PyTorchJob(
        api_version=constants.API_VERSION, kind=KIND,
        metadata=jobs.job_metadata(cfg, spec),
        spec=m.KubeflowOrgV1PyTorchJobSpec(
            nproc_per_node=str(spec.procs_per_node),
            pytorch_replica_specs=replicas,
            run_policy=m.KubeflowOrgV1RunPolicy(
                backoff_limit=spec.backoff_limit, clean_pod_policy="None",
                ttl_seconds_after_finished=spec.ttl_seconds_after_finished)))


class TrainingClientLauncher:
    """The Training Operator path: create the ConfigMap, then the PyTorchJob; wait on the job's
    conditions (Succeeded, or an error on Failed)."""

    def __init__(self, training_client: Any = None, core_api: Any = None) -> None:
        self._training_client = training_client
        self._core_api = core_api

    def _client(self, namespace: str) -> Any:
        if self._training_client is None:
            from kubeflow.training import TrainingClient

            self._training_client = TrainingClient(namespace=namespace)
        return self._training_client

    def launch(self, cfg: Config, spec: JobSpec) -> str:
        training_client = self._client(spec.namespace)
        if self._core_api is None:
            from kubernetes import config as kube_config

            kube_config.load_config()
            self._core_api = k8s.CoreV1Api()
        self._core_api.create_namespaced_config_map(spec.namespace, config_map(cfg, spec))
        training_client.create_job(job=build_pytorchjob(cfg, spec), namespace=spec.namespace)
        return spec.name

    def wait(self, name: str, namespace: str, timeout_s: int) -> None:
        self._client(namespace).wait_for_job_conditions(name, namespace=namespace, job_kind=KIND,
                                                        wait_timeout=timeout_s)

"""The continuous-training pipeline: wiring only (the stages are `onerec.stages`).

    validate -> refresh_codebook -> pretrain -> train_reward_model -> align -> evaluation_gate
                                                       if the gate says "promote": export -> publish

Artifacts flow between the steps (snapshot: Dataset; codebook: Artifact; models: Model; the
gate's report: Artifact; Metrics beside each), and ROOT (a PVC on a cluster, a folder locally)
carries the production model from one cycle to the next (`onerec.registry`). The stage list
(`stages`) says which optional stages run; a stage left out passes its input through and says
so in the run's records, and one asked for but not installed fails the run at its first step.

Two variants of the same graph:
- local (`kfp.local`, `SubprocessRunner(use_venv=False)`): every step is a subprocess of this
  virtual environment; training steps run in-process (`launcher="local"`).
- cluster (`cluster=True`): the same components, plus kfp-kubernetes settings: the data PVC
  mounted at ROOT on every step, the gate and export on the GPU pool (node selector, GPU
  toleration, one `nvidia.com/gpu`), and training steps launching TrainJobs on Kubeflow Trainer
  v2 (`launcher="trainjob"`, the default) or PyTorchJobs on the Training Operator v1
  (`launcher="pytorchjob"`), whose pods get GPU nodes from `components.launch.jobs.JobSpec`.
"""


from collections.abc import Callable
from pathlib import Path
from typing import Any

from kfp import compiler, dsl, kubernetes

from components import DEFAULT_IMAGE
from components.align import align
from components.codebook import refresh_codebook
from components.export import export_model
from components.gate import evaluation_gate
from components.launch.jobs import CLUSTER_LAUNCHER
from components.pretrain import pretrain
from components.publish import publish
from components.reward import train_reward_model
from components.validate import validate_data

PIPELINE_NAME = "onerec-continuous-training"
DATA_PVC = "onerec-data"
CLUSTER_ROOT = "/mnt/onerec"
GPU_POOL = ("onerec.io/pool", "gpu")
GPU_RESOURCE = "nvidia.com/gpu"


def _on_cluster(task: Any, *, gpu: bool, cpu: str = "2", memory: str = "8Gi") -> None:
    """kfp-kubernetes settings of one step on the cluster variant."""
    kubernetes.mount_pvc(task, pvc_name=DATA_PVC, mount_path=CLUSTER_ROOT)
    kubernetes.add_pod_label(task, "app.kubernetes.io/part-of", "onerec")
    task.set_cpu_request(cpu).set_memory_request(memory).set_memory_limit(memory)
    if gpu:
        task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(1)
        kubernetes.add_node_selector(task, *GPU_POOL)
        kubernetes.add_toleration(task, key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")


def make_pipeline(cluster: bool = False) -> Callable[..., Any]:
    """The pipeline function (local or cluster variant); defaults are the cluster's or the
    laptop's accordingly, and every one can be set per run."""
    root_default = CLUSTER_ROOT if cluster else "runs/pipeline"
    data_default = f"{CLUSTER_ROOT}/data/kuairand-pure" if cluster else "data/kuairand-pure"
    # a recurring run's scheduled time picks its day; kfp.local cannot resolve the placeholder
    schedule_time = dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER if cluster else ""

    @dsl.pipeline(name=PIPELINE_NAME,
                  description="OneRec continuous training: validate, refresh the codebook, "
                              "warm-start pretraining past the watermark, reward model, ECPO, "
                              "gate against production, export, publish to GitOps.")
    def continuous_training(
        config_yaml: str,
        until: str = "",
        run_id: str = "",
        data_dir: str = data_default,
        root: str = root_default,
        stages_csv: str = "validate,codebook,pretrain,reward,align,gate,export,publish",
        holdout_days: int = 1,
        launcher: str = CLUSTER_LAUNCHER if cluster else "local",
        warm_start: bool = True,
        epochs: float = 1.0,
        max_steps: int = 0,
        train_budget_s: float = 0.0,
        align_budget_s: float = 0.0,
        gate_tolerance: float = 0.05,
        gate_max_users: int = 1000,
        gate_popularity_floor: bool = True,
        env: str = "dev",
        storage_prefix: str = "",
        canary_percent: int = 10,
        promote: bool = not cluster,
        namespace: str = "onerec",
        image: str = DEFAULT_IMAGE,
        gpus_per_node: int = 1 if cluster else 0,
        workers: int = 0,
    ) -> None:
        v = validate_data(config_yaml=config_yaml, root=root, run_id=run_id, data_dir=data_dir,
                          until=until, schedule_time=schedule_time,
                          holdout_days=holdout_days)
        v.set_display_name("validate")
        common = {"config_yaml": config_yaml, "root": root, "run_id": v.outputs["Output"]}
        cb = refresh_codebook(snapshot=v.outputs["snapshot"], **common)
        cb.set_display_name("refresh codebook")
        job = {"launcher": launcher, "namespace": namespace, "image": image,
               "gpus": gpus_per_node, "workers": workers}
        pt = pretrain(snapshot=v.outputs["snapshot"], codebook=cb.outputs["codebook"],
                      warm_start=warm_start, epochs=epochs, max_steps=max_steps,
                      time_budget_s=train_budget_s, **job, **common)
        pt.set_display_name("pretrain")
        rm = train_reward_model(snapshot=v.outputs["snapshot"], codebook=cb.outputs["codebook"],
                                stages_csv=stages_csv, time_budget_s=align_budget_s, **common)
        rm.set_display_name("train reward model")
        al = align(snapshot=v.outputs["snapshot"], codebook=cb.outputs["codebook"],
                   pretrained=pt.outputs["model"], reward_model=rm.outputs["reward_model"],
                   stages_csv=stages_csv, time_budget_s=align_budget_s, **job, **common)
        al.set_display_name("align")
        gt = evaluation_gate(snapshot=v.outputs["snapshot"], codebook=cb.outputs["codebook"],
                             candidate=al.outputs["model"], tolerance=gate_tolerance,
                             max_users=gate_max_users,
                             popularity_floor=gate_popularity_floor, **common)
        gt.set_display_name("evaluation gate")
        tasks = [v, cb, pt, rm, al, gt]
        with dsl.If(gt.outputs["Output"] == "promote", name="gate-passed"):
            ex = export_model(candidate=al.outputs["model"], codebook=cb.outputs["codebook"],
                              reward_model=rm.outputs["reward_model"], stages_csv=stages_csv,
                              **common)
            ex.set_display_name("export")
            pb = publish(snapshot=v.outputs["snapshot"], codebook=cb.outputs["codebook"],
                         candidate=al.outputs["model"], gate_report=gt.outputs["report"],
                         repository=ex.outputs["repository"], exported=ex.outputs["Output"],
                         stages_csv=stages_csv, env=env, storage_prefix=storage_prefix,
                         canary_percent=canary_percent, promote=promote, **common)
            pb.set_display_name("publish")
            tasks += [ex, pb]
        for t in tasks:
            t.set_caching_options(False)  # every cycle reads ROOT, which KFP cannot hash
            if cluster:
                _on_cluster(t, gpu=t in (gt, ex))

    return continuous_training


def compile_pipeline(path: str | Path, *, cluster: bool = True) -> Path:
    """Write the pipeline YAML (the cluster variant by default: that is what a server runs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(make_pipeline(cluster), str(path))
    return path

"""ECPO alignment of the pretrained candidate with the reward model (a TrainJob, or a PyTorchJob,
on a cluster)."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def align(config_yaml: str, root: str, run_id: str, stages_csv: str, launcher: str,
          time_budget_s: float, namespace: str, image: str, gpus: int, workers: int,
          snapshot: Input[Dataset], codebook: Input[Artifact], pretrained: Input[Model],
          reward_model: Input[Model], model: Output[Model], metrics: Output[Metrics],
          page: Output[HTML]):
    """The aligned candidate; with 'align' left out of the stage list, the pretrained one
    passes through and the ledger and the model's summary.json say so."""
    import yaml

    from components.launch.jobs import JobSpec
    from components.launch.training import StepOptions, run_step
    from onerec import run_pages, stages
    from onerec.config import Config

    if "align" not in stages.parse_stages(stages_csv):
        stages.run_stage("align", root, run_id, stages.passthrough, pretrained.path, model.path,
                         "align not in the stage list")
        run_pages.write(run_pages.skipped("align", "not in the stage list (the pretrained "
                                                   "model passed through)"), page.path, root,
                        run_id)
        return
    cfg = Config.from_dict(yaml.safe_load(config_yaml))
    spec = JobSpec(name="onerec-align", namespace=namespace, image=image, gpus_per_node=gpus,
                   workers=workers)
    out = stages.run_stage(
        "align", root, run_id, run_step, "align", cfg,
        {"snapshot": snapshot.path, "codebook": codebook.path, "pretrained": pretrained.path,
         "reward": reward_model.path}, model.path,
        StepOptions(root=root, time_budget_s=time_budget_s), launcher=launcher, run_id=run_id,
        spec=spec)
    metrics.log_metric("align_steps", out["align_steps"])
    run_pages.write(run_pages.align_page(out, run_pages.read_history(model.path)), page.path,
                    root, run_id)

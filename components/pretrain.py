"""Streaming pretraining: warm start from production, train past its watermark (a TrainJob, or a
PyTorchJob, on a cluster; in-process locally)."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def pretrain(config_yaml: str, root: str, run_id: str, launcher: str, warm_start: bool,
             epochs: float, max_steps: int, time_budget_s: float, namespace: str, image: str,
             gpus: int, workers: int, snapshot: Input[Dataset], codebook: Input[Artifact],
             model: Output[Model], metrics: Output[Metrics], page: Output[HTML]):
    """Next-token pretraining on the cycle's requests; the model folder holds checkpoint/ and
    summary.json (watermark_ms: where the next cycle resumes) and history.json (the page's
    curves)."""
    import yaml

    from components.launch.jobs import JobSpec
    from components.launch.training import StepOptions, run_step
    from onerec import run_pages, stages
    from onerec.config import Config

    cfg = Config.from_dict(yaml.safe_load(config_yaml))
    opts = StepOptions(root=root, warm_start=warm_start, epochs=epochs, max_steps=max_steps,
                       time_budget_s=time_budget_s)
    spec = JobSpec(namespace=namespace, image=image, gpus_per_node=gpus, workers=workers)
    out = stages.run_stage(
        "pretrain", root, run_id, run_step, "pretrain", cfg,
        {"snapshot": snapshot.path, "codebook": codebook.path}, model.path, opts,
        launcher=launcher, run_id=run_id, spec=spec)
    model.metadata.update({"watermark_ms": out["watermark_ms"], "warm_start": out["warm_start"]})
    for key in ("n_requests", "steps", "final_loss", "watermark_ms"):
        metrics.log_metric(key, out[key])
    run_pages.write(run_pages.pretrain_page(out, run_pages.read_history(model.path)), page.path,
                    root, run_id)

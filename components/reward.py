"""P-Score reward model: multi-task engagement heads fused into one preference score."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def train_reward_model(config_yaml: str, root: str, run_id: str, stages_csv: str,
                       time_budget_s: float, snapshot: Input[Dataset],
                       codebook: Input[Artifact], reward_model: Output[Model],
                       metrics: Output[Metrics], page: Output[HTML]):
    """Trains the reward model when 'reward' is in the stage list; otherwise records the skip."""
    from pathlib import Path

    import yaml

    from onerec import run_pages, stages
    from onerec.config import Config

    if "reward" not in stages.parse_stages(stages_csv):
        stages.run_stage("reward", root, run_id, lambda: {"skipped": "not in the stage list"})
        Path(reward_model.path).mkdir(parents=True, exist_ok=True)
        run_pages.write(run_pages.skipped("reward", "not in the stage list"), page.path, root,
                        run_id)
        return
    cfg = Config.from_dict(yaml.safe_load(config_yaml))
    out = stages.run_stage("reward", root, run_id, stages.train_reward, cfg, snapshot.path,
                           codebook.path, reward_model.path, time_budget_s=time_budget_s or None)
    metrics.log_metric("steps", out["steps"])
    pscore = out["metrics"].get("pscore", {})
    if pscore.get("auc") is not None:
        metrics.log_metric("pscore_auc", pscore["auc"])
    run_pages.write(run_pages.reward_page(out), page.path, root, run_id)

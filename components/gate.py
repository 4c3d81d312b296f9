"""Evaluation gate: candidate vs production on the same held-out window; no promotion if worse."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def evaluation_gate(config_yaml: str, root: str, run_id: str, tolerance: float, max_users: int,
                    popularity_floor: bool, snapshot: Input[Dataset], codebook: Input[Artifact],
                    candidate: Input[Model], report: Output[Artifact],
                    metrics: Output[Metrics], page: Output[Markdown]) -> str:
    """Returns "promote" or "blocked"; the pipeline exports and publishes only on "promote".
    `popularity_floor`: also block a candidate significantly below popularity."""
    import yaml

    from onerec import run_pages, stages
    from onerec.config import Config

    cfg = Config.from_dict(yaml.safe_load(config_yaml))
    out = stages.run_stage("gate", root, run_id, stages.evaluate_gate, cfg, snapshot.path,
                           candidate.path, codebook.path, report.path, root=root,
                           tolerance=tolerance, max_users=max_users or None,
                           popularity_floor=popularity_floor)
    for name, row in out["compared"].items():
        metrics.log_metric(f"candidate_{name}", row["candidate"])
        if row["production"] is not None:
            metrics.log_metric(f"production_{name}", row["production"])
        if row["popularity"] is not None:
            metrics.log_metric(f"popularity_{name}", row["popularity"])
    report.metadata.update({"decision": out["decision"], "reasons": out["reasons"]})
    run_pages.write(run_pages.gate_page(out), page.path, root, run_id)
    return out["decision"]

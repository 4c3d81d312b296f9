"""Codebook refresh: encode the videos first seen since the last cycle (refit on drift)."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output

from components import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def refresh_codebook(config_yaml: str, root: str, run_id: str, snapshot: Input[Dataset],
                     codebook: Output[Artifact], metrics: Output[Metrics],
                     page: Output[HTML]):
    """First cycle: fit RQ-Kmeans semantic IDs; later: refresh the production codebook."""
    import yaml

    from onerec import run_pages, stages
    from onerec.config import Config

    cfg = Config.from_dict(yaml.safe_load(config_yaml))
    out = stages.run_stage("codebook", root, run_id, stages.refresh_codebook, cfg,
                           snapshot.path, codebook.path, root=root)
    codebook.metadata.update({"fingerprint": out["fingerprint"], "mode": out["mode"]})
    metrics.log_metric("n_items", out["n_items"])
    metrics.log_metric("n_new_items", out["n_new_items"])
    run_pages.write(run_pages.codebook_page(out, run_pages.codebook_stats(codebook.path)),
                    page.path, root, run_id)

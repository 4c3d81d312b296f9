"""Publish: store the version, commit it to the GitOps tree, make it the production model."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

from components import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def publish(config_yaml: str, root: str, run_id: str, stages_csv: str, env: str,
            storage_prefix: str, canary_percent: int, promote: bool, exported: bool,
            snapshot: Input[Dataset], codebook: Input[Artifact], candidate: Input[Model],
            gate_report: Input[Artifact], repository: Input[Model],
            published: Output[Artifact], page: Output[Markdown]) -> str:
    """Returns the published version ("" when 'publish' is left out of the stage list)."""
    import yaml

    from onerec import run_pages, stages
    from onerec.config import Config

    if "publish" not in stages.parse_stages(stages_csv):
        stages.run_stage("publish", root, run_id, lambda: {"skipped": "not in the stage list"})
        run_pages.write(run_pages.skipped("publish", "not in the stage list"), page.path, root,
                        run_id)
        return ""
    cfg = Config.from_dict(yaml.safe_load(config_yaml))
    out = stages.run_stage(
        "publish", root, run_id, stages.publish, cfg, snapshot.path, candidate.path,
        codebook.path, gate_report.path, published.path, root=root,
        export_dir=repository.path if exported else None, env=env,
        storage_prefix=storage_prefix, canary_percent=canary_percent, promote=promote)
    published.metadata.update({"version": out["version"], "storage_uri": out["storage_uri"]})
    run_pages.write(run_pages.publish_page(out), page.path, root, run_id)
    return out["version"]

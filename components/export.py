"""Export: the whole generation as one ONNX graph in a Triton model repository."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from components import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def export_model(config_yaml: str, root: str, run_id: str, stages_csv: str,
                 candidate: Input[Model], codebook: Input[Artifact], reward_model: Input[Model],
                 repository: Output[Model]) -> bool:
    """Returns whether a repository was written ('export' in the stage list). The version
    carries the cycle's reward model (serving's RM selection) when the reward stage trained one
    and serve.rm_selection is on."""
    from pathlib import Path

    import yaml

    from onerec import stages
    from onerec.config import Config

    if "export" not in stages.parse_stages(stages_csv):
        stages.run_stage("export", root, run_id, lambda: {"skipped": "not in the stage list"})
        Path(repository.path).mkdir(parents=True, exist_ok=True)
        return False
    cfg = Config.from_dict(yaml.safe_load(config_yaml))
    out = stages.run_stage("export", root, run_id, stages.export, cfg, candidate.path,
                           codebook.path, repository.path, reward_dir=reward_model.path)
    repository.metadata.update({"files": out["files"],
                                "rm_selection": out["reward_model"]["carried"]})
    return True

"""Write base/trainjob/trainjobs.yaml from components/launch/trainjob.py: the pretrain and align
TrainJobs (Kubeflow Trainer v2) of a pipeline run, so the manifests a person applies by hand are
the jobs the pipeline launches (tests/test_k8s.py checks they agree).

    PYTHONPATH=. python k8s/base/trainjob/render.py

The jobs are `components.launch.training.preview_job` for run id `manual` on ROOT=/mnt/onerec:
each reads its inputs where the pipeline stages them (ROOT/jobs/<job>/in/<input>) and writes
ROOT/jobs/<job>/out. The Config travels as the ConfigMaps next to them (`preset: base`), so the
file holds no fingerprint that would go stale when a Config default changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from components.launch.jobs import DATA_MOUNT, JobSpec, without_fingerprints, write_manifests
from components.launch.training import StepOptions, preview_job
from onerec.config import Config

HERE = Path(__file__).resolve().parent
STEPS = ("pretrain", "align")
RUN_ID = "manual"


def render(spec: JobSpec | None = None) -> list[dict[str, Any]]:
    spec = spec or JobSpec(namespace="onerec", image="onerec-train")
    cfg = Config.from_preset("base")
    return [without_fingerprints(preview_job(step, cfg, StepOptions(root=DATA_MOUNT), RUN_ID,
                                             spec, launcher="trainjob")) for step in STEPS]


def main() -> None:
    write_manifests(HERE / "trainjobs.yaml", "components/launch/trainjob.py",
                    "A manual run: kubectl create -k k8s/base/trainjob (or overlays/dev/trainjob).\n"
                    "# The pipeline launches the same jobs through the Kubeflow Trainer SDK.",
                    render())


if __name__ == "__main__":
    main()

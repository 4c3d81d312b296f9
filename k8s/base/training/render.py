"""Write base/training/pytorchjob.yaml from components/launch/pytorchjob.py (Training Operator
v1), so the manifest a person applies by hand is the job the pipeline launches with
`launcher=pytorchjob` (tests/test_k8s.py checks they agree).

    PYTHONPATH=. python k8s/base/training/render.py

The Config travels as the ConfigMap next to it (`preset: base`: the preset's full settings are
resolved by `Config.from_file` inside the job), so the file holds no fingerprint that would go
stale when a Config default changes; the pipeline's jobs carry theirs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from components.launch.jobs import JobSpec, to_manifest, without_fingerprints, write_manifests
from components.launch.pytorchjob import build_pytorchjob
from onerec.config import Config

HERE = Path(__file__).resolve().parent


def render(spec: JobSpec | None = None) -> dict[str, Any]:
    spec = spec or JobSpec(namespace="onerec", image="onerec-train")
    return without_fingerprints(to_manifest(build_pytorchjob(Config.from_preset("base"), spec)))


def main() -> None:
    write_manifests(HERE / "pytorchjob.yaml", "components/launch/pytorchjob.py",
                    "A manual pretraining run: kubectl create -k k8s/base/training (or an overlay's\n"
                    "# training/). The pipeline launches the same job through the Training Operator "
                    "SDK.", [render()])


if __name__ == "__main__":
    main()

"""One Kubeflow Pipelines component per stage, each thin over `onerec.stages`.

Lightweight Python components: KFP ships each function's source into the step, so a body
imports what it uses; the image (`onerec-train`, `pipelines.jobs.DEFAULT_IMAGE`) has the
project installed, hence `install_kfp_package=False` (nothing is pip-installed at run time, and
`kfp.local` runs the same functions in this virtual environment). Every component records what
it did in ROOT/runs/<run_id>/ (`onerec.stages.run_stage`), which the cycle report reads.
"""

from pipelines.jobs import DEFAULT_IMAGE

IMAGE = DEFAULT_IMAGE

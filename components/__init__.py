"""One Kubeflow Pipelines component per stage, each thin over `onerec.stages`.

Lightweight Python components: KFP ships each function's source into the step, so a body
imports what it uses; the image (`onerec-train`, `DEFAULT_IMAGE`) has the project installed,
hence `install_kfp_package=False` (nothing is pip-installed at run time, and `kfp.local` runs
the same functions in this virtual environment). Every component records what it did in
ROOT/runs/<run_id>/ (`onerec.stages.run_stage`), which the cycle report reads.

A component imports only the core (`onerec`, never `onerec.app`) and kfp. The training steps
(pretrain, align) may leave the component's pod as a TrainJob or PyTorchJob: that launcher is
`components.launch`, the one part of this package that uses the Kubernetes and Kubeflow SDKs
(docs/architecture.md; the import-linter contracts in pyproject.toml hold both rules).
"""

# the image of every component and training job: k8s/base/kustomization.yaml `images:` and
# `make images` build and tag the same one (tests/test_k8s.py keeps the three equal)
DEFAULT_IMAGE = "ghcr.io/onerec-k8s/onerec-train:0.1.0"

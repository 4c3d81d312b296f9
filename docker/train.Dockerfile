# syntax=docker/dockerfile:1
# onerec-train: the pipeline's components and the training pods (TrainJob or PyTorchJob) on GPU
# nodes; torch brings the `torchrun` a TrainJob starts the step with.
# CUDA base pinned by tag; torch pinned to 2.13.0 (PyPI's Linux x86_64 wheel is the CUDA build,
# its CUDA libraries come as nvidia-* wheels, so the base only has to match the node driver);
# everything else pinned by constraints.txt, the same set `make` installs on a laptop.
#   make images   (builds it as $(IMAGE_REGISTRY)/onerec-train:$(IMAGE_TAG))
ARG CUDA_BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
FROM ${CUDA_BASE}

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv git ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv

ARG TORCH_SPEC=torch==2.13.0
RUN pip install "${TORCH_SPEC}"

WORKDIR /app
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY onerec onerec
COPY pipelines pipelines
# components/ is installed too: the training pods import its launcher (components.launch)
COPY components components
RUN pip install -c constraints.txt ".[tokenizer,train,features,pipeline]"
# the Feast definitions are read as files by the pipeline steps
COPY feature_repo feature_repo

# non-root, read-only root filesystem in the cluster: caches go to the /tmp volume
USER 10001:10001
ENV HOME=/tmp
ENTRYPOINT []
CMD ["onerec", "--help"]

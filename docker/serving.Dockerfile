# syntax=docker/dockerfile:1
# onerec-serving: the InferenceService transformer (serving.server with --predictor_host: Feast
# lookup, id mapping, v2 calls to Triton). CPU only: the CPU build of torch 2.13.0 from PyTorch's
# CPU wheel index (the onerec package depends on torch; the transformer never runs it on a GPU),
# then the serving and features extras pinned by constraints.txt.
ARG PYTHON_BASE=python:3.11.14-slim-bookworm
FROM ${PYTHON_BASE}

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "${TORCH_INDEX}" "${TORCH_SPEC}"

WORKDIR /app
COPY pyproject.toml constraints.txt README.md LICENSE ./
# serving/ imports only the core (docs/architecture.md): no pipelines/ or components/ here
COPY onerec onerec
RUN pip install -c constraints.txt ".[serving,features]"
COPY serving serving

USER 10001:10001
ENV HOME=/tmp
EXPOSE 8080 8081
ENTRYPOINT []
CMD ["python", "-m", "serving.server", "--help"]

# syntax=docker/dockerfile:1
# onerec-feast: the Feast feature server (k8s/base/feast/). Feast alone, no onerec (the
# definitions import only feast), with the production feature_store.yaml (Redis online store,
# registry and offline parquet under /feast/data, the volume the Deployment mounts).
ARG PYTHON_BASE=python:3.11.14-slim-bookworm
FROM ${PYTHON_BASE}

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1
COPY constraints.txt /tmp/constraints.txt
# redis/hiredis come from feast's `redis` extra, pinned in constraints.txt (redis 7.4.1: feast 0.67
# wants <8) like the project's `features` extra, so this image and the tests run the same client
RUN pip install -c /tmp/constraints.txt "feast[redis]==0.67.0"

WORKDIR /feast
COPY feature_repo/definitions.py definitions.py
COPY feature_repo/production/feature_store.yaml feature_store.yaml

USER 10001:10001
ENV HOME=/tmp
EXPOSE 6566 6570
CMD ["feast", "serve", "--host", "0.0.0.0", "--port", "6566"]

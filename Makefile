# Two commands for a fresh machine: `make demo` and `make test`. Each creates .venv first.
# torch==2.13.0 (the CPU build) is installed before the project so pip never resolves an
# unpinned torch (which would pull a multi-GB CUDA build).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.onerec-installed
TORCH  ?= torch==2.13.0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test test-slow lint format venv clean images

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -c constraints.txt -e '.[all,dev]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/onerec demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -m "not slow" --durations=15

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check onerec tests bench

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format onerec tests bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache runs

# The cluster's images (docker/), one registry and tag for all: the same as the `images:` list of
# k8s/base/kustomization.yaml. `make images IMAGE_REGISTRY=registry.example.com/me IMAGE_TAG=0.2.0`
IMAGE_REGISTRY ?= ghcr.io/onerec-k8s
IMAGE_TAG      ?= 0.1.0
IMAGES         := onerec-train onerec-serving onerec-feast
DOCKER         ?= docker

images:
	@command -v $(DOCKER) >/dev/null 2>&1 || { echo "error: '$(DOCKER)' not found: make images needs a Docker (or compatible, DOCKER=podman) client and engine" >&2; exit 1; }
	@$(DOCKER) info >/dev/null 2>&1 || { echo "error: '$(DOCKER)' is installed but its engine is not reachable (is the daemon running?)" >&2; exit 1; }
	$(DOCKER) build -f docker/train.Dockerfile -t $(IMAGE_REGISTRY)/onerec-train:$(IMAGE_TAG) .
	$(DOCKER) build -f docker/serving.Dockerfile -t $(IMAGE_REGISTRY)/onerec-serving:$(IMAGE_TAG) .
	$(DOCKER) build -f docker/feast.Dockerfile -t $(IMAGE_REGISTRY)/onerec-feast:$(IMAGE_TAG) .
	@echo "built: $(foreach i,$(IMAGES),$(IMAGE_REGISTRY)/$(i):$(IMAGE_TAG))"
	@echo "push them, and keep k8s/base/kustomization.yaml images: on the same registry and tag"

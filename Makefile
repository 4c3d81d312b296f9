# Two commands for a fresh machine: `make demo` and `make test`. Each creates .venv first.
# torch==2.13.0 (the CPU build) is installed before the project so pip never resolves an
# unpinned torch (which would pull a multi-GB CUDA build).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.onerec-installed
TORCH  ?= torch==2.13.0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test test-slow lint format venv clean images security audit

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -c constraints.txt -e '.[all,dev]'
	@touch $(STAMP)

venv: $(STAMP)

# The scanners' own venv: checkov's pins conflict with the project's (constraints-tools.txt), so
# checkov and pip-audit never enter .venv. bandit has no conflicts and comes with the dev extra.
TOOLS       := .venv-tools
TOOLS_STAMP := $(TOOLS)/.onerec-tools-installed
SECURITY    := build/security
BANDIT_SRC  := onerec serving pipelines components bench feature_repo k8s

$(TOOLS_STAMP): constraints-tools.txt
	@test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install -q -c constraints-tools.txt checkov pip-audit
	@touch $(TOOLS_STAMP)

demo: $(STAMP)
	$(VENV)/bin/onerec demo

# two pytest-xdist workers (one intra-op thread each, tests/conftest.py); --dist loadfile keeps a
# file's module fixtures (a demo run, a pipeline cycle) in one worker. TEST_WORKERS=0: in-process.
TEST_WORKERS ?= 2
# lint-imports: the layer contracts of pyproject.toml [tool.importlinter] (docs/architecture.md)
test: $(STAMP) security
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-logo
	$(PY) -m pytest -q -m "not slow" --durations=15 -n $(TEST_WORKERS) --dist loadfile

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check onerec tests bench

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format onerec tests bench

# docs/security.md. Each scanner exits non-zero on a finding, which stops make (and `make test`):
# bandit on the code; checkov on every rendered kustomize tree and the pods of its custom
# resources (k8s/render_all.py; skipped like tests/test_k8s.py where kubectl is missing);
# detect-secrets on every file git would commit (data/ is the public dataset).
security: $(STAMP) $(TOOLS_STAMP)
	$(VENV)/bin/bandit -q -c pyproject.toml -r $(BANDIT_SRC)
	@if command -v kubectl >/dev/null 2>&1; then \
	  rm -rf $(SECURITY)/k8s && $(TOOLS)/bin/python k8s/render_all.py $(SECURITY)/k8s && \
	  echo "checkov: $(SECURITY)/k8s" && $(TOOLS)/bin/checkov --config-file .checkov.yaml -d $(SECURITY)/k8s; \
	else echo "checkov: skipped (kubectl not installed)"; fi
	@files=$$(git ls-files -co --exclude-standard -- ':!data/') || { echo "detect-secrets needs git" >&2; exit 1; }; \
	  echo "detect-secrets: $$(echo "$$files" | wc -l) files"; \
	  $(TOOLS)/bin/detect-secrets-hook --exclude-lines 'automountServiceAccountToken: (true|false)$$' $$files

# Known vulnerabilities in the pinned packages (network: PyPI's JSON API). Not in `make test`.
# --strict: a package it cannot look up fails the audit instead of passing unchecked.
AUDIT_SERVICE ?= pypi
audit: $(TOOLS_STAMP)
	@mkdir -p $(SECURITY) && echo '$(TORCH)' > $(SECURITY)/torch.txt
	$(TOOLS)/bin/pip-audit --vulnerability-service $(AUDIT_SERVICE) --strict --no-deps --disable-pip \
	  -r constraints.txt -r $(SECURITY)/torch.txt
	$(TOOLS)/bin/pip-audit --vulnerability-service $(AUDIT_SERVICE) --strict --no-deps --disable-pip \
	  -r constraints-tools.txt

clean:
	rm -rf $(VENV) $(TOOLS) $(SECURITY) .pytest_cache .ruff_cache runs

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

# stagehub: `make run` starts the local stack on moto; `make test` runs every test. Both set themselves up.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MODELS_DIR ?= .cache/models
MODELS_STAMP := $(MODELS_DIR)/.built
CDK_CLI := .tools/node_modules/.bin/cdk
# The CDK CLI, pinned (it must understand the cloud assembly aws-cdk-lib in requirements.txt writes).
CDK_CLI_VERSION := 2.1148.1
PORT ?= 8000
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20

.PHONY: setup models browser run test test-fast lint bench synth deploy diff clean worker-lock

setup: $(STAMP)

# torch first: `torch==2.13.0` takes the local CPU wheel; anything else pulls a multi-GB CUDA build.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

models: $(MODELS_STAMP)

$(MODELS_STAMP): $(STAMP) gpu_worker/tiny_models.py
	$(PY) -m gpu_worker.tiny_models --out $(MODELS_DIR)
	touch $(MODELS_STAMP)

run: setup models
	PORT=$(PORT) $(PY) -m local.stack --models-dir $(MODELS_DIR)

# The browser tests (tests/browser) drive Debian's chromium through its chromedriver; installed when missing.
BROWSER_PACKAGES := chromium chromium-driver
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	  else echo "the browser tests need: sudo apt-get install -y $(BROWSER_PACKAGES)" >&2; exit 1; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(BROWSER_PACKAGES); \
	fi

test: setup models browser
	STAGEHUB_MODELS_DIR=$(MODELS_DIR) STAGEHUB_REQUIRE_BROWSER=1 $(PY) -m pytest -q -p no:cacheprovider

test-fast: setup models
	STAGEHUB_MODELS_DIR=$(MODELS_DIR) $(PY) -m pytest -q -m "not slow"

# Every package, the tests and the benchmarks included; CI (.ci/run) runs it after the tests.
MYPY_PATHS := shared functions gpu_worker local infra stagehub_cli tests bench app.py

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy $(MYPY_PATHS)

bench: setup models
	$(PY) -m bench --models-dir $(MODELS_DIR)
	$(PY) -m bench.cold_start
	$(PY) -m bench.cost_model

$(CDK_CLI):
	npm install --silent --no-audit --no-fund --prefix .tools aws-cdk@$(CDK_CLI_VERSION)

# Context for synth/diff/deploy, e.g. make deploy CDK_ARGS="-c stage=prod -c account=123456789012 -c region=eu-west-1"
CDK_ARGS ?=

synth: setup $(CDK_CLI)
	rm -f cdk.out/*.template.json
	PATH=$(abspath $(VENV)/bin):$$PATH $(CDK_CLI) synth --quiet $(CDK_ARGS)
	$(VENV)/bin/cfn-lint cdk.out/*.template.json

diff: setup $(CDK_CLI)
	PATH=$(abspath $(VENV)/bin):$$PATH $(CDK_CLI) diff $(CDK_ARGS)

deploy: setup $(CDK_CLI)
	PATH=$(abspath $(VENV)/bin):$$PATH $(CDK_CLI) deploy --all $(CDK_ARGS)

# The GPU worker's hash-locked closure for the AMI (infra/gpu_fleet/worker.lock), after a change of its pins.
worker-lock: setup
	$(PY) -m infra.gpu_fleet.bundle

clean:
	rm -rf cdk.out .tools $(MODELS_DIR) .pytest_cache

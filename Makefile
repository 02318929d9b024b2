# stagehub: `make run` starts the local stack on moto; `make test` runs every test. Both set themselves up.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MODELS_DIR ?= .cache/models
MODELS_STAMP := $(MODELS_DIR)/.built
CDK_CLI := .tools/node_modules/.bin/cdk
PORT ?= 8000
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20

.PHONY: setup models run test test-fast lint bench synth deploy diff clean

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

test: setup models
	STAGEHUB_MODELS_DIR=$(MODELS_DIR) $(PY) -m pytest -q -p no:cacheprovider

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
	npm install --silent --no-audit --no-fund --prefix .tools aws-cdk@2

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

clean:
	rm -rf cdk.out .tools $(MODELS_DIR) .pytest_cache

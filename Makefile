# The README's commands. Every target sets up what it needs in .venv first (a fresh machine has nothing).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# where `make run` serves: `make run PORT=8100 HOST=0.0.0.0`
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: help install install-test install-bench system-test-deps mlserver-venv run chat index test serve-model bench soak clean

help:
	@echo "make run [PORT=8000 HOST=127.0.0.1] | chat | index | test | serve-model | bench | clean"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch first, pinned: the CPU wheel (a bare `torch` requirement would pull a CUDA build)
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[serve]'
	touch $@

# the KServe SDK without its dependencies: tests/test_kserve.py validates the InferenceService against its
# generated models only; its model-server pins (psutil<6, protobuf<7, grpcio) would downgrade ours
$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install --quiet -e '.[test]'
	$(PIP) install --quiet --no-deps kserve==0.21.0
	touch $@

# the benchmark peer (LlamaIndex) and tools: the `bench` extra, never a runtime dependency
$(VENV)/.installed-bench: $(VENV)/.installed
	$(PIP) install --quiet -e '.[bench]'
	touch $@

# KServe's MLflow runtime (MLServer + mlserver-mlflow) in its own virtualenv, reused when present: MLServer pins
# fastapi<0.116 and protobuf<7, ours are newer. torch first (the CPU wheel), then the runtime and this project
# without its serve extra. tests/test_kserve.py serves an exported model with it.
MLSERVER_VENV ?= .venv-mlserver
$(MLSERVER_VENV)/.installed:
	$(PYTHON) -m venv $(MLSERVER_VENV)
	$(MLSERVER_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MLSERVER_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(MLSERVER_VENV)/bin/python -m pip install --quiet mlserver==1.7.1 mlserver-mlflow==1.7.1 .
	touch $@
mlserver-venv: $(MLSERVER_VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test
install-bench: $(VENV)/.installed-bench

index: install
	$(BIN)/llmops-chatbot build-index

# when the registry has no Production model: registers, evaluates and promotes one; then serves the API + chat page
run: index
	$(BIN)/llmops-chatbot serve --ensure-model --host $(HOST) --port $(PORT)

chat: index
	$(BIN)/llmops-chatbot chat

# system packages the tests run for real: Debian's chromium (the chat page's browser test; Playwright never
# downloads a browser), PostgreSQL server binaries (the feedback store's migrations and stores on a real
# server) and a Java runtime (local Spark for batch-score). Installed when missing and we are root (as on a fresh CI machine); otherwise the command is printed.
system-test-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v java >/dev/null 2>&1 || missing="$$missing default-jre-headless"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing for the tests (apt-get, ~1 min)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "the tests need:$$missing; run: sudo apt-get install -y --no-install-recommends$$missing" >&2; \
	  fi; \
	fi

test: install-test system-test-deps mlserver-venv
	$(BIN)/python -m pytest

# `mlflow models serve` execs a bare `uvicorn`: the venv's bin goes first on PATH
serve-model: install
	PATH=$(abspath $(BIN)):$$PATH MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db} \
	  $(BIN)/mlflow models serve -m models:/llmops-chatbot@production --env-manager local -p 5001 --host 127.0.0.1

# the benchmark suite (BENCHMARKS.md), ~10-13 min; BENCH_ARGS=--quick for a ~4 min smoke run
bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

# requirements.lock: the image's runtime + serve + postgres + auth dependencies, pinned with hashes (the Dockerfile
# installs it with --require-hashes). torch is left out (the Dockerfile takes the CPU wheel from the PyTorch index);
# its dependencies are resolved from that wheel. LOCK_TORCH_SOURCE="--find-links DIR" uses a local wheel instead.
LOCK_TORCH_SOURCE ?= --find-links https://download.pytorch.org/whl/cpu/torch/
.PHONY: lock
lock: $(BIN)/python
	$(PIP) install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra serve --extra postgres --extra auth --generate-hashes --upgrade \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 --index-url https://pypi.org/simple \
	  $(LOCK_TORCH_SOURCE) --no-emit-package torch --no-emit-package llmops-chatbot \
	  --custom-compile-command "make lock" -o requirements.lock
# 10 minutes of /chat (8 clients) and /feedback against a fresh server on 127.0.0.1, tracing on (BENCHMARKS.md);
# SOAK_ARGS="--duration 60" for a short one
soak: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/soak.py $(SOAK_ARGS)

clean:
	rm -rf .chatbot .pytest_cache build dist *.egg-info

# The README's commands. Every target sets up what it needs in .venv first (a fresh machine has nothing).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: help install install-test install-bench run chat index test serve-model bench soak clean

help:
	@echo "make run | chat | index | test | serve-model | bench | clean"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch first, pinned: the CPU wheel (a bare `torch` requirement would pull a CUDA build)
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[serve]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install --quiet -e '.[test]'
	touch $@

# the benchmark peer (LlamaIndex) and tools: the `bench` extra, never a runtime dependency
$(VENV)/.installed-bench: $(VENV)/.installed
	$(PIP) install --quiet -e '.[bench]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test
install-bench: $(VENV)/.installed-bench

index: install
	$(BIN)/llmops-chatbot build-index

# when the registry has no Production model: registers, evaluates and promotes one; then serves the API + chat page
run: index
	$(BIN)/llmops-chatbot serve --ensure-model --host 127.0.0.1 --port 8000

chat: index
	$(BIN)/llmops-chatbot chat

test: install-test
	$(BIN)/python -m pytest

# `mlflow models serve` execs a bare `uvicorn`: the venv's bin goes first on PATH
serve-model: install
	PATH=$(abspath $(BIN)):$$PATH MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db} \
	  $(BIN)/mlflow models serve -m models:/llmops-chatbot@production --env-manager local -p 5001 --host 127.0.0.1

# the benchmark suite (BENCHMARKS.md), ~10-13 min; BENCH_ARGS=--quick for a ~4 min smoke run
bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

# 10 minutes of /chat (8 clients) and /feedback against a fresh server on 127.0.0.1, tracing on (BENCHMARKS.md);
# SOAK_ARGS="--duration 60" for a short one
soak: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/soak.py $(SOAK_ARGS)

clean:
	rm -rf .chatbot .pytest_cache build dist *.egg-info

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
# `make serve-model` serves on 5001 unless PORT is given (`make serve-model PORT=5002 HOST=0.0.0.0`)
MODEL_PORT := $(if $(filter-out file default undefined,$(origin PORT)),$(PORT),5001)
# one install step, said before and timed after, with pip's own progress: $(call step,WHAT,COMMAND)
step = @echo "==> $(1)"; t0=$$(date +%s); $(2) && echo "==> done in $$(( $$(date +%s) - t0 )) s"

.PHONY: help install install-test install-bench system-test-deps mlserver-venv run chat index test test-fast serve-model bench soak clean

help:
	@echo "make run [PORT=8000 HOST=127.0.0.1] | chat | index | test | test-fast | serve-model [PORT=5001 HOST=127.0.0.1] | bench | clean"

$(BIN)/python:
	$(call step,creating the virtualenv $(VENV) with $(PYTHON),$(PYTHON) -m venv $(VENV))
	$(call step,upgrading pip,$(PIP) install --upgrade pip)

# torch first, pinned: the CPU wheel (a bare `torch` requirement would pull a CUDA build)
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(call step,installing torch 2.13.0 - the CPU wheel - ~25 s,$(PIP) install torch==2.13.0)
	$(call step,installing llmops-chatbot with its serve extra - ~70 s on a first run,$(PIP) install -e '.[serve]')
	@touch $@

# the KServe SDK without its dependencies: tests/lifecycle/test_kserve.py validates the InferenceService against its
# generated models only; its model-server pins (psutil<6, protobuf<7, grpcio) would downgrade ours
$(VENV)/.installed-test: $(VENV)/.installed
	$(call step,installing the test extra,$(PIP) install -e '.[test]')
	$(call step,installing the KServe SDK without its dependencies,$(PIP) install --no-deps kserve==0.21.0)
	@touch $@

# the benchmark peer (LlamaIndex) and tools: the `bench` extra, never a runtime dependency
$(VENV)/.installed-bench: $(VENV)/.installed
	$(call step,installing the bench extra - the LlamaIndex peer and tools,$(PIP) install -e '.[bench]')
	@touch $@

# KServe's MLflow runtime (MLServer + mlserver-mlflow) in its own virtualenv, reused when present: MLServer pins
# fastapi<0.116 and protobuf<7, ours are newer. torch first (the CPU wheel), then the runtime and this project
# without its serve extra. tests/lifecycle/test_kserve.py serves an exported model with it.
MLSERVER_VENV ?= .venv-mlserver
$(MLSERVER_VENV)/.installed: pyproject.toml
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

# the whole suite (what .ci/run calls)
test: install-test system-test-deps mlserver-venv
	$(BIN)/python -m pytest

# the unit layer: every test but the `slow` ones (servers started as subprocesses, browsers, PostgreSQL, Spark,
# MLServer, `mlflow run`, `mlflow models serve`, whole evaluations); a few minutes, no system packages needed
# on TEST_WORKERS processes (a module's tests stay in one); the embedder's ONNX export is kept between runs in
# $(VENV)/test-exports, keyed by the model's files and the export recipe
TEST_WORKERS ?= 2
test-fast: install-test
	LLMOPS_TEST_EXPORTS=$(abspath $(VENV))/test-exports $(BIN)/python -m pytest -m "not slow" -n $(TEST_WORKERS) --dist loadfile

# `mlflow models serve` execs a bare `uvicorn`: the venv's bin goes first on PATH
serve-model: install
	PATH=$(abspath $(BIN)):$$PATH MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db} \
	  $(BIN)/mlflow models serve -m models:/llmops-chatbot@production --env-manager local -p $(MODEL_PORT) --host $(HOST)

# the benchmark suite (BENCHMARKS.md), ~10-13 min; BENCH_ARGS=--quick for a ~4 min smoke run
bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

# requirements.lock: the image's runtime + serve + postgres + auth dependencies, pinned with hashes (the Dockerfile
# installs it with --require-hashes). torch is left out (the Dockerfile takes the CPU wheel from the PyTorch index);
# its dependencies are resolved from the CPU wheel. The package index is pip's own: PIP_INDEX_URL, else
# `pip config get global.index-url`, else uv's default (PyPI); so it works behind a mirror. The CPU torch wheel
# comes from LOCK_TORCH_SOURCE when given ("--find-links DIR"), else pip's find-links (PIP_FIND_LINKS or
# global.find-links), else uv's PyTorch CPU backend (--torch-backend cpu). `make -n lock` shows the command.
LOCK_TORCH_SOURCE ?=
.PHONY: lock
lock: $(BIN)/python
	$(PIP) install --quiet uv
	@index="$${PIP_INDEX_URL:-$$($(PIP) config get global.index-url 2>/dev/null)}"; \
	links="$${PIP_FIND_LINKS:-$$($(PIP) config get global.find-links 2>/dev/null)}"; \
	torch='$(LOCK_TORCH_SOURCE)'; \
	if [ -z "$$torch" ]; then for d in $$links; do torch="$$torch --find-links $$d"; done; fi; \
	torch="$${torch:---torch-backend cpu}"; \
	set -x; \
	$(BIN)/uv pip compile pyproject.toml --extra serve --extra postgres --extra auth --generate-hashes --upgrade \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 $${index:+--index-url "$$index"} \
	  $$torch --no-emit-package torch --no-emit-package llmops-chatbot \
	  --custom-compile-command "make lock" -o requirements.lock
# 10 minutes of /chat (8 clients) and /feedback against a fresh server on 127.0.0.1, tracing on (BENCHMARKS.md);
# SOAK_ARGS="--duration 60" for a short one
soak: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/soak.py $(SOAK_ARGS)

clean:
	rm -rf .chatbot .pytest_cache build dist *.egg-info

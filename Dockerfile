# syntax=docker/dockerfile:1
# The FastAPI wrapper (`uvicorn chatbot_model.server:app`). The model-serving image comes from
# `mlflow models build-docker` (see docs/deploy.md); this image can also run `mlflow models serve` and
# `mlflow server` (the k8s overlay does), so it carries mlflow, the package and the PostgreSQL driver.
#
#   docker build -t llmops-chatbot:0.1.0 .
#   docker run --rm -p 8000:8000 -e CHATBOT_SERVING_BACKEND=remote \
#       -e CHATBOT_SCORING_URL=http://host.docker.internal:8080 llmops-chatbot:0.1.0

# Base image: pin it by digest for reproducible builds. Get the tag's current digest (a registry is needed) with
#   docker buildx imagetools inspect python:3.11.13-slim-bookworm   (the "Digest:" line)
#   (or: crane digest python:3.11.13-slim-bookworm)
# and set PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:<digest> here (or --build-arg PYTHON_IMAGE=...).
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---- builder: the package wheel (the same command tests/test_deploy.py runs on the host) ----
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN pip install --no-cache-dir "setuptools==80.9.0" "wheel==0.45.1"
COPY pyproject.toml README.md ./
COPY chatbot_model/ chatbot_model/
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

# ---- runtime ----
FROM ${PYTHON_IMAGE} AS runtime
ARG TORCH_VERSION=2.13.0
ARG APP_UID=10001
# DL3064 is a false positive on TOKENIZERS_PARALLELISM ("TOKEN"): no secret is set here.
# hadolint ignore=DL3064
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    HOME=/home/app \
    CHATBOT_DOCS_PATH=/app/artifacts/docs.json \
    CHATBOT_HINT_PATH=/app/artifacts/adapter_hint.txt \
    CHATBOT_INDEX_DIR=/app/.chatbot/index \
    CHATBOT_FEEDBACK_DB_URL=sqlite:////app/.chatbot/feedback.db \
    MLFLOW_TRACKING_URI=sqlite:////app/.chatbot/mlflow.db

# Runtime dependencies exactly as locked, every file checked against its hash: requirements.lock (`make lock`)
# holds the runtime + `serve` + `postgres` (psycopg2) + `auth` (Flask-WTF, for the basic-auth tracking server)
# dependencies. torch, not in the lock, comes first from the PyTorch CPU index (PyPI's wheel pulls the CUDA
# libraries, GBs); its own dependencies are in the lock.
# --no-deps everywhere: nothing outside the lock is resolved; `pip check` proves the set is complete.
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir --no-deps --index-url https://download.pytorch.org/whl/cpu \
        "torch==${TORCH_VERSION}+cpu" \
    && pip install --no-cache-dir --no-deps --require-hashes -r /tmp/requirements.lock \
    && rm /tmp/requirements.lock

# The package wheel built above (its dependencies: the lock).
COPY --from=builder /wheels /wheels
# DL3013: the only unpinned requirement is the local wheel file built above (its deps are pinned by the lock).
# hadolint ignore=DL3013
RUN for whl in /wheels/llmops_chatbot-*.whl; do \
        pip install --no-cache-dir --no-deps "${whl}" || exit 1; \
    done \
    && rm -rf /wheels \
    && pip check

# Fixed non-root UID/GID (the k8s manifests run as the same ids).
RUN groupadd --system --gid "${APP_UID}" app \
    && useradd --system --uid "${APP_UID}" --gid app --home-dir /home/app --create-home \
        --shell /usr/sbin/nologin app \
    && mkdir -p /app/.chatbot \
    && chown app:app /app/.chatbot

WORKDIR /app
# The knowledge base and the default hint (read-only for the app user).
COPY artifacts/ /app/artifacts/

USER ${APP_UID}:${APP_UID}
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status == 200 else 1)"]

# limits: chatbot_model/cli/serve.py UVICORN_LIMITS (a test keeps them equal)
CMD ["uvicorn", "chatbot_model.server:app", "--host", "0.0.0.0", "--port", "8000", \
     "--limit-concurrency", "256", "--backlog", "512", "--timeout-keep-alive", "5", \
     "--h11-max-incomplete-event-size", "16384", "--timeout-graceful-shutdown", "20"]

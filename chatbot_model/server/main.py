"""Builds the FastAPI app. Nothing here runs at import but the app's construction (no settings, no MLflow).

    app = create_app()                                  # settings from the environment at start-up
    app = create_app(settings, backend="service")       # tests: a named backend from the registry
    app = create_app(settings, backend=ServiceBackend(settings, service))   # or an instance
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from chatbot_model.config import Settings, mask_url
from chatbot_model.server import retention
from chatbot_model.server.backends import Backend, build_backend
from chatbot_model.server.deps import settings_of
from chatbot_model.server.errors import install_error_handlers
from chatbot_model.server.middleware import (BodyLimitMiddleware, ConcurrencyLimitMiddleware, MetricsMiddleware,
                                             SecurityHeadersMiddleware)
from chatbot_model.server.rollout import RolloutCollector
from chatbot_model.server.routes import chat, conversations, docs, feedback, health, metrics, openai_compat, page
from chatbot_model.server.state import Metrics, TraceMemory
from chatbot_model.tracing import writer as tracing

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
ANSWERING_PATHS = ("/chat", "/v1/chat/completions")  # the requests that hold a worker thread while answering


def start_loading(backend: Backend) -> threading.Thread:
    """Load the backend in a worker thread: requests are served (503 on /chat) while it loads."""
    thread = threading.Thread(target=backend.load, name=f"load-{backend.name}", daemon=True)
    thread.start()
    return thread


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings = settings_of(app)
    state = app.state
    if not isinstance(state.backend, Backend):
        state.backend = build_backend(state.backend or settings.serving_backend, settings)
    log.info("serving backend=%s model_uri=%s tracking_uri=%s", state.backend.name, mask_url(settings.model_uri),
             mask_url(settings.tracking_uri))
    state.load_thread = start_loading(state.backend)
    state.retention_task = retention.start(app)  # prunes old turns and ratings every CHATBOT_RETENTION_INTERVAL_S
    try:
        yield
    finally:
        if state.retention_task is not None:
            state.retention_task.cancel()
        state.backend.close()
        await drain(state)


async def drain(state) -> None:
    """Shutdown, bounded by 10 s in all: stop the feedback worker (its pending ratings stay in the database),
    then write the queued traces; what is still queued at the deadline is counted as dropped."""

    from starlette.concurrency import run_in_threadpool

    deadline = time.monotonic() + tracing.DRAIN_TIMEOUT_S
    store = getattr(state, "feedback_store", None)
    if hasattr(store, "stop_background"):
        await run_in_threadpool(store.stop_background, 2.0)
    stats = await run_in_threadpool(tracing.shutdown, max(0.0, deadline - time.monotonic()))
    log.info("trace pipeline drained: %s", stats)


def create_app(settings: Settings | None = None, *, backend: Backend | str | None = None,
               feedback_store: Any | None = None, trace_memory_size: int = 10_000) -> FastAPI:
    # docs_url/redoc_url/openapi_url: served by routes/docs.py, which applies CHATBOT_PUBLIC_DOCS
    app = FastAPI(title="llmops-chatbot", version="0.1.0", lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None,
                  description="Retrieval-augmented chatbot: /chat answers with sources, /feedback rates an "
                              "answer by its trace id. Errors are JSON `{error, message}` with a stable code.")
    app.state.settings = settings
    app.state.backend = backend
    app.state.feedback_store = feedback_store
    app.state.traces = TraceMemory(trace_memory_size)
    app.state.metrics = Metrics()
    app.state.metrics.registry.register(RolloutCollector(lambda: app.state.backend))  # alias swaps, failures
    install_error_handlers(app)
    for module in (chat, conversations, feedback, health, metrics, page, docs):
        app.include_router(module.router)
    openai_compat.install(app)  # /v1: OpenAI-compatible, errors in OpenAI's shape
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimitMiddleware, limit=lambda: settings_of(app).max_body_bytes,
                       timeout=lambda: settings_of(app).body_read_timeout_s)
    app.add_middleware(ConcurrencyLimitMiddleware, limit=lambda: settings_of(app).max_concurrent_chats,
                       paths=ANSWERING_PATHS)  # before the body is read: a full server sheds load at once
    app.add_middleware(MetricsMiddleware, metrics=lambda: app.state.metrics)  # sees 413s too
    app.add_middleware(SecurityHeadersMiddleware)  # outermost: every response gets the headers
    return app

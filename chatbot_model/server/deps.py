"""Dependencies as `Annotated` aliases: tests swap them with `app.dependency_overrides`.

They are `async def` because none of them blocks (the feedback store is opened once, off the loop): FastAPI runs
a plain `def` dependency in a worker thread, a thread hop per dependency per request (profiled: ~24 per
/feedback call, most of its cost)."""

from __future__ import annotations

import secrets
import threading
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from chatbot_model.config import Settings, load_settings
from chatbot_model.server.backends import Backend
from chatbot_model.server.errors import FeedbackUnavailable, NotServed, Unauthorized
from chatbot_model.server.state import Metrics, TraceMemory

_opening = threading.Lock()
_bearer = HTTPBearer(auto_error=False, description="CHATBOT_API_KEY, when the server sets one")


def settings_of(app) -> Settings:
    """The app's settings: given to `create_app`, else loaded (and validated) from the environment once."""
    settings = getattr(app.state, "settings", None)
    if settings is None:
        settings = app.state.settings = load_settings()
    return settings


async def app_settings(request: Request) -> Settings:
    return settings_of(request.app)


async def backend(request: Request) -> Backend:
    return request.app.state.backend


async def trace_memory(request: Request) -> TraceMemory:
    return request.app.state.traces


async def metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def _open_feedback_store(state, settings: Settings) -> Any:
    with _opening:  # concurrent first requests open one store
        return _open_once(state, settings)


def _open_once(state, settings: Settings) -> Any:
    if getattr(state, "feedback_store", None) is None:
        try:
            from chatbot_model.store.feedback import FeedbackStore  # deferred: loads sqlalchemy
        except ImportError as exc:
            raise FeedbackUnavailable(f"the feedback store is not available ({exc})") from None
        try:
            state.feedback_store = FeedbackStore(settings.feedback_db_url, settings=settings)
        except Exception as exc:  # noqa: BLE001 - a bad URL or an unreachable database
            raise FeedbackUnavailable(f"cannot open the feedback store ({type(exc).__name__}: {exc}); "
                                      "check CHATBOT_FEEDBACK_DB_URL") from None
    return state.feedback_store


async def feedback_store(request: Request) -> Any:
    """The durable feedback store (`chatbot_model.store.feedback.FeedbackStore`), opened on first use (in a worker
    thread: it may migrate the database)."""
    state = request.app.state
    store = getattr(state, "feedback_store", None)
    if store is None:
        store = await run_in_threadpool(_open_feedback_store, state, settings_of(request.app))
    return store


def check_api_key(settings: Settings, credentials: HTTPAuthorizationCredentials | None) -> None:
    """When CHATBOT_API_KEY is set, the request must carry it as `Authorization: Bearer KEY`."""
    key = settings.api_key
    if key is None or not key.get_secret_value():
        return
    if credentials is None:
        raise Unauthorized("this server needs an API key: send `Authorization: Bearer $CHATBOT_API_KEY`")
    if not secrets.compare_digest(credentials.credentials.encode(), key.get_secret_value().encode()):
        raise Unauthorized("wrong API key; send the value of CHATBOT_API_KEY as a bearer token")


async def require_api_key(request: Request,
                          credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """When CHATBOT_API_KEY is set, the request must carry it as `Authorization: Bearer KEY`."""
    check_api_key(settings_of(request.app), credentials)


def has_api_key(settings: Settings) -> bool:
    return bool(settings.api_key and settings.api_key.get_secret_value())


def is_authorized(settings: Settings, authorization: str | None) -> bool:
    """Whether an `Authorization` header carries the API key (True when the server has none)."""
    if not has_api_key(settings):
        return True
    scheme, _, credential = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(
        credential.strip().encode(), settings.api_key.get_secret_value().encode())


async def metrics_access(request: Request,
                         credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """/metrics needs the API key whenever one is set (Prometheus: `authorization` in the scrape config), unless
    CHATBOT_PROTECT_METRICS=false opens it."""
    settings = settings_of(request.app)
    protect = settings.protect_metrics if settings.protect_metrics is not None else has_api_key(settings)
    if protect:
        check_api_key(settings, credentials)


async def docs_access(request: Request,
                      credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """/docs, /redoc and /openapi.json: behind the API key whenever one is set, unless CHATBOT_PUBLIC_DOCS=true;
    CHATBOT_PUBLIC_DOCS=false without a key: off."""
    settings = settings_of(request.app)
    public = settings.public_docs if settings.public_docs is not None else not has_api_key(settings)
    if public:
        return
    if not has_api_key(settings):
        raise NotServed("the API docs are off (CHATBOT_PUBLIC_DOCS=false and no CHATBOT_API_KEY is set)")
    check_api_key(settings, credentials)


SettingsDep = Annotated[Settings, Depends(app_settings)]
BackendDep = Annotated[Backend, Depends(backend)]
TracesDep = Annotated[TraceMemory, Depends(trace_memory)]
MetricsDep = Annotated[Metrics, Depends(metrics)]
FeedbackStoreDep = Annotated[Any, Depends(feedback_store)]
Authorized = Annotated[None, Depends(require_api_key)]
MetricsAccess = Annotated[None, Depends(metrics_access)]
DocsAccess = Annotated[None, Depends(docs_access)]

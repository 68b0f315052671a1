"""GET /health (liveness: 200 while the process is useful, 503 `unhealthy` after CHATBOT_UNHEALTHY_AFTER_S
without a model) and GET /ready (200 only when /chat can answer; the 503 says why and when the next load
attempt is).

Neither waits on the worker threads /chat uses: readiness is read on the event loop (`Backend.ready_now`), and
/health's details (which may read the adaptation state) run on a lane of their own (`PROBE_THREADS`), so both
answer while every answer in progress hangs on a provider. With CHATBOT_API_KEY set, /health without the key
says only its status and the version."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from chatbot_model.config import mask_url
from chatbot_model.server.deps import BackendDep, SettingsDep, has_api_key, is_authorized
from chatbot_model.server.errors import error_response
from chatbot_model.server.schemas import HealthResponse, HealthSummary, NotReadyResponse, ReadyResponse

router = APIRouter(tags=["health"])
PROBE_THREADS = 2  # /health's details: a lane of their own, never queued behind /chat's 40 worker threads


def _probe_limiter(app) -> anyio.CapacityLimiter:
    limiter = getattr(app.state, "probe_limiter", None)
    if limiter is None:  # made on the app's event loop, once
        limiter = app.state.probe_limiter = anyio.CapacityLimiter(PROBE_THREADS)
    return limiter


async def _readiness(backend) -> JSONResponse | dict:
    if backend.ready_now():
        return {"status": "ready"}
    return error_response(503, "model_not_loaded", backend.not_ready_reason(), load_error=backend.load_error,
                          load_attempts=backend.load_attempts, next_load_attempt_in_s=backend.next_attempt_in())


@router.get("/health", response_model=HealthResponse | HealthSummary | ReadyResponse,
            responses={503: {"model": HealthResponse | HealthSummary | NotReadyResponse}})
async def health(request: Request, backend: BackendDep, settings: SettingsDep, ready: bool = False):
    """Liveness, with the model URI and version, guardrail and providers: 200 `ok` while the process runs and
    is useful; 503 `unhealthy` once it has been without a model for CHATBOT_UNHEALTHY_AFTER_S (a liveness probe
    then restarts it). `?ready=1` answers like /ready instead. With CHATBOT_API_KEY set and not sent: only
    `status` and `version`."""
    if ready:
        return await _readiness(backend)
    if has_api_key(settings) and not is_authorized(settings, request.headers.get("authorization")):
        healthy = backend.healthy()
        return JSONResponse({"status": "ok" if healthy else "unhealthy", "version": request.app.version},
                            status_code=200 if healthy else 503)
    info = await anyio.to_thread.run_sync(backend.info, limiter=_probe_limiter(request.app))
    info.setdefault("model_uri", mask_url(settings.model_uri) if backend.name == "in-process" else None)
    key = settings.api_key
    body = {"status": "ok", **info, "api_key_required": bool(key and key.get_secret_value())}
    if backend.healthy():
        return body
    body["status"] = "unhealthy"
    body["reason"] = (f"no model for {backend.without_model_for():.0f}s (CHATBOT_UNHEALTHY_AFTER_S="
                      f"{settings.unhealthy_after_s:g}): {backend.not_ready_reason()}")
    return JSONResponse(body, status_code=503)


@router.get("/ready", response_model=ReadyResponse, responses={503: {"model": NotReadyResponse}})
async def ready(backend: BackendDep):
    """Readiness (Kubernetes): 200 only when the model can answer, else 503 `model_not_loaded` with the reason,
    the last load error and when the next load attempt is."""
    return await _readiness(backend)

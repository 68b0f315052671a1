"""GET /health (liveness: 200 while the process is useful, 503 `unhealthy` after CHATBOT_UNHEALTHY_AFTER_S
without a model) and GET /ready (200 only when /chat can answer; the 503 says why and when the next load
attempt is)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from chatbot_model.config import mask_url
from chatbot_model.server.deps import BackendDep, SettingsDep
from chatbot_model.server.errors import error_response
from chatbot_model.server.schemas import HealthResponse, NotReadyResponse, ReadyResponse

router = APIRouter(tags=["health"])


async def _readiness(backend) -> JSONResponse | dict:
    if await run_in_threadpool(backend.ready):
        return {"status": "ready"}
    return error_response(503, "model_not_loaded", backend.not_ready_reason(), load_error=backend.load_error,
                          load_attempts=backend.load_attempts, next_load_attempt_in_s=backend.next_attempt_in())


@router.get("/health", response_model=HealthResponse | ReadyResponse,
            responses={503: {"model": HealthResponse | NotReadyResponse}})
async def health(backend: BackendDep, settings: SettingsDep, ready: bool = False):
    """Liveness, with the model URI and version, guardrail and providers: 200 `ok` while the process runs and
    is useful; 503 `unhealthy` once it has been without a model for CHATBOT_UNHEALTHY_AFTER_S (a liveness probe
    then restarts it). `?ready=1` answers like /ready instead."""
    if ready:
        return await _readiness(backend)
    info = await run_in_threadpool(backend.info)
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

"""GET /health (liveness and what is loaded; always 200) and GET /ready (200 only when /chat can answer)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from chatbot_model.server.deps import BackendDep, SettingsDep
from chatbot_model.server.errors import error_response
from chatbot_model.server.schemas import HealthResponse, ReadyResponse, responses

router = APIRouter(tags=["health"])


async def _readiness(backend) -> JSONResponse | dict:
    if await run_in_threadpool(backend.ready):
        return {"status": "ready"}
    if backend.loading:
        return error_response(503, "model_not_loaded", "the model is still loading")
    return error_response(503, "model_not_loaded", f"the backend cannot answer: {backend.load_error or 'not ready'}")


@router.get("/health", response_model=HealthResponse | ReadyResponse, responses=responses(503))
async def health(backend: BackendDep, settings: SettingsDep, ready: bool = False):
    """Liveness: 200 while the process runs, with the model URI and version, guardrail and providers.
    `?ready=1` answers like /ready instead."""
    if ready:
        return await _readiness(backend)
    info = await run_in_threadpool(backend.info)
    info.setdefault("model_uri", settings.model_uri if backend.name == "in-process" else None)
    key = settings.api_key
    return {"status": "ok", **info, "api_key_required": bool(key and key.get_secret_value())}


@router.get("/ready", response_model=ReadyResponse, responses=responses(503))
async def ready(backend: BackendDep):
    """Readiness (Kubernetes): 200 only when the model can answer, else 503 `model_not_loaded`."""
    return await _readiness(backend)

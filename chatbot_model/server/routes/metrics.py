"""GET /metrics: Prometheus exposition of the app's own registry."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client.exposition import choose_encoder
from starlette.concurrency import run_in_threadpool

from chatbot_model.server.deps import BackendDep, MetricsDep

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, metrics: MetricsDep, backend: BackendDep) -> Response:
    """Request counts and latency by endpoint and status; route, provider, blocked and fallback counts."""
    metrics.model_ready.set(1 if await run_in_threadpool(backend.ready) else 0)
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(metrics.registry), media_type=content_type)

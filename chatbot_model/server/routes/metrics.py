"""GET /metrics: Prometheus exposition of the app's own registry."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client.exposition import choose_encoder

from chatbot_model.server.deps import BackendDep, MetricsAccess, MetricsDep
from chatbot_model.server.schemas import responses

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, responses=responses(401))
async def metrics(request: Request, metrics: MetricsDep, backend: BackendDep, _access: MetricsAccess) -> Response:
    """Request counts and latency by endpoint, method and status; route, provider, blocked and fallback counts.
    Needs the API key whenever CHATBOT_API_KEY is set (CHATBOT_PROTECT_METRICS=false opens it). Answers on the
    event loop, never waiting on the worker threads /chat uses."""
    metrics.model_ready.set(1 if backend.ready_now() else 0)
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(metrics.registry), media_type=content_type)

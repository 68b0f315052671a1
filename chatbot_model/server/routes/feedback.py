"""POST /feedback: a thumbs up/down on a trace this server (or MLflow) knows, recorded durably."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from chatbot_model.config import Settings
from chatbot_model.errors import ChatbotError
from chatbot_model.server.deps import Authorized, FeedbackStoreDep, MetricsDep, SettingsDep, TracesDep
from chatbot_model.server.errors import FeedbackUnavailable, TraceNotFound
from chatbot_model.server.schemas import FeedbackRequest, FeedbackResponse, responses
from chatbot_model.server.state import ServedTrace

log = logging.getLogger(__name__)
router = APIRouter(tags=["feedback"])


def lookup_trace(trace_id: str, settings: Settings) -> ServedTrace | None:
    """A trace another process served, from the MLflow tracking store; None when it does not exist."""
    try:
        from mlflow import MlflowClient

        trace = MlflowClient(tracking_uri=settings.tracking_uri).get_trace(trace_id)
    except Exception:  # noqa: BLE001 - not found, malformed id or store error: unknown to us
        return None
    if trace is None:
        return None
    tags = dict(getattr(trace.info, "tags", None) or {})
    return ServedTrace(trace_id=trace_id, route=tags.get("route"), provider=tags.get("provider"),
                       model=tags.get("model"))


@router.post("/feedback", response_model=FeedbackResponse, responses=responses(400, 401, 404, 413, 422, 503))
async def feedback(body: FeedbackRequest, settings: SettingsDep, traces: TracesDep, store: FeedbackStoreDep,
                   metrics: MetricsDep, _auth: Authorized) -> FeedbackResponse:
    """Rate an answer by its `trace_id` (from /chat): `up` or `down`, with an optional comment."""
    served = traces.get(body.trace_id) or await run_in_threadpool(lookup_trace, body.trace_id, settings)
    if served is None:
        raise TraceNotFound(f"trace {body.trace_id!r} is unknown; send the trace_id a /chat answer returned")
    try:
        await run_in_threadpool(store.record, trace_id=body.trace_id, rating=body.rating, comment=body.comment,
                                session_id=served.session_id, route=served.route, provider=served.provider,
                                model=served.model, model_version=served.model_version)
    except ChatbotError:  # InvalidInput: the edge turns it into 422
        raise
    except Exception as exc:  # noqa: BLE001 - the store is down: say so, do not 500
        log.warning("feedback for trace=%s not recorded: %s", body.trace_id, exc)
        raise FeedbackUnavailable(f"feedback not recorded: the store failed ({type(exc).__name__}); "
                                  "try again later") from None
    metrics.feedback.labels(body.rating).inc()
    log.info("feedback trace=%s rating=%s route=%s", body.trace_id, body.rating, served.route)
    return FeedbackResponse(trace_id=body.trace_id, rating=body.rating)

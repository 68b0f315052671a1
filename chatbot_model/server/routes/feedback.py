"""POST /feedback: a thumbs up/down on a trace this server, another replica or MLflow knows, recorded durably.

The rating is stored and the response sent; attaching it to its MLflow trace happens in the store's background
worker (no trace flush, no MLflow call in the request). A trace id this process did not serve is looked up, each
step bounded by `LOOKUP_TIMEOUT_S`: first in the conversation turns every replica writes (a /chat answer with a
session_id), then in the tracking store. 404 only when both say the trace does not exist; 503 with
`Retry-After` when either cannot say (down, slow, erroring) and the other does not know it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from urllib.parse import urlparse

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from chatbot_model.config import Settings
from chatbot_model.contract import TRACE_ID_PATTERN
from chatbot_model.errors import ChatbotError
from chatbot_model.server import conversation
from chatbot_model.server.deps import Authorized, FeedbackStoreDep, MetricsDep, SettingsDep, TracesDep
from chatbot_model.server.errors import FeedbackUnavailable, TraceNotFound
from chatbot_model.server.ratelimit import limit_feedback
from chatbot_model.server.schemas import FeedbackRequest, FeedbackResponse, responses
from chatbot_model.server.state import ServedTrace

log = logging.getLogger(__name__)
router = APIRouter(tags=["feedback"])
LOOKUP_TIMEOUT_S = 5.0   # the whole tracking-store lookup of an unknown trace id
CONNECT_TIMEOUT_S = 2.0  # the reachability probe of an http(s) tracking server
RETRY_AFTER_S = 5


class TraceStoreUnavailable(FeedbackUnavailable):
    """The tracking store cannot say whether the trace exists: try again later."""

    headers = {"Retry-After": str(RETRY_AFTER_S)}


def _probe(uri: str) -> None:
    """A quick TCP connect to an http(s) tracking server (MLflow's own client retries for minutes)."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    socket.create_connection((parsed.hostname, port), timeout=CONNECT_TIMEOUT_S).close()


def lookup_trace(trace_id: str, settings: Settings) -> ServedTrace | None:
    """A trace another process served, from the MLflow tracking store; None when the store says it does not
    exist. Raises when the store cannot say (unreachable, erroring)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracing.client import TracingClient

    if not re.fullmatch(TRACE_ID_PATTERN, trace_id):  # it goes into the tracking server's URL: never raw text
        return None
    _probe(settings.tracking_uri)
    try:
        info = TracingClient(settings.tracking_uri).get_trace_info(trace_id)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") or "not found" in str(exc).lower():
            return None
        raise
    if info is None:
        return None
    tags = dict(getattr(info, "tags", None) or {})
    return ServedTrace(trace_id=trace_id, route=tags.get("route"), provider=tags.get("provider"),
                       model=tags.get("model"))


async def find_trace(trace_id: str, settings: Settings) -> ServedTrace | None:
    """`lookup_trace` within `LOOKUP_TIMEOUT_S`; TraceStoreUnavailable (503) when the store cannot say in time."""
    try:
        return await asyncio.wait_for(run_in_threadpool(lookup_trace, trace_id, settings), LOOKUP_TIMEOUT_S)
    except asyncio.TimeoutError:
        why = f"no answer within {LOOKUP_TIMEOUT_S:g} s"
    except Exception as exc:  # noqa: BLE001 - unreachable or erroring store: it cannot say
        why = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    log.warning("trace %r: the tracking store cannot say whether it exists (%s)", trace_id, why)
    raise TraceStoreUnavailable(f"cannot check trace {trace_id!r} now: the tracking store is unavailable ({why}); "
                                f"retry in {RETRY_AFTER_S} s")


async def find_served(app, trace_id: str, settings: Settings) -> ServedTrace:
    """A trace another replica served: from the shared conversation turns, else the tracking store."""
    served, turns_cannot_say = await conversation.served_turn(app, trace_id, LOOKUP_TIMEOUT_S)
    if served is not None:
        return served
    try:
        served = await find_trace(trace_id, settings)
    except TraceStoreUnavailable as exc:
        if turns_cannot_say:
            raise TraceStoreUnavailable(f"{exc} ({turns_cannot_say})") from None
        raise
    if served is not None:
        return served
    if turns_cannot_say:
        log.warning("trace %r: not in the tracking store yet and %s", trace_id, turns_cannot_say)
        raise TraceStoreUnavailable(f"cannot check trace {trace_id!r} now: {turns_cannot_say} and the tracking "
                                    f"store does not have it (yet); retry in {RETRY_AFTER_S} s")
    raise TraceNotFound(f"trace {trace_id!r} is unknown; send the trace_id a /chat answer returned")


@router.post("/feedback", response_model=FeedbackResponse, responses=responses(400, 401, 404, 413, 422, 429, 503))
async def feedback(body: FeedbackRequest, request: Request, settings: SettingsDep, traces: TracesDep, store: FeedbackStoreDep,
                   metrics: MetricsDep, _auth: Authorized) -> FeedbackResponse:
    """Rate an answer by its `trace_id` (from /chat): `up` or `down`, with an optional comment. One rating per
    answer and conversation: rating it again replaces the earlier rating. At most
    CHATBOT_FEEDBACK_RATE_PER_MINUTE ratings per client and minute (429 with Retry-After beyond)."""
    await limit_feedback(request)
    served = traces.get(body.trace_id) or await find_served(request.app, body.trace_id, settings)
    try:
        await run_in_threadpool(store.record, trace_id=body.trace_id, rating=body.rating, comment=body.comment,
                                session_id=served.session_id, route=served.route, provider=served.provider,
                                model=served.model, model_version=served.model_version, background=True)
    except ChatbotError:  # InvalidInput: the edge turns it into 422
        raise
    except Exception as exc:  # noqa: BLE001 - the store is down: say so, do not 500
        log.warning("feedback for trace=%r not recorded: %s", body.trace_id, type(exc).__name__)
        raise FeedbackUnavailable(f"feedback not recorded: the store failed ({type(exc).__name__}); "
                                  "try again later") from None
    metrics.feedback.labels(body.rating).inc()
    log.info("feedback trace=%r rating=%s route=%r", body.trace_id, body.rating, served.route)
    return FeedbackResponse(trace_id=body.trace_id, rating=body.rating)

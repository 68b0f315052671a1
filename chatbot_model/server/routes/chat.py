"""POST /chat: one question, answered by the backend in a worker thread (requests never serialise)."""

from __future__ import annotations

import functools
import logging

import anyio
from fastapi import APIRouter

from chatbot_model.contract import validate_question
from chatbot_model.server.deps import Authorized, BackendDep, MetricsDep, SettingsDep, TracesDep
from chatbot_model.server.errors import BackendFailed, BackendTimeout
from chatbot_model.server.schemas import ChatRequest, ChatResponse, responses
from chatbot_model.server.state import ServedTrace

log = logging.getLogger(__name__)
router = APIRouter(tags=["chat"])


@router.post("/chat", response_model=ChatResponse, responses=responses(400, 401, 413, 422, 502, 503, 504))
async def chat(body: ChatRequest, backend: BackendDep, settings: SettingsDep, traces: TracesDep,
               metrics: MetricsDep, _auth: Authorized) -> ChatResponse:
    """Answer `question` from the knowledge base; the reply says which route, provider and model answered."""
    question = validate_question(body.question, settings.max_question_chars)
    try:
        with anyio.fail_after(settings.backend_timeout_s):
            rows = await anyio.to_thread.run_sync(functools.partial(backend.predict, [question], body.session_id),
                                                  abandon_on_cancel=True)
    except TimeoutError:
        raise BackendTimeout(f"no answer within {settings.backend_timeout_s:g}s; try again, or raise "
                             "CHATBOT_BACKEND_TIMEOUT_S") from None
    row = rows[0]
    if row["error"]:
        raise BackendFailed(f"the model could not answer: {row['error']}")
    metrics.observe_answer(row)
    traces.remember(ServedTrace(trace_id=row["trace_id"], route=row["route"], provider=row["provider"],
                                model=row["model"], session_id=body.session_id,
                                model_version=row["model_version"] or None))
    log.info("trace=%s route=%s provider=%s blocked=%s latency_ms=%.0f", row["trace_id"], row["route"],
             row["provider"], row["blocked"], row["latency_ms"])
    return ChatResponse.model_validate(row)

"""POST /chat: one question, answered by the backend in a worker thread (requests never serialise); with
`"stream": true` as Server-Sent Events (`server/sse.py`). A client that hangs up cancels the upstream call."""

from __future__ import annotations

import functools
import logging

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from chatbot_model.contract import validate_question
from chatbot_model.server import conversation, sessions
from chatbot_model.server.deps import Authorized, BackendDep, MetricsDep, SettingsDep, TracesDep
from chatbot_model.server.errors import BackendFailed, BackendTimeout
from chatbot_model.server.schemas import STREAM_RESPONSE, ChatRequest, ChatResponse, responses
from chatbot_model.server.sse import run_cancelling_on_disconnect, stream_chat

log = logging.getLogger(__name__)
router = APIRouter(tags=["chat"])


@router.post("/chat", response_model=ChatResponse,
             responses={**responses(400, 401, 403, 413, 422, 502, 503, 504), **STREAM_RESPONSE})
async def chat(request: Request, body: ChatRequest, backend: BackendDep, settings: SettingsDep, traces: TracesDep,
               metrics: MetricsDep, _auth: Authorized) -> dict:
    """Answer `question` from the knowledge base; the reply says which route, provider and model answered.
    A follow-up uses its conversation: `history` when sent, else the stored turns of `session_id`."""
    question = validate_question(body.question, settings.max_question_chars)
    session_id = sessions.session_for(request, body.session_id)  # issued, or verified as this caller's (403)
    # a session issued just now has no turns yet: nothing to read
    history = await conversation.history_for(request.app, settings, body.session_id and session_id, body.history)
    if body.stream:
        return await stream_chat(question, backend, settings, functools.partial(
            conversation.record_answer, session_id=session_id, backend=backend, traces=traces, metrics=metrics,
            app=request.app), history=history or None, session_id=session_id, receive=request.receive)
    try:
        rows = await run_cancelling_on_disconnect(request, settings, functools.partial(
            backend.predict, [question], [history] if history else None, session_id=session_id))
    except TimeoutError:
        raise BackendTimeout(f"no answer within {settings.backend_timeout_s:g}s; try again, or raise "
                             "CHATBOT_BACKEND_TIMEOUT_S") from None
    row = rows[0]
    if row["error"]:
        raise BackendFailed(f"the model could not answer: {row['error']}")
    await run_in_threadpool(conversation.record_answer, row, session_id, backend, traces, metrics, request.app)
    return {**row, "session_id": session_id}  # checked and written by the response model

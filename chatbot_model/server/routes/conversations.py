"""POST /conversation: the stored turns of the caller's own conversation, so a client (the chat page after a
reload) can show it again.

The session id travels in the JSON body, as on /chat, never in the URL: without an API key it is a bearer token,
and URLs end up in access logs. It is verified like /chat's before anything is read."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Request

from chatbot_model.server import conversation, sessions
from chatbot_model.server.deps import Authorized, SettingsDep
from chatbot_model.server.schemas import ConversationRequest, ConversationResponse, responses

router = APIRouter(tags=["chat"])


@router.post("/conversation", response_model=ConversationResponse,
             responses=responses(400, 401, 403, 404, 413, 415, 422, 503))
async def read_conversation(request: Request, body: ConversationRequest, settings: SettingsDep,
                            _auth: Authorized) -> dict:
    """The newest turns of `session_id`, oldest first: each question with the answer row it got (sources, route,
    model, trace id to rate it). 403 `invalid_session` for an id issued to another API key or by another secret;
    404 `invalid_session` when no turn of it is stored (pruned after CHATBOT_CONVERSATION_RETENTION_DAYS, or the
    server keeps no conversations): start a new conversation."""
    session_id = sessions.own_session(request, body.session_id)  # 403 before any read
    turns = await conversation.recent_turns(request.app, settings, session_id)
    if turns is None:
        raise sessions.SessionNotFound("no turns of this session are stored (pruned after "
                                       "CHATBOT_CONVERSATION_RETENTION_DAYS, or never stored: the server keeps them "
                                       "only with CHATBOT_FEEDBACK_DB_URL); ask without session_id to start a new "
                                       "conversation")
    return {"session_id": session_id, "turns": [dataclasses.asdict(turn) for turn in turns]}

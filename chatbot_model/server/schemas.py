"""Request and response bodies of the HTTP API (what /openapi.json documents)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from chatbot_model.contract import MAX_COMMENT_CHARS, MAX_ID_CHARS, TRACE_ID_PATTERN, AnswerRow
from chatbot_model.server.sessions import SESSION_ID_PATTERN

NUL_REJECTED = "NUL characters are rejected (422); surrounding whitespace is stripped"


def _clean_text(value: str | None, field: str, *, required: bool) -> str | None:
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{field} is not valid UTF-8 text (lone surrogate)") from None
    if "\x00" in value:
        raise ValueError(f"{field} contains a NUL character")
    text = value.strip()
    if required and not text:
        raise ValueError(f"{field} is empty; ask something in words")
    return text or None


def _id_of_shape(value: str, field: str, pattern: str, problem: str) -> str:
    """`value` cleaned like any text, then required to match `pattern` in full (else `problem`, a 422)."""
    value = _clean_text(value, field, required=True)
    if not re.fullmatch(pattern, value):
        raise ValueError(problem)
    return value


class HistoryMessage(BaseModel):
    """One earlier message of the conversation."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str = Field(..., min_length=1, description="the message text (cleaned like a question)")


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", json_schema_extra={
        "examples": [{"question": "How do I roll back a model version?"},
                     {"question": "And how do I undo that?", "history": [
                         {"role": "user", "content": "How do I roll back a model version?"},
                         {"role": "assistant", "content": "Promote the previous version to Production again."}]}]})

    question: str = Field(..., min_length=1, description="the question: text of at most "
                          "CHATBOT_MAX_QUESTION_CHARS characters after cleaning: control characters other than tab "
                          "and newline (NUL included) become spaces, invisible characters (zero-width spaces and "
                          "joiners, direction marks, BOM, soft hyphen) are dropped, surrounding whitespace is "
                          "stripped; a question left empty is 422")
    session_id: str | None = Field(None, max_length=MAX_ID_CHARS, description="the conversation: the `session_id` "
                                   "an earlier answer returned (the server issues them; any other value is 403 "
                                   "`invalid_session`, and so is one issued to another API key); its stored turns "
                                   "are the question's history and the answered turn is stored under it (with a "
                                   "feedback database); omitted: a new conversation, whose id comes with the "
                                   f"answer; at most {MAX_ID_CHARS} characters; {NUL_REJECTED}")
    history: list[HistoryMessage] | None = Field(None, description="the earlier turns, oldest first; when sent it "
                                                 "wins over the stored conversation of session_id; at most "
                                                 "CHATBOT_HISTORY_MAX_MESSAGES messages and "
                                                 "CHATBOT_HISTORY_MAX_CHARS characters (else 422 naming `history`)")

    stream: bool = Field(False, description="true: answer as Server-Sent Events (text/event-stream): `sources`, "
                         "`delta` pieces as each checked sentence is ready, `replace` if the output guardrail stops "
                         "the answer, then `final` with the whole response row (`error` on a failure mid-stream)")

    @field_validator("session_id")
    @classmethod
    def _session(cls, value: str | None) -> str | None:
        return _clean_text(value, "session_id", required=False)


class ChatResponse(AnswerRow):
    """The answer row of the one contract (`contract.AnswerRow`), and the conversation it belongs to."""

    session_id: str = Field("", description="the conversation's id, issued by the server with the first answer: "
                            "send it with the next question to continue the conversation")


class ConversationRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    session_id: str = Field(..., min_length=1, max_length=MAX_ID_CHARS,
                            json_schema_extra={"pattern": SESSION_ID_PATTERN},
                            description="the conversation: a `session_id` an answer returned (`s1.` and two "
                            "22-character base64url parts; any other shape is 422); one issued to another API key is "
                            f"403 `invalid_session`; {NUL_REJECTED}")

    @field_validator("session_id")
    @classmethod
    def _session(cls, value: str) -> str:
        return _id_of_shape(value, "session_id", SESSION_ID_PATTERN, "not a session id this server issues (`s1.` and "
                            "two 22-character base64url parts); send the session_id an answer returned, or ask "
                            "without one to start a conversation")


class ConversationTurn(AnswerRow):
    """One stored turn: its question and the answer row it got (`fallback` and `error` are not stored: empty)."""

    turn: int = Field(..., ge=1, description="the turn's number in its conversation, from 1")


class ConversationResponse(BaseModel):
    session_id: str
    turns: list[ConversationTurn] = Field(..., description="the newest turns, oldest first: as many as "
                                          "CHATBOT_HISTORY_MAX_MESSAGES holds messages (a question and its answer "
                                          "each, rounded up); a first `turn` above 1: earlier turns are not shown")


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    trace_id: str = Field(..., min_length=1, max_length=MAX_ID_CHARS, json_schema_extra={"pattern": TRACE_ID_PATTERN},
                          description="the trace_id a /chat answer returned: `tr-` and 32 lowercase hex digits "
                          f"(MLflow's format; an MLflow 2 request id, 32 hex, too); anything else is 422; "
                          f"{NUL_REJECTED}")
    rating: Literal["up", "down"]
    comment: str | None = Field(None, max_length=MAX_COMMENT_CHARS, description=NUL_REJECTED)

    @field_validator("trace_id")
    @classmethod
    def _trace(cls, value: str) -> str:
        return _id_of_shape(value, "trace_id", TRACE_ID_PATTERN, "not an MLflow trace id (`tr-` and 32 lowercase hex "
                            "digits); send the trace_id a /chat answer returned")

    @field_validator("comment")
    @classmethod
    def _comment(cls, value: str | None) -> str | None:
        return _clean_text(value, "comment", required=False)


class FeedbackResponse(BaseModel):
    status: Literal["recorded"] = "recorded"
    trace_id: str
    rating: Literal["up", "down"]


class ErrorResponse(BaseModel):
    """Every error: a stable code and a message saying what is wrong and how to fix it. Bodies that are not
    UTF-8 are 400 `invalid_encoding`; malformed JSON and invalid fields are 422 `invalid_input`."""

    error: str = Field(..., description="stable machine-readable code")
    message: str
    fields: list[str] | None = Field(None, description="422 only: the offending fields")


class HealthResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["ok", "unhealthy"] = Field("ok", description="`unhealthy` (HTTP 503) after "
                                               "CHATBOT_UNHEALTHY_AFTER_S without a model: restart the process")
    ready: bool
    loading: bool
    backend: str
    model_uri: str | None = None
    model_version: str | None = None
    load_error: str | None = Field(None, description="the last model load error (passwords masked)")
    load_attempts: int = 0
    next_load_attempt_in_s: float | None = Field(None, description="while retrying: seconds to the next attempt")
    alias_target: str | None = Field(None, description="in-process: the version CHATBOT_MODEL_URI points at now "
                                     "(model_version differs while it loads, or when it failed: see rollout)")
    rollout: dict | None = Field(None, description="in-process: alias following (serving, alias_target, loading, "
                                 "failed, swaps, last poll)")
    challenger: dict | None = Field(None, description="in-process with CHATBOT_CHALLENGER_ALIAS: the same for the "
                                    "challenger, and its share of sessions")
    api_key_required: bool
    reason: str | None = Field(None, description="unhealthy only: why")


class NotReadyResponse(BaseModel):
    """503 of /ready: why the model cannot answer, the last load error and when the next attempt is."""

    error: Literal["model_not_loaded"] = "model_not_loaded"
    message: str
    load_error: str | None = None
    load_attempts: int = 0
    next_load_attempt_in_s: float | None = None


class HealthSummary(BaseModel):
    """/health without the API key of a server that has one: status and version only."""

    status: Literal["ok", "unhealthy"]
    version: str


class ReadyResponse(BaseModel):
    status: Literal["ready"] = "ready"


# one event of the stream, as OpenAPI 3.2's event-stream item (`event` names it, `data` is one line of JSON)
SSE_EVENT = {"type": "object", "required": ["data"],
             "properties": {"event": {"type": "string", "enum": ["sources", "delta", "replace", "final", "error"]},
                            "data": {"type": "string", "description": "JSON: sources, {text}, the row, or an error"},
                            "id": {"type": "string"}, "retry": {"type": "integer"}}}
STREAM_RESPONSE = {200: {"description": "the answer row; with `\"stream\": true` Server-Sent Events instead",
                         "content": {"text/event-stream": {"schema": SSE_EVENT, "example":
                             'event: sources\ndata: {"sources":[...]}\n\nevent: delta\ndata: {"text":"..."}\n\n'
                             'event: final\ndata: {"answer":"...","route":"gpt",...}\n\n'}}}}


def responses(*statuses: int) -> dict:
    """OpenAPI `responses=` for the error statuses an endpoint can return."""
    return {s: {"model": ErrorResponse} for s in statuses}

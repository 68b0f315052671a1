"""The OpenAI-compatible API: `POST /v1/chat/completions` (whole or `stream: true`) and `GET /v1/models`, so the
`openai` SDK and OpenAI-compatible chat UIs talk to the chatbot.

- The last message must be the user's question; earlier user/assistant messages are the conversation's
  history (trimmed like any history). System (and developer) messages are ignored unless
  CHATBOT_ALLOW_CLIENT_SYSTEM_PROMPT is on: then they replace the hint (in-process backends). The guardrail
  applies either way.
- `model` must be the served model (`GET /v1/models`) or left out. Sampling parameters (temperature,
  max_tokens, ...) are accepted and ignored: the knowledge base and the router decide.
- The reply carries `chatbot`: sources, route, provider, model, abstained, blocked, fallback, trace_id
  (send it to /feedback) and latency_ms. Streamed, it comes with the last chunk before `data: [DONE]`.
- `usage` counts words (whitespace-separated), not model tokens: the answer may come from the extractive
  local answerer, which has none.
- The output guardrail stopping a streamed answer sends the safe reply and `finish_reason: "content_filter"`.
- Errors have OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`; the bearer key is
  CHATBOT_API_KEY (checked like /chat's).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chatbot_model.contract import validate_question
from chatbot_model.errors import ChatbotError, InvalidInput
from chatbot_model.server.conversation import record_answer
from chatbot_model.server.deps import (BackendDep, MetricsDep, SettingsDep, TracesDep, _bearer, check_api_key,
                                       settings_of)
from chatbot_model.server.errors import ServerError, Unauthorized
from chatbot_model.server.sse import EventStream, backend_events, request_deadline, run_cancelling_on_disconnect

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["openai-compatible"])
EXTRA_FIELD = "chatbot"
SYSTEM_ROLES = ("system", "developer")
_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
          413: "invalid_request_error", 415: "invalid_request_error", 422: "invalid_request_error"}


class OpenAIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None):
        super().__init__(message)
        self.status, self.code, self.param = status, code, param

    def body(self) -> dict:
        return {"error": {"message": str(self), "type": _TYPES.get(self.status, "server_error"),
                          "param": self.param, "code": self.code}}


def as_openai_error(exc: BaseException) -> OpenAIError:
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, InvalidInput):
        return OpenAIError(400, str(exc), "invalid_input", _param(getattr(exc, "field", None)))
    if isinstance(exc, ServerError):
        return OpenAIError(exc.status, str(exc), exc.code)
    if isinstance(exc, TimeoutError):
        return OpenAIError(504, "no answer within CHATBOT_BACKEND_TIMEOUT_S; try again", "backend_timeout")
    if isinstance(exc, ChatbotError):
        return OpenAIError(502, str(exc), exc.code)
    log.error("unexpected %s on /v1: %s", type(exc).__name__, exc)
    return OpenAIError(500, f"unexpected {type(exc).__name__}; see the server log", "internal_error")


def _param(field: str | None) -> str | None:
    return {"question": "messages", "history": "messages"}.get(field or "", field)


async def _on_openai_error(request: Request, exc: OpenAIError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def install(app: FastAPI) -> None:
    """Register the router and its error handler on the app."""
    app.include_router(router)
    app.add_exception_handler(OpenAIError, _on_openai_error)


async def authorized(request: Request,
                     credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """CHATBOT_API_KEY as the bearer token (the SDK's `api_key`), checked like /chat's."""
    try:
        check_api_key(settings_of(request.app), credentials)
    except Unauthorized as exc:
        raise OpenAIError(401, str(exc), "invalid_api_key") from None


Authorized = Annotated[None, Depends(authorized)]


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="the served model (GET /v1/models); may be left out")
    messages: list[Message] = Field(..., min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = Field(None, description="`include_usage`: a last chunk with usage")


def _text(message: Message, n: int) -> str:
    """The text of a message; content parts must all be text."""
    if isinstance(message.content, str):
        return message.content
    if message.content is None:
        raise OpenAIError(400, f"messages[{n}] has no content", "invalid_input", f"messages[{n}].content")
    texts = []
    for part in message.content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise OpenAIError(400, f"messages[{n}]: only text content parts are supported, got "
                                   f"{part.get('type')!r}", "invalid_input", f"messages[{n}].content")
        texts.append(part["text"])
    return "\n".join(texts)


def conversation(messages: list[Message], max_chars: int) -> tuple[str, list[dict], str | None]:
    """(question, history, system text) of the messages: the last is the user's question."""
    system, turns = [], []
    for n, message in enumerate(messages):
        if message.role in SYSTEM_ROLES:
            system.append(_text(message, n))
        elif message.role in ("user", "assistant"):
            turns.append({"role": message.role, "content": _text(message, n)})
        else:
            raise OpenAIError(400, f"messages[{n}].role {message.role!r} is not supported; send system, user and "
                                   "assistant messages (no tools)", "invalid_input", f"messages[{n}].role")
    if not turns or turns[-1]["role"] != "user":
        raise OpenAIError(400, "the last message must be the user's question (role `user`)", "invalid_input",
                          "messages")
    question = validate_question(turns[-1]["content"], max_chars, "the last user message")
    return question, turns[:-1], "\n\n".join(system) or None


async def _parse(request: Request) -> ChatCompletionRequest:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json":  # text/plain and forms need no CORS preflight: another site could send them
        raise OpenAIError(415, "send the body as JSON with `Content-Type: application/json` "
                          f"(got {media or 'none'!r})", "unsupported_media_type")
    try:
        return ChatCompletionRequest.model_validate(json.loads(await request.body()))
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "body"
            raise OpenAIError(400, f"{where}: {first.get('msg')}", "invalid_input", where) from None
        where = f" (line {exc.lineno}, column {exc.colno}): {exc.msg}" if isinstance(exc, json.JSONDecodeError) else ""
        raise OpenAIError(400, f"body is not valid JSON{where}; send a chat completion request", "invalid_json") from None


def _served_model(settings, backend) -> dict:
    version = getattr(backend, "version", None)
    return {"id": settings.registered_model_name, "object": "model", "created": 0, "owned_by": "llmops-chatbot",
            "version": str(version) if version is not None else None, "backend": backend.name}


def _usage(question: str, history: list[dict], answer: str) -> dict:
    prompt = len(question.split()) + sum(len(m["content"].split()) for m in history)
    completion = len(answer.split())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _extra(row: dict) -> dict:
    return {k: row[k] for k in ("sources", "route", "provider", "model", "abstained", "blocked", "fallback",
                                "trace_id", "latency_ms") if k in row}


@router.get("/models", summary="The served model, in OpenAI's list format")
async def models(settings: SettingsDep, backend: BackendDep, _auth: Authorized) -> dict:
    return {"object": "list", "data": [_served_model(settings, backend)]}


def _inline(schema: dict) -> dict:
    """A JSON schema with its `$defs` references replaced by the definitions (for the OpenAPI document)."""
    defs = schema.pop("$defs", {})

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return walk(dict(defs[node["$ref"].rsplit("/", 1)[-1]]))
            return {k: walk(v) for k, v in node.items()}
        return [walk(v) for v in node] if isinstance(node, list) else node

    return walk(schema)


@router.post("/chat/completions", summary="Chat completion over the knowledge base (OpenAI-compatible)",
             openapi_extra={"requestBody": {"content": {"application/json": {
                 "schema": _inline(ChatCompletionRequest.model_json_schema())}}, "required": True}})
async def chat_completions(request: Request, settings: SettingsDep, backend: BackendDep, traces: TracesDep,
                           metrics: MetricsDep, _auth: Authorized):
    body = await _parse(request)
    name = settings.registered_model_name
    if body.model not in (None, "", name):
        raise OpenAIError(404, f"the model {body.model!r} is not served here; use {name!r} (GET /v1/models)",
                          "model_not_found", "model")
    try:
        question, history, system = conversation(body.messages, settings.max_question_chars)
    except ChatbotError as exc:
        raise as_openai_error(exc) from None
    hint = system if settings.allow_client_system_prompt else None
    if system and not hint:
        log.info("ignored a client system message (CHATBOT_ALLOW_CLIENT_SYSTEM_PROMPT is off)")
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def served(row: dict) -> None:
        record_answer(row, None, backend, traces, metrics)

    if body.stream:
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        chunks = _Chunks(completion_id, created, name, question, history, include_usage, served)
        deadline, context = request_deadline(settings, hint)
        stream = EventStream(backend_events(backend, question, history), deadline, context,
                             settings.backend_timeout_s, format_event=chunks, on_error=chunks.error,
                             end=b"data: [DONE]\n\n")
        try:
            return await stream.open(request.receive)
        except Exception as exc:  # noqa: BLE001 - before the first chunk: an HTTP error in OpenAI's shape
            raise as_openai_error(exc) from None
    try:
        rows = await run_cancelling_on_disconnect(request, settings, lambda: backend.predict([question], [history]),
                                                  hint)
    except Exception as exc:  # noqa: BLE001 - answered in OpenAI's shape
        raise as_openai_error(exc) from None
    row = rows[0]
    if row["error"]:
        raise OpenAIError(502, f"the model could not answer: {row['error']}", "backend_error")
    served(row)
    return {"id": completion_id, "object": "chat.completion", "created": created, "model": name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": row["answer"]},
                         "finish_reason": "content_filter" if row["blocked"] else "stop", "logprobs": None}],
            "usage": _usage(question, history, row["answer"]), EXTRA_FIELD: _extra(row)}


class _Chunks:
    """The backend's events as `chat.completion.chunk` lines."""

    def __init__(self, completion_id: str, created: int, model: str, question: str, history: list[dict],
                 include_usage: bool, served):
        self.base = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}
        self.question, self.history, self.include_usage, self.served = question, history, include_usage, served
        self.text, self.filtered = "", False

    def _line(self, **fields: Any) -> bytes:
        return f"data: {json.dumps({**self.base, **fields}, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()

    def _choice(self, delta: dict, finish: str | None = None) -> bytes:
        return self._line(choices=[{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}])

    def __call__(self, event: dict) -> bytes | None:
        kind = event.get("event")
        if kind == "sources":
            return self._choice({"role": "assistant", "content": ""})
        if kind == "delta":
            self.text += event["text"]
            return self._choice({"content": event["text"]})
        if kind == "replace":
            self.filtered = True
            piece = ("\n\n" if self.text else "") + event["text"]
            self.text += piece
            return self._choice({"content": piece})
        if kind == "final":
            row = {k: v for k, v in event.items() if k != "event"}
            self.served(row)
            finish = "content_filter" if self.filtered or row.get("blocked") else "stop"
            out = self._line(choices=[{"index": 0, "delta": {}, "finish_reason": finish, "logprobs": None}],
                             **{EXTRA_FIELD: _extra(row)})
            if self.include_usage:
                out += self._line(choices=[], usage=_usage(self.question, self.history, self.text))
            return out
        return None

    def error(self, exc: BaseException) -> bytes:
        body = as_openai_error(exc).body()
        return f"data: {json.dumps(body, separators=(',', ':'))}\n\n".encode()


__all__ = ["router", "install", "ChatCompletionRequest", "OpenAIError", "EXTRA_FIELD", "conversation"]


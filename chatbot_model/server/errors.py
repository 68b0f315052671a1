"""HTTP edge of the error hierarchy: every error body is `{"error": CODE, "message": TEXT}` (plus `fields` for 422).

Domain errors (`chatbot_model.errors`) are translated here and nowhere else. Codes are stable API.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from chatbot_model.errors import ChatbotError, ConfigError, InvalidInput, NotFound, ProviderError

log = logging.getLogger(__name__)


class ServerError(ChatbotError):
    """An error with its HTTP status; subclasses name the stable code."""

    status = 500
    code = "internal_error"
    headers: dict[str, str] | None = None


class ModelNotLoaded(ServerError):
    status, code = 503, "model_not_loaded"


class BackendUnavailable(ServerError):
    status, code = 503, "backend_unavailable"


class BackendTimeout(ServerError):
    status, code = 504, "backend_timeout"


class BackendFailed(ServerError):
    status, code = 502, "backend_error"


class ClientClosedRequest(ServerError):
    """The client hung up before its answer and the upstream call was cancelled. Nobody reads the response; its
    status (nginx's 499) counts such requests in chatbot_http_requests_total apart from timeouts and failures."""

    status, code = 499, "client_closed_request"


class FeedbackUnavailable(ServerError):
    status, code = 503, "feedback_unavailable"


class ConversationUnavailable(ServerError):
    """The conversation store cannot be read now: retry shortly."""

    status, code = 503, "conversation_unavailable"
    headers = {"Retry-After": "5"}


class TraceNotFound(ServerError):
    status, code = 404, "trace_not_found"


class NotServed(ServerError):
    """A path this server is configured not to serve (e.g. the API docs when they are not public)."""

    status, code = 404, "not_found"


class Unauthorized(ServerError):
    status, code = 401, "unauthorized"
    headers = {"WWW-Authenticate": "Bearer"}


# domain errors that may reach the edge, with their status
DOMAIN_STATUS: dict[type[ChatbotError], int] = {InvalidInput: 422, NotFound: 404, ConfigError: 503, ProviderError: 502}
HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
              413: "body_too_large", 415: "unsupported_media_type", 422: "invalid_input", 503: "unavailable"}


def error_body(code: str, message: str, **extra) -> dict:
    return {"error": code, "message": message, **extra}


def error_response(status: int, code: str, message: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse(error_body(code, message, **extra), status_code=status, headers=headers)


def _field(loc) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def _validation_message(err: dict) -> str:
    field = _field(err.get("loc", ()))
    if err.get("type") == "json_invalid":
        return "body: not valid JSON — send a JSON object such as {\"question\": \"...\"}"
    if err.get("type") == "missing":
        return f"{field}: field required"
    if field == "question" and err.get("type") == "string_too_short":  # "" says what "   " says
        return EMPTY_QUESTION
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{field}: {msg}"


EMPTY_QUESTION = "question is empty; ask something in words"  # contract.validate_question's words
JSON_EXAMPLE = 'send a JSON object such as {"question": "..."}'


def _json_position(doc, pos: int) -> tuple[int, int]:
    """(line, column), both from 1, of character `pos` of the body."""
    text = doc.decode("utf-8", "replace") if isinstance(doc, (bytes, bytearray)) else str(doc or "")
    before = text[:pos]
    return before.count("\n") + 1, pos - (before.rfind("\n") + 1) + 1


def _is_json(content_type: str | None) -> bool:
    kind = (content_type or "").split(";")[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def _body_error(request: Request, exc: RequestValidationError) -> JSONResponse | None:
    """The body itself is wrong (not JSON, or not sent as JSON): one message with the fix, not field errors."""
    errors = exc.errors()
    broken = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if broken is not None:
        pos = broken.get("loc", ("body", 0))[-1]
        line, column = _json_position(exc.body, pos if isinstance(pos, int) else 0)
        reason = (broken.get("ctx") or {}).get("error")
        return error_response(400, "invalid_json", f"body is not valid JSON (line {line}, column {column})"
                              + (f": {reason}" if reason else "") + f"; {JSON_EXAMPLE}")
    content_type = request.headers.get("content-type")
    if not _is_json(content_type) and any(tuple(e.get("loc", ())) == ("body",) for e in errors):
        got = f"Content-Type {content_type.split(';')[0]}" if content_type else "no Content-Type"
        return error_response(415, "unsupported_media_type", f"the body must be JSON sent with `Content-Type: "
                              f"application/json` (got {got}); {JSON_EXAMPLE}")
    return None


async def _on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    refused = _body_error(request, exc)
    if refused is not None:
        return refused
    errors = exc.errors()
    fields = sorted({_field(e.get("loc", ())) for e in errors})
    message = "; ".join(dict.fromkeys(_validation_message(e) for e in errors)) or "invalid request"
    return error_response(422, "invalid_input", message, fields=fields)


async def _on_server_error(request: Request, exc: ServerError) -> JSONResponse:
    return error_response(exc.status, exc.code, str(exc), headers=exc.headers)


async def _on_domain_error(request: Request, exc: ChatbotError) -> JSONResponse:
    status = next((s for cls, s in DOMAIN_STATUS.items() if isinstance(exc, cls)), 500)
    if status >= 500:
        log.warning("%s on %s: %s", exc.code, request.url.path, exc)
    field = getattr(exc, "field", None)
    return error_response(status, exc.code, str(exc), **({"fields": [field]} if field else {}))


async def _on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    return error_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s", request.url.path)
    return error_response(500, "internal_error", f"unexpected {type(exc).__name__}; see the server log")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(ServerError, _on_server_error)
    app.add_exception_handler(ChatbotError, _on_domain_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)

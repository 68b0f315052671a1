"""Pure ASGI middleware: the body-size limit (before any parsing), request metrics, security headers."""

from __future__ import annotations

import json
import time

import anyio
from typing import Callable

from chatbot_model.server.errors import error_body


async def _send_json(send, status: int, body: dict, headers: list | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


def _is_json(content_type: bytes | None) -> bool:
    """JSON or no declared type (FastAPI parses both as JSON)."""
    if not content_type:
        return True
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


class BodyLimitMiddleware:
    """Reject bodies over `limit()` bytes with 413, by Content-Length or while reading (chunked bodies), bodies
    not complete within `timeout()` seconds with 408 (a client trickling its body holds no worker for long),
    and JSON bodies that are not UTF-8 (RFC 8259) with 400 `invalid_encoding`.

    The body is read here, bounded, and replayed to the app, so no handler ever parses an oversized body.
    """

    def __init__(self, app, limit: Callable[[], int], timeout: Callable[[], float] = lambda: 0.0):
        self.app = app
        self.limit = limit
        self.timeout = timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        limit = self.limit()
        too_large = error_body("body_too_large", f"the request body is over the {limit}-byte limit "
                               "(CHATBOT_MAX_BODY_BYTES); send a shorter question")
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                if int(declared) > limit:
                    return await _send_json(send, 413, too_large, [(b"connection", b"close")])
            except ValueError:
                return await _send_json(send, 400, error_body("bad_request", "Content-Length is not a number"))
        chunks, size, more = [], 0, True
        timeout = self.timeout() or None
        with anyio.move_on_after(timeout) as reading:
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    return await _send_json(send, 413, too_large, [(b"connection", b"close")])
                chunks.append(chunk)
                more = message.get("more_body", False)
        if reading.cancelled_caught:
            return await _send_json(send, 408, error_body(
                "request_timeout", f"the request body did not arrive within {timeout:g} s "
                "(CHATBOT_BODY_READ_TIMEOUT_S)"), [(b"connection", b"close")])
        body = b"".join(chunks)
        if body and _is_json(headers.get(b"content-type")):
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as exc:
                return await _send_json(send, 400, error_body(
                    "invalid_encoding", f"the request body is not UTF-8 (invalid byte at offset {exc.start}); "
                    "send JSON encoded as UTF-8"))
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class ConcurrencyLimitMiddleware:
    """At most `limit()` answers in progress (POST on `paths`, streams until their last event); one more gets 503
    `busy` with Retry-After at once instead of waiting in a queue that only grows. 0 = no cap. The count lives
    on the event loop (one thread), so it needs no lock."""

    def __init__(self, app, limit: Callable[[], int], paths: tuple[str, ...], retry_after_s: int = 1):
        self.app = app
        self.limit = limit
        self.paths = frozenset(paths)
        self.retry_after = str(retry_after_s).encode()
        self.active = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        limit = self.limit()
        if limit and self.active >= limit:
            return await _send_json(send, 503, error_body(
                "busy", f"{self.active} answers are in progress, the most this server takes at once "
                "(CHATBOT_MAX_CONCURRENT_CHATS); retry after the Retry-After seconds"),
                [(b"retry-after", self.retry_after)])
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


# methods that keep their own metrics label; any other (made-up) method is counted as "other"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
UNMATCHED = "unmatched"  # any path no route matches


def metric_labels(scope, status: int) -> tuple[str, str, str]:
    """(endpoint, method, status) with bounded values: the route template (never the raw path), a known method
    or "other", so made-up paths and methods cannot grow the metrics."""
    route = scope.get("route")
    endpoint = getattr(route, "path", None) or UNMATCHED
    if endpoint.startswith("/static") or (endpoint == UNMATCHED and scope.get("path", "").startswith("/static/")):
        endpoint = "/static"  # the mounted StaticFiles app sets no route in the scope
    method = scope["method"] if scope["method"] in KNOWN_METHODS else OTHER_METHOD
    return endpoint, method, str(status)


class MetricsMiddleware:
    """Count and time every HTTP request by endpoint (the route template, not the raw path), method and status.

    Label values are bounded (`metric_labels`): unknown methods are "other", unknown paths "unmatched"."""

    def __init__(self, app, metrics: Callable[[], object]):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            m = self.metrics()
            labels = metric_labels(scope, status)
            m.requests.labels(*labels).inc()
            m.latency.labels(*labels).observe(time.perf_counter() - started)


# The chat page loads only its own script and stylesheet: no inline script or style, no framing, no plugins.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                           "frame-ancestors 'none'")
SECURITY_HEADERS = ((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                    (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"))


class SecurityHeadersMiddleware:
    """Add CSP, X-Frame-Options: DENY, nosniff and Referrer-Policy to every HTTP response that does not set its
    own (the API docs pages set a CSP that lets them load their assets)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

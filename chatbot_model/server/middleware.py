"""Pure ASGI middleware: the body-size limit (before any parsing) and request metrics."""

from __future__ import annotations

import json
import time
from typing import Callable

from chatbot_model.server.errors import error_body


async def _send_json(send, status: int, body: dict, headers: list | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


class BodyLimitMiddleware:
    """Reject bodies over `limit()` bytes with 413, by Content-Length or while reading (chunked bodies).

    The body is read here, bounded, and replayed to the app, so no handler ever parses an oversized body.
    """

    def __init__(self, app, limit: Callable[[], int]):
        self.app = app
        self.limit = limit

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
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class MetricsMiddleware:
    """Count and time every HTTP request by endpoint (the route template, not the raw path) and status."""

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
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            if endpoint.startswith("/static"):
                endpoint = "/static"
            m = self.metrics()
            labels = (endpoint, scope["method"], str(status))
            m.requests.labels(*labels).inc()
            m.latency.labels(*labels).observe(time.perf_counter() - started)

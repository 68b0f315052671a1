"""Server-Sent Events for `/chat` with `"stream": true`, and the request deadline a client disconnect cancels.

Every request gets its own `Deadline` (CHATBOT_REQUEST_BUDGET_S), carried to the service through
`deadline.REQUEST_DEADLINE` (the backends' `predict` / `predict_stream` cannot pass it). When the client hangs
up, the deadline is cancelled: the running upstream call is cancelled, its connection closed, no fallback
starts, and the worker thread ends.

The stream (`text/event-stream`):

    event: sources  data: {"sources": [{id, title, source, score}, ...]}
    event: delta    data: {"text": "a piece of the answer"}              (one per checked sentence)
    event: replace  data: {"text": "<safe reply>", "blocked_by": "output"}  (the output guardrail stopped it)
    event: final    data: {<the /chat response row: route, provider, model, abstained, trace_id, ...>}
    event: error    data: {"error": CODE, "message": ...}                 (a failure after the stream began)

Bad input and an unloaded model are ordinary JSON errors: they are found before the first event.
"""

from __future__ import annotations

import contextvars
import json
import logging
from typing import Any, AsyncIterator, Callable, Iterator

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from chatbot_model.config import Settings
from chatbot_model.errors import ChatbotError
from chatbot_model.pipeline.adapter import REQUEST_HINT
from chatbot_model.providers.deadline import REQUEST_DEADLINE, Deadline
from chatbot_model.server.errors import BackendFailed, BackendTimeout, ServerError

log = logging.getLogger(__name__)
_END = object()


def request_deadline(settings: Settings, hint: str | None = None) -> tuple[Deadline, contextvars.Context]:
    """A fresh deadline for one request, and a context in which the service sees it (`REQUEST_DEADLINE`) and,
    when given, the caller's hint (`adapter.REQUEST_HINT`)."""

    deadline = Deadline.start(settings.request_budget_s, settings.local_reserve_s)
    context = contextvars.copy_context()
    context.run(REQUEST_DEADLINE.set, deadline)
    if hint:
        context.run(REQUEST_HINT.set, hint)
    return deadline, context


async def until_disconnect(receive: Receive, on_disconnect: Callable[[], Any]) -> None:
    """Wait for the client to hang up (`http.disconnect`), then call `on_disconnect`."""
    while (await receive())["type"] != "http.disconnect":
        pass
    on_disconnect()


async def run_cancelling_on_disconnect(request, settings: Settings, call: Callable[[], Any],
                                       hint: str | None = None) -> Any:
    """`call()` in a worker thread under a request deadline that the client hanging up cancels (the upstream
    call stops; the local answerer finishes in moments and its answer is dropped)."""
    deadline, context = request_deadline(settings, hint)
    outcome: dict[str, Any] = {}
    async with anyio.create_task_group() as group:
        group.start_soon(until_disconnect, request.receive, deadline.cancel)
        try:
            with anyio.fail_after(settings.backend_timeout_s):
                outcome["value"] = await anyio.to_thread.run_sync(context.run, call, abandon_on_cancel=True)
        except Exception as exc:  # noqa: BLE001 - raised below, outside the task group (no exception group)
            outcome["error"] = exc
        finally:
            group.cancel_scope.cancel()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def sse(event: str, data: dict) -> bytes:
    """One Server-Sent Event (JSON data on one line)."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


def error_event(exc: BaseException) -> dict:
    """The `error` event of a failure after the stream began (the body an HTTP error would have had)."""
    if isinstance(exc, TimeoutError):
        exc = BackendTimeout("no further answer within CHATBOT_BACKEND_TIMEOUT_S; ask again")
    if isinstance(exc, ChatbotError):
        code = exc.code if not isinstance(exc, ServerError) else type(exc).code
        return {"error": code, "message": str(exc)}
    log.error("stream failed: %s: %s", type(exc).__name__, exc)
    return {"error": "internal_error", "message": f"unexpected {type(exc).__name__}; see the server log"}


class EventStream(Response):
    """Pull events from a blocking iterator (one worker-thread hop per event) and send them as SSE.

    `open()` takes the first event before any byte is sent, so its errors are plain HTTP errors. A client
    that hangs up cancels the deadline; the event being produced ends quickly (no upstream call, no
    fallback), and the iterator is closed: nothing keeps running and nothing is logged as an error."""

    media_type = "text/event-stream"

    def __init__(self, events: Iterator[dict], deadline: Deadline, context: contextvars.Context,
                 timeout_s: float, *, format_event: Callable[[dict], bytes | None],
                 on_error: Callable[[BaseException], bytes], end: bytes = b""):
        super().__init__(media_type=self.media_type)
        self.events, self.deadline, self.context, self.timeout_s = events, deadline, context, timeout_s
        self.format_event, self.on_error, self.end = format_event, on_error, end
        self.first: dict | None = None
        self.disconnected = False
        self.extra_headers: list[tuple[bytes, bytes]] = []

    async def _next(self) -> Any:
        with anyio.fail_after(self.timeout_s):
            return await anyio.to_thread.run_sync(self.context.run, next, self.events, _END)

    async def open(self, receive: Receive | None = None) -> "EventStream":
        """Take the first event; with the request's `receive`, a client hanging up meanwhile cancels the deadline
        (a backend that cannot stream, such as the remote one, spends the whole answer here)."""
        outcome: dict[str, Any] = {}
        try:
            async with anyio.create_task_group() as group:
                if receive is not None:
                    group.start_soon(until_disconnect, receive, self._hung_up)
                try:
                    self.first = await self._next()
                except Exception as exc:  # noqa: BLE001 - raised below, outside the task group
                    outcome["error"] = exc
                finally:
                    group.cancel_scope.cancel()
            if "error" in outcome:
                raise outcome["error"]
        except BaseException:
            await self._close()
            raise
        return self

    async def _close(self) -> None:
        close = getattr(self.events, "close", None)
        if close is not None:
            await anyio.to_thread.run_sync(self.context.run, close)

    async def _chunks(self) -> AsyncIterator[bytes]:
        event = self.first
        try:
            while event is not _END and not self.disconnected:
                data = self.format_event(event)
                if data:
                    yield data
                event = await self._next()
        except Exception as exc:  # noqa: BLE001 - ends the stream with an error event
            self.deadline.cancel()
            if not self.disconnected:
                yield self.on_error(exc)
            return
        if not self.disconnected and self.end:
            yield self.end

    def _hung_up(self) -> None:
        self.disconnected = True
        self.deadline.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"), *self.extra_headers]})
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(until_disconnect, receive, self._hung_up)
                try:
                    async for chunk in self._chunks():
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                except OSError:  # the connection is gone (ASGI 2.4 servers raise on send)
                    self._hung_up()
                except Exception as exc:  # noqa: BLE001 - nothing else can be sent now
                    log.error("stream ended by %s: %s", type(exc).__name__, exc)
                finally:
                    group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._close()
            if self.disconnected:
                log.info("stream abandoned by the client: upstream call cancelled")


def backend_events(backend, question: str, history: list | None = None,
                   session_id: str | None = None) -> Iterator[dict]:
    """The backend's event dicts; a final row carrying an error becomes BackendFailed (as in plain /chat)."""
    events = backend.stream(question, history, session_id=session_id)
    try:
        for event in events:
            if event.get("event") == "final" and event.get("error"):
                raise BackendFailed(f"the model could not answer: {event['error']}")
            yield event
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()


def chat_event(event: dict) -> bytes:
    """An event dict of the backend as its SSE form (the `final` event carries the whole row)."""
    kind = event.get("event")
    data = {k: v for k, v in event.items() if k != "event"}
    return sse(kind, data)


async def stream_chat(question: str, backend, settings: Settings, on_final: Callable[[dict], None],
                      history: list | None = None, session_id: str | None = None,
                      receive: Receive | None = None) -> EventStream:
    """`/chat` with `"stream": true`: the backend's events as SSE; `on_final(row)` records the answer (metrics,
    served traces) like a whole one. `receive`: the request's, so a hang-up before the first event cancels too."""
    deadline, context = request_deadline(settings)

    def as_sse(event: dict) -> bytes:
        if event.get("event") == "final":
            on_final({k: v for k, v in event.items() if k != "event"})
            if session_id:  # the client continues the conversation with it
                event = {**event, "session_id": session_id}
        return chat_event(event)

    stream = EventStream(backend_events(backend, question, history, session_id), deadline, context, settings.backend_timeout_s,
                         format_event=as_sse, on_error=lambda exc: sse("error", error_event(exc)))
    return await stream.open(receive)

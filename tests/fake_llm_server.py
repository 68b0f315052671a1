"""A fake LLM server speaking the OpenAI and Anthropic wire formats, for tests with the real SDKs.

    server = FakeLLMServer()                       # or the `fake_llm_server` pytest fixture
    OpenAI(base_url=server.openai_base_url, ...)   # POST /v1/chat/completions
    Anthropic(base_url=server.anthropic_base_url)  # POST /v1/messages
    OpenAI(...).moderations.create(input=[...])    # POST /v1/moderations: `server.moderation(text)` scores each
    server.queue(Reply.error(429), "hello")        # programmed replies, first in first out
    server.requests[-1].body["model"]              # every request received, in order
    server.delay = 0.2                             # a fixed delay before every reply
    server.on_request = callback                   # called with each RecordedRequest as it arrives
    server.open_connections                        # connections being served right now

With an empty queue the server answers "fake-openai answer from MODEL" / "fake-anthropic answer from MODEL".
A queued `str` is a text reply and a queued `int` an HTTP error with that status.

Streaming: a request with `"stream": true` gets Server-Sent Events in the provider's own format (OpenAI
`chat.completion.chunk` lines and `data: [DONE]`; Anthropic `message_start` ... `message_stop` events), the text
cut into word pieces. `Reply.streamed(text, chunk_delay=0.05)` waits between pieces, `Reply.stream_break(n)`
drops the connection after n pieces. `server.streams` counts streams "started", "finished" and "abandoned" (the
client hung up before the end).

Faults: `Reply.hang()` (never replies), `Reply.trickle(interval)` (a valid reply, one byte per `interval`
seconds), `Reply.reset()` (the connection is reset after the request is read), `Reply.error(429,
retry_after=5)` (also as an HTTP date with `retry_after_date=True`). Waiting handlers notice when the client
hangs up and end, so a test can check that abandoned calls free their connections.
"""

from __future__ import annotations

import json
import math
import re
import select
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from email.utils import formatdate
from typing import Any, Callable, Iterator

OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"
MODERATION_PATH = "/v1/moderations"
MODERATION_CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
                         "illicit/violent", "self-harm", "self-harm/intent", "self-harm/instructions", "sexual",
                         "sexual/minors", "violence", "violence/graphic")


def bracketed_categories(text: str) -> dict[str, float]:
    """The fake moderation model: 0.97 for each category named in brackets in the text ("[hate]"), else 0.01."""
    return {c: 0.97 if f"[{c}]" in text else 0.01 for c in MODERATION_CATEGORIES}

_ANTHROPIC_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                          404: "not_found_error", 429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}


@dataclass
class Reply:
    """One programmed reply. Build it with the class methods."""

    text: str | None = None  # a normal answer; None = the default answer
    status: int = 200
    retry_after: float | None = None  # seconds, sent as `retry-after` and `retry-after-ms`
    delay: float = 0.0  # seconds to wait before replying (on top of `server.delay`)
    garbage: bytes | None = None  # a raw body sent instead of JSON
    content_type: str = "application/json"
    retry_after_date: bool = False  # send `retry-after` as an HTTP date (and no `retry-after-ms`)
    trickle_s: float | None = None  # seconds between the bytes of the body
    reset_connection: bool = False  # reset the connection instead of replying
    chunk_delay: float = 0.0  # streamed replies: seconds between pieces
    break_after: int | None = None  # streamed replies: drop the connection after this many pieces

    @classmethod
    def answer(cls, text: str, *, delay: float = 0.0) -> "Reply":
        return cls(text=text, delay=delay)

    @classmethod
    def error(cls, status: int, *, retry_after: float | None = None, retry_after_date: bool = False,
              delay: float = 0.0) -> "Reply":
        return cls(status=status, retry_after=retry_after, retry_after_date=retry_after_date, delay=delay)

    @classmethod
    def hang(cls) -> "Reply":
        """Read the request, then never answer (until the client hangs up or the server closes)."""
        return cls(delay=math.inf)

    @classmethod
    def trickle(cls, interval: float = 1.0, text: str | None = None) -> "Reply":
        """A normal reply whose body arrives one byte every `interval` seconds: no single read times out."""
        return cls(text=text, trickle_s=interval)

    @classmethod
    def reset(cls) -> "Reply":
        """Reset the connection (TCP RST) once the request is read."""
        return cls(reset_connection=True)

    @classmethod
    def streamed(cls, text: str | None = None, *, chunk_delay: float = 0.0) -> "Reply":
        """A reply that, to a streaming request, arrives piece by piece `chunk_delay` seconds apart."""
        return cls(text=text, chunk_delay=chunk_delay)

    @classmethod
    def stream_break(cls, after: int, text: str | None = None) -> "Reply":
        """A streamed reply whose connection drops after `after` pieces (no end of stream)."""
        return cls(text=text, break_after=after)

    @classmethod
    def slow(cls, seconds: float, text: str | None = None) -> "Reply":
        return cls(text=text, delay=seconds)

    @classmethod
    def junk(cls, body: bytes = b"<html>502 Bad Gateway</html> not json {", *,
             content_type: str = "application/json") -> "Reply":
        return cls(garbage=body, content_type=content_type)


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or the raw text when it is not JSON
    time: float = field(default_factory=time.monotonic)


def _as_reply(item: Reply | str | int) -> Reply:
    if isinstance(item, Reply):
        return item
    if isinstance(item, bool):
        raise TypeError("queue a Reply, a str (answer) or an int (HTTP status)")
    if isinstance(item, int):
        return Reply.error(item)
    if isinstance(item, str):
        return Reply.answer(item)
    raise TypeError(f"cannot queue {item!r}: use a Reply, a str (answer) or an int (HTTP status)")


class LoopbackHTTPServer(ThreadingHTTPServer):
    # the stdlib default backlog (5) drops simultaneous connects, which the client retries a second later
    request_queue_size = 128


class FakeLLMServer:
    """Threaded HTTP server on 127.0.0.1 with a free port, started on construction."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.delay: float = 0.0
        self.on_request: Callable[[RecordedRequest], None] | None = None
        self.moderation: Callable[[str], dict[str, float]] = bracketed_categories  # category scores of one text
        self.open_connections = 0
        self.streams = {"started": 0, "finished": 0, "abandoned": 0}
        self._replies: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd = LoopbackHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.openai_base_url = f"{self.url}/v1"
        self.anthropic_base_url = self.url  # the anthropic SDK adds /v1 itself
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-llm-{self.port}", daemon=True)
        self._thread.start()

    # programming and inspection
    def queue(self, *replies: Reply | str | int) -> "FakeLLMServer":
        """Append replies, served first in first out to requests on either endpoint."""
        with self._lock:
            self._replies.extend(_as_reply(r) for r in replies)
        return self

    def reset(self) -> None:
        with self._lock:
            self._replies.clear()
            self.requests.clear()
            self.streams.update(started=0, finished=0, abandoned=0)
        self.delay = 0.0

    def requests_to(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def close(self) -> None:
        self._closing.set()  # wakes delayed handlers
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "FakeLLMServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # used by the handler
    def _record_and_pop(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            reply = self._replies.popleft() if self._replies else Reply()
        if self.on_request is not None:
            self.on_request(request)
        return reply

    def _count_stream(self, what: str) -> None:
        with self._lock:
            self.streams[what] += 1

    def _connections(self, change: int) -> None:
        with self._lock:
            self.open_connections += change


def _openai_body(reply: Reply, body: dict) -> dict:
    model = body.get("model", "unknown")
    text = reply.text if reply.text is not None else f"fake-openai answer from {model}"
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": text, "refusal": None}}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


def _moderation_body(moderation: Callable[[str], dict[str, float]], body: dict) -> dict:
    texts = body.get("input", "")
    texts = [texts] if isinstance(texts, str) else list(texts)
    results = []
    for text in texts:
        scores = {c: float(moderation(str(text)).get(c, 0.0)) for c in MODERATION_CATEGORIES}
        results.append({"flagged": any(v >= 0.5 for v in scores.values()),
                        "categories": {c: v >= 0.5 for c, v in scores.items()}, "category_scores": scores,
                        "category_applied_input_types": {c: ["text"] for c in scores}})
    return {"id": "modr-fake", "model": body.get("model", "omni-moderation-latest"), "results": results}


def _anthropic_body(reply: Reply, body: dict) -> dict:
    model = body.get("model", "unknown")
    text = reply.text if reply.text is not None else f"fake-anthropic answer from {model}"
    return {
        "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": text}] if text else [],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 11, "output_tokens": 7},
    }


def _sse(data: dict | str, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data)
    return ((f"event: {event}\n" if event else "") + f"data: {payload}\n\n").encode()


def _openai_events(model: str, pieces: list[str], fields: dict):
    """(bytes, is_text_piece) of an OpenAI chat completion stream."""
    def chunk(delta: dict, finish: str | None = None, **extra) -> bytes:
        return _sse({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra})

    yield chunk({"role": "assistant", "content": ""}), False
    for piece in pieces:
        yield chunk({"content": piece}), True
    yield chunk({}, "stop"), False
    if (fields.get("stream_options") or {}).get("include_usage"):
        yield _sse({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                    "model": model, "choices": [],
                    "usage": {"prompt_tokens": 11, "completion_tokens": len(pieces),
                              "total_tokens": 11 + len(pieces)}}), False
    yield _sse("[DONE]"), False


def _anthropic_events(model: str, pieces: list[str], fields: dict):
    """(bytes, is_text_piece) of an Anthropic Messages stream."""
    yield _sse({"type": "message_start", "message": {
        "id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 11, "output_tokens": 1}}},
        "message_start"), False
    yield _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
               "content_block_start"), False
    yield _sse({"type": "ping"}, "ping"), False
    for piece in pieces:
        yield _sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
                   "content_block_delta"), True
    yield _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"), False
    yield _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": len(pieces)}}, "message_delta"), False
    yield _sse({"type": "message_stop"}, "message_stop"), False


def _error_body(path: str, status: int) -> dict:
    message = f"fake error {status}"
    if path == ANTHROPIC_PATH:
        return {"type": "error", "error": {"type": _ANTHROPIC_ERROR_TYPES.get(status, "api_error"), "message": message}}
    return {"error": {"message": message, "type": "fake_error", "param": None, "code": str(status)}}


def _make_handler(server: FakeLLMServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format, *args):  # keep pytest output clean
            pass

        def do_POST(self):
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length).decode("utf-8", "replace") if length else ""
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = raw
            path = self.path.split("?", 1)[0]
            headers = {k.lower(): v for k, v in self.headers.items()}
            if path not in (OPENAI_PATH, ANTHROPIC_PATH, MODERATION_PATH):
                with server._lock:  # unknown paths do not consume replies
                    server.requests.append(RecordedRequest(path, headers, body))
                return self._send(404, json.dumps(_error_body(path, 404)).encode())
            reply = server._record_and_pop(RecordedRequest(path, headers, body))
            if not self._wait(server.delay + reply.delay):
                return
            if reply.reset_connection:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()
                return
            if not _authorised(path, headers):
                return self._send(401, json.dumps(_error_body(path, 401)).encode())
            if reply.garbage is not None:
                return self._send(reply.status, reply.garbage, content_type=reply.content_type)
            if reply.status >= 400:
                extra = {}
                if reply.retry_after is not None and reply.retry_after_date:
                    extra = {"retry-after": formatdate(time.time() + reply.retry_after, usegmt=True)}
                elif reply.retry_after is not None:
                    extra = {"retry-after": f"{reply.retry_after:g}",
                             "retry-after-ms": str(int(reply.retry_after * 1000))}
                return self._send(reply.status, json.dumps(_error_body(path, reply.status)).encode(), extra)
            fields = body if isinstance(body, dict) else {}
            if fields.get("stream") is True:
                return self._stream(path, reply, fields)
            if path == MODERATION_PATH:
                payload = _moderation_body(server.moderation, fields)
            else:
                payload = _anthropic_body(reply, fields) if path == ANTHROPIC_PATH else _openai_body(reply, fields)
            self._send(200, json.dumps(payload).encode(), trickle=reply.trickle_s)

        def setup(self):
            server._connections(+1)
            super().setup()

        def finish(self):
            try:
                super().finish()
            except (OSError, ValueError):  # a reset or abandoned connection
                pass
            finally:
                server._connections(-1)

        def _wait(self, seconds: float) -> bool:
            """Wait `seconds`; False as soon as the client hangs up or the server closes."""
            end = time.monotonic() + seconds
            while not server._closing.is_set():
                left = end - time.monotonic()
                if left <= 0:
                    return True
                readable, _, _ = select.select([self.connection], [], [], min(left, 0.05))
                if readable:
                    try:
                        if not self.connection.recv(1, socket.MSG_PEEK):
                            return False  # EOF: the client closed the connection
                    except OSError:
                        return False
                    time.sleep(0.05)  # unexpected extra bytes: keep waiting without spinning
            return False

        def _stream(self, path: str, reply: Reply, fields: dict) -> None:
            """Server-Sent Events in the provider's format, a piece at a time; counts how the stream ended."""
            anthropic = path == ANTHROPIC_PATH
            model = fields.get("model", "unknown")
            text = reply.text if reply.text is not None else f"fake-{'anthropic' if anthropic else 'openai'} answer " \
                f"from {model}"
            pieces = re.findall(r"\s*\S+", text) or [""]
            server._count_stream("started")
            events = (_anthropic_events if anthropic else _openai_events)(model, pieces, fields)
            try:
                self.protocol_version = "HTTP/1.1"  # chunked: a dropped stream is an incomplete body
                self.close_connection = True
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.send_header("transfer-encoding", "chunked")
                self.send_header("connection", "close")
                self.end_headers()
                sent = 0
                for event, is_piece in events:
                    if is_piece:
                        if reply.break_after is not None and sent >= reply.break_after:
                            server._count_stream("abandoned")
                            return
                        if sent and not self._wait(reply.chunk_delay):
                            server._count_stream("abandoned")
                            return
                        sent += 1
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                server._count_stream("abandoned")
                return
            server._count_stream("finished")

        def _send(self, status: int, data: bytes, extra: dict | None = None, content_type: str = "application/json",
                  trickle: float | None = None):
            try:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(data)))
                for name, value in (extra or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                if trickle is None:
                    self.wfile.write(data)
                    return
                for i in range(len(data)):
                    self.wfile.write(data[i:i + 1])
                    if not self._wait(trickle):
                        return
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                pass

    return Handler


def _authorised(path: str, headers: dict[str, str]) -> bool:
    """Any non-empty key is accepted; OpenAI sends a Bearer token, Anthropic a Bearer token or x-api-key."""
    bearer = headers.get("authorization", "")
    if bearer.lower().startswith("bearer ") and bearer[7:].strip():
        return True
    return path == ANTHROPIC_PATH and bool(headers.get("x-api-key"))


def fake_llm_server() -> Iterator[FakeLLMServer]:
    """Pytest fixture body: `fake_llm_server = pytest.fixture(fake_llm_server)` in conftest.py."""
    server = FakeLLMServer()
    try:
        yield server
    finally:
        server.close()

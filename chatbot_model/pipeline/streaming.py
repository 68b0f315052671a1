"""Streaming answers: the sources, then the text as it is generated, then the full answer row.

`stream_answer(service, question)` (also `LLMService.stream`) runs the ordinary `answer_many` for one question
in a worker thread, so a streamed answer takes exactly the same path as a whole one (guardrails, retrieval,
abstention, routing, fallbacks, tracing); a context variable (`STREAM_SINK`) makes its provider step stream
into a queue that the caller reads as typed events:

    SourcesEvent(sources)  the documents the answer draws on (empty when it abstains or is blocked)
    DeltaEvent(text)       a piece of the answer; the pieces joined are the answer
    ReplaceEvent(text)     the output guardrail stopped the answer: show `text` (the safe reply) instead
    FinalEvent(row)        the answer row of the contract (`contract.AnswerRow`), trace id included

The output guardrail still sees everything before the user does: a remote provider's text is buffered to
sentence boundaries (`SentenceBuffer`) and every sentence is checked before it is passed on; the local answer
is checked whole (it exists at once) and then passed on sentence by sentence. Falling back to the next
provider is possible only until the first piece went out; a failure after that ends the stream with
`StreamFailed`. Closing the event generator early (the client went away) cancels the request's `Deadline`:
the upstream call is cancelled, its connection closed, and the worker thread ends without recording a trace.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import re
import threading
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Iterator

from chatbot_model.contract import Completion, CompletionRequest
from chatbot_model.errors import ChatbotError, ProviderError
from chatbot_model.guardrail.core import SAFE_REPLY
from chatbot_model.providers.deadline import REQUEST_DEADLINE, Deadline

log = logging.getLogger(__name__)

MAX_PENDING_CHARS = 400  # text without a sentence end is passed on (checked) at a space after this many
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s+|\n+")


@dataclass(frozen=True)
class StreamEvent:
    kind: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        """`{"event": kind, ...fields}`: what the pyfunc's `predict_stream` yields and the server sends."""
        return {"event": self.kind, **asdict(self)}


@dataclass(frozen=True)
class SourcesEvent(StreamEvent):
    kind = "sources"
    sources: list


@dataclass(frozen=True)
class DeltaEvent(StreamEvent):
    kind = "delta"
    text: str


@dataclass(frozen=True)
class ReplaceEvent(StreamEvent):
    kind = "replace"
    text: str
    blocked_by: str = "output"


@dataclass(frozen=True)
class FinalEvent(StreamEvent):
    kind = "final"
    row: dict
    result: Any = field(default=None, compare=False, repr=False)  # the ChatResult (in-process readers only)

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.kind, **self.row}


EVENTS: dict[str, type[StreamEvent]] = {e.kind: e for e in (SourcesEvent, DeltaEvent, ReplaceEvent, FinalEvent)}


class StreamFailed(ChatbotError):
    """The provider failed after part of the answer went out: the answer is incomplete (no fallback then)."""

    code = "stream_failed"


class StreamClosed(Exception):
    """The reader stopped reading (the client went away): the worker stops answering. Not a ChatbotError, so
    nothing on the way up treats it as a provider failure to fall back from."""


class SentenceBuffer:
    """Cuts streamed text into sentences: `feed(piece)` returns the sentences completed so far (each with the
    whitespace after it), `flush()` the rest. Joined, they are exactly the text fed."""

    def __init__(self, max_pending: int = MAX_PENDING_CHARS):
        self.pending = ""
        self.max_pending = max_pending

    def feed(self, piece: str) -> list[str]:
        self.pending += piece
        out, start = [], 0
        for match in _SENTENCE_END.finditer(self.pending):
            if match.end() == len(self.pending):
                break  # the whitespace may go on: wait for the next piece
            out.append(self.pending[start:match.end()])
            start = match.end()
        self.pending = self.pending[start:]
        while len(self.pending) > self.max_pending:  # no sentence end in sight: cut at the last space
            cut = self.pending.rfind(" ", 0, self.max_pending) + 1 or self.max_pending
            out.append(self.pending[:cut])
            self.pending = self.pending[cut:]
        return out

    def flush(self) -> list[str]:
        rest, self.pending = self.pending, ""
        return [rest] if rest else []


def pieces_of(text: str) -> list[str]:
    """`text` cut into sentences (joined, they are `text`)."""
    buffer = SentenceBuffer()
    return buffer.feed(text) + buffer.flush()


STREAM_SINK: ContextVar["Sink | None"] = ContextVar("chatbot_stream_sink", default=None)


class Sink:
    """Where the provider step of a streamed request puts its events (read by `stream_answer`)."""

    def __init__(self) -> None:
        self.events: queue.Queue = queue.Queue()
        self.closed = threading.Event()
        self.sources_sent = False
        self.text_sent = False

    def put(self, event: StreamEvent) -> None:
        if self.closed.is_set():
            raise StreamClosed("the reader went away")
        if isinstance(event, SourcesEvent):
            self.sources_sent = True
        elif isinstance(event, (DeltaEvent, ReplaceEvent)):
            self.text_sent = True
        self.events.put(event)

    def complete(self, service, provider, request: CompletionRequest, deadline: Deadline | None) -> Completion:
        """The provider's answer, passed on checked sentence by sentence; `completion.check` holds the output
        guardrail's verdict, so `answer_many` does not check it again."""
        if not self.sources_sent:
            self.put(SourcesEvent([s.to_dict() for s in request.sources]))
        try:
            if provider.can_stream:
                return self._relay(service, provider, request, deadline)
            return self._relay_whole(service, provider.complete(request, deadline=deadline))
        except ProviderError as exc:
            if not self.text_sent:
                raise  # nothing went out yet: the next provider may answer
            raise StreamFailed(f"{provider.name} failed in the middle of the answer "
                               f"({getattr(exc, 'reason', None) or 'failed'}); the answer is incomplete, "
                               "ask again") from exc

    def _relay_whole(self, service, completion: Completion) -> Completion:
        completion.check = service._check_answers({0: completion})[0]
        if not completion.check.safe:
            self._replace()
        else:
            for piece in pieces_of(completion.text):
                self.put(DeltaEvent(piece))
        return completion

    def _relay(self, service, provider, request: CompletionRequest, deadline: Deadline | None) -> Completion:
        buffer, checks, passed = SentenceBuffer(), [], []
        stream = provider.stream(request, deadline)
        try:
            for item in stream:
                done = isinstance(item, Completion)
                for sentence in buffer.flush() if done else buffer.feed(item):
                    if not self._pass(service, sentence.rstrip() if done else sentence, checks, passed):
                        self._replace()
                        return Completion(text="".join(passed) + sentence, provider=provider.name,
                                          model=request.model, check=service.guardrail.combine(checks))
                if done:
                    item.check = service.guardrail.combine(checks) if checks else None
                    return item
            raise ProviderError(f"{provider.name}: the stream ended without its completion")
        finally:
            stream.close()  # stopped early (unsafe sentence, reader gone): cancels the upstream call

    def _pass(self, service, sentence: str, checks: list, passed: list) -> bool:
        """Check one sentence; pass it on when safe. False when unsafe (nothing of it went out)."""
        text = sentence if passed else sentence.lstrip()
        if not text.strip():
            return True
        check = service.guardrail.check(text.strip())
        checks.append(check)
        if not check.safe:
            return False
        passed.append(text)
        self.put(DeltaEvent(text))
        return True

    def _replace(self) -> None:
        self.put(ReplaceEvent(SAFE_REPLY))


_DONE = object()


def stream_answer(service, question: str, history: list[dict] | None = None,
                  deadline: Deadline | None = None) -> Iterator[StreamEvent]:
    """The events of one answer (see the module docstring). Bad input raises InvalidInput at the first `next()`,
    before any event; a failure after the first event raises from the generator (StreamFailed, ProviderError).
    Closing the generator early cancels `deadline` (default: the server's `REQUEST_DEADLINE`, else a fresh
    CHATBOT_REQUEST_BUDGET_S) and with it the upstream call."""

    deadline = deadline or REQUEST_DEADLINE.get() or Deadline.start(
        service.settings.request_budget_s, service.settings.local_reserve_s, service.clock)
    sink, outcome = Sink(), {}

    def work() -> None:
        STREAM_SINK.set(sink)  # this thread's context only
        try:
            outcome["result"] = service.answer_many([question], deadline, histories=[history])[0]
        except StreamClosed:
            log.info("stream abandoned by the reader: answer not finished, no trace recorded")
        except BaseException as exc:  # noqa: BLE001 - re-raised in the reader
            outcome["error"] = exc
        finally:
            sink.events.put(_DONE)

    # the worker sees this context (the server's request deadline, a caller's hint)
    worker = threading.Thread(target=contextvars.copy_context().run, args=(work,), name="chat-stream", daemon=True)
    worker.start()
    finished = False
    try:
        while (event := sink.events.get()) is not _DONE:
            yield event
        if "error" in outcome:
            raise outcome["error"]
        result = outcome["result"]
        if not sink.sources_sent:  # no provider was asked (the question was blocked): the answer comes whole
            yield SourcesEvent(list(result.sources))
        if not sink.text_sent:
            yield DeltaEvent(result.answer)
        finished = True
        yield FinalEvent(result.to_row(), result)
    finally:
        if not finished and worker.is_alive():
            sink.closed.set()
            deadline.cancel()
